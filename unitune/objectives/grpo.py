"""The GRPO family (GRPO, DAPO, Dr. GRPO, GSPO, RLOO, REINFORCE++) as one objective on the one loop.

    L = agg_{i,t} [ -min(rho_t A_i,t, clip(rho_t, 1-eps, 1+eps_high) A_i,t) + beta KL_t ]

with rho the importance ratio (per token, or per sequence for GSPO/RLOO), A from a registered
advantage estimator, KL the k3 estimate against the reference and agg a registered aggregation
(loss_type). The formulas and their conventions: unitune/rl/{advantages,losses}.py and
OBJECTIVES.md §5; the variants are presets (unitune/rl/presets.py).

A row is a prompt. At the start of each optimizer step the loop calls `step_batches` (the
generation phase, unitune/rl/step.py): it samples G completions per prompt of the step with the
current weights, scores them and returns the step's micro-batches with advantages (and frozen
old / reference log-probs where needed); `loss` then computes the policy loss on each.
`train.batch_size` counts prompts, so a micro-batch holds batch_size x G completions.
Evaluation generates one greedy completion per held-out prompt and reports the mean of every
reward function (eval_reward, eval_rewards/<f>/mean: with `accuracy`, the accuracy).
"""

import sys

from unitune.errors import UnituneError
from unitune.models.load import slow_dtype_warning, slow_on_this_cpu
from unitune.rl.batch import completion_logps
from unitune.rl.losses import AGGREGATIONS, aggregate, policy_loss
from unitune.rl.presets import resolve
from unitune.rl.rewards import build_rewards, combine
from unitune.rl.rollout import DTYPES, SamplingParams, make_rollout


class GRPOObjective:
    name = "grpo"

    def __init__(self, cfg, tokenizer):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.s = resolve(cfg.grpo)
        self.steps_per_batch = cfg.grpo.num_iterations  # the loop reuses one step's data this many steps
        self.rewards = build_rewards(cfg.grpo.reward, cfg.grpo.reward_weights,
                                     {"max_completion_length": cfg.grpo.max_completion_length})
        self.loss_beta = 0.0 if self.s.kl_in_reward else self.s.beta
        # every aggregation but bnpo (one mean per micro-batch) is a sum over completions, so the generation
        # phase may train a micro-batch as parts (train.max_tokens_per_forward)
        self.rows_independent = self.s.loss_type != "bnpo"
        self.phase = None

    # ---- rows --------------------------------------------------------------------------------
    def rows(self, examples: list[dict], split: str) -> tuple[list, list[str]]:
        from unitune.templates import render_prompt

        limit, system = self.cfg.data.max_length, self.cfg.template.system
        rows, dropped = [], 0
        for ex in examples:
            messages = ex["prompt"]
            if system and messages[0]["role"] != "system":
                messages = [{"role": "system", "content": system}] + messages
            ids = render_prompt(self.tokenizer, messages, chat_template=self.tokenizer.chat_template)
            if len(ids) > limit:
                dropped += 1
                continue
            rows.append({"prompt_ids": ids, "prompt": messages,
                         "columns": {k: v for k, v in ex.items() if k != "prompt"}})
        notes = [f"{split}: {len(rows)} prompts" + (f", {dropped} dropped: longer than data.max_length {limit} "
                                                     "tokens" if dropped else "")]
        if split == "train":
            notes.append(f"grpo: algo {self.s.algo}: {self.s.describe()}; G={self.cfg.grpo.num_generations}, "
                         f"rewards {', '.join(f'{r.name} (x{r.weight:g})' for r in self.rewards)}")
        return rows, notes

    @staticmethod
    def length(row) -> int:
        return len(row["prompt_ids"])

    # ---- before the loop ---------------------------------------------------------------------
    def prepare(self, model, accelerator, rows, val_rows) -> None:
        from unitune.objectives.reference import Reference
        from unitune.rl.step import GenerationPhase

        reference = None
        if self.s.beta > 0:
            mode = self.cfg.ref.mode
            lora = self.cfg.lora.enabled
            mode = ("adapter" if lora else "copy") if mode == "auto" else mode
            if mode in ("none", "precompute") or (mode == "adapter" and not lora):
                raise UnituneError(f"grpo.beta {self.s.beta} needs a reference model: ref.mode adapter (with LoRA) or "
                                   f"copy, not {self.cfg.ref.mode}" + (" without LoRA" if mode == "adapter" else "")
                                   + "; or set --grpo.beta 0")
            reference = Reference(mode, lambda net, batch: completion_logps(net, batch, self.cfg.grpo.temperature))
            reference.prepare(model, accelerator, {}, None, 0)
        dtype = self.cfg.grpo.rollout_dtype
        if dtype == "auto":
            bf16 = self.cfg.train.mixed_precision == "bf16" and not (self.cfg.lora.enabled and self.cfg.lora.use_dora)
            dtype = "bfloat16" if bf16 else None
        elif accelerator.device.type == "cpu" and slow_on_this_cpu(dtype) and accelerator.is_main_process:
            # (auto follows train.mixed_precision, which the session warns about)
            print(slow_dtype_warning(f"grpo.rollout_dtype {dtype}", dtype, "--grpo.rollout_dtype float32"),
                  file=sys.stderr)
        rollout = make_rollout(self.cfg.grpo.engine, model, self.tokenizer, chat_template=self.tokenizer.chat_template,
                               dtype=DTYPES[dtype] if dtype else None, prepack=self.cfg.grpo.rollout_prepack)
        self.phase = GenerationPhase(cfg=self.cfg, settings=self.s, rewards=self.rewards, rollout=rollout,
                                     reference=reference, accelerator=accelerator, train_rows=rows,
                                     pad_id=rollout.engine.pad_id)

    # ---- the step ----------------------------------------------------------------------------
    def step_batches(self, model, micro_rows, step):
        return self.phase(model, micro_rows, step)

    def count(self, batch) -> int:
        return AGGREGATIONS[self.s.loss_type].units(batch["completion_mask"])

    def loss(self, model, batch):
        g = self.cfg.grpo
        logps = completion_logps(model, batch, g.temperature)
        per_token, metrics = policy_loss(
            logps, batch["completion_mask"], batch["advantages"], old_logps=batch.get("old_logps"),
            ref_logps=batch.get("ref_logps"), beta=self.loss_beta, epsilon=self.s.epsilon,
            epsilon_high=self.s.epsilon_high, level=self.s.importance_sampling_level,
            bias_correction_kl=g.bias_correction_kl, delta=g.delta)
        total, _ = aggregate(self.s.loss_type, per_token, batch["completion_mask"], g.max_completion_length)
        return total, metrics

    def collate(self, rows):
        raise NotImplementedError("grpo batches come from step_batches (generation), not from collating rows")

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self, model, rows) -> dict:
        """Greedy completions for held-out prompts: {metric: (sum, count)} (the same keys on every rank)."""
        import torch

        if not rows:
            return summarize(torch.zeros(0, len(self.rewards)), torch.zeros(0), self.rewards, [])
        params = SamplingParams(max_new_tokens=self.cfg.grpo.max_completion_length, temperature=0.0,
                                stop=list(self.cfg.grpo.stop))
        samples, _ = self.phase.generate(rows, seed=0, params=params, n=1)
        return summarize(samples.per_function, combine(samples.per_function, self.rewards), self.rewards,
                         [len(c.token_ids) for c in samples.completions])

    def plot(self, rows: list[dict], out) -> None:
        plot_rewards(rows, out / "reward.png", f"unitune grpo ({self.s.algo}): {self.cfg.model.name}")


def plot_rewards(rows: list[dict], path, title: str) -> None:
    """Mean reward per step (and each function's), with the held-out evaluation where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = sorted({k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    for key in ["reward"] + (names if len(names) > 1 else []):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if not points:
            continue
        steps, values = zip(*points)
        k = max(1, min(5, len(values) // 5))  # a moving average over k steps, for noisy curves
        windows = [values[max(0, i - k + 1):i + 1] for i in range(len(values))]
        smooth = [sum(w) / len(w) for w in windows]
        line, = ax.plot(steps, smooth, label=key + (f" ({k}-step mean)" if k > 1 else ""))
        if k > 1:
            ax.plot(steps, values, alpha=0.25, color=line.get_color())
    evals = [(r["step"], r["eval_reward"]) for r in rows if "eval_reward" in r]
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval_reward (greedy, held out)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(per_function, rewards, reward_fns, lengths) -> dict:
    import torch

    out = {"reward": (float(torch.nansum(rewards)), int((~torch.isnan(rewards)).sum()))}
    for k, r in enumerate(reward_fns):
        col = per_function[:, k]
        out[f"rewards/{r.name}/mean"] = (float(torch.nansum(col)), int((~torch.isnan(col)).sum()))
    out["completions/mean_length"] = (float(sum(lengths)), len(lengths))
    return out
