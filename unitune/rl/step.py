"""The generation phase of an RL optimizer step: sample, score, refill, batch, advantage.

For the prompts of one optimizer step (all of its micro-batches):
  1. generate G completions per prompt with the current weights (rollout.py)
  2. score them: r_k per reward function, R = nansum_k w_k r_k (rewards.py)
  3. DAPO dynamic sampling: drop groups whose R are all equal, generate for more prompts (drawn
     from the training rows by a seeded RNG) until the step has as many groups as it has prompts,
     at most `max_resample` extra rounds; if still short, dropped groups fill the rest (A = 0)
  4. cut the groups into the step's micro-batches (same number of prompts each as the loop gave),
     with train.max_tokens_per_forward each cut again into parts within that many padded tokens;
     per micro-batch (part), no-grad log-probs of the sampling policy (when num_iterations > 1, or when
     KL goes into the reward) and of the reference (beta > 0)
  5. advantages over the whole step (advantages.py); RLOO / REINFORCE++ fold the k1 KL into
     the reward first
  6. metrics (reward, reward_std, rewards/<f>/mean|std, frac_reward_zero_std, completion
     lengths, rollout tokens/s) and, every N steps, a completions table (completions.jsonl)

With num_iterations mu > 1 the batches (and their frozen old log-probs) serve mu optimizer
steps; the loop repeats the step's data for them (`steps_per_batch`). Groups never span ranks,
so group statistics are local; batch statistics and metrics are summed over ranks.
"""

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from unitune.data.collate import takes_4d_mask
from unitune.rl import advantages as adv
from unitune.rl.batch import ROW_TOKENS, build_batch, completion_logps, pad_rows, split_by_tokens
from unitune.rl.rewards import combine, score
from unitune.rl.rollout import SamplingParams
from unitune.train.loop import tokens_per_forward


@dataclass
class Samples:
    """G completions per prompt, grouped: rows[i] is the prompt row of completion i."""
    rows: list[dict]
    completions: list
    per_function: torch.Tensor  # [N, K]
    rewards: torch.Tensor  # [N]

    def groups(self, g: int) -> int:
        return len(self.rows) // g

    def take(self, groups: list[int], g: int) -> "Samples":
        idx = [k * g + j for k in groups for j in range(g)]
        return Samples([self.rows[i] for i in idx], [self.completions[i] for i in idx],
                       self.per_function[idx], self.rewards[idx])

    def __add__(self, other: "Samples") -> "Samples":
        return Samples(self.rows + other.rows, self.completions + other.completions,
                       torch.cat([self.per_function, other.per_function]), torch.cat([self.rewards, other.rewards]))


class GenerationPhase:
    def __init__(self, *, cfg, settings, rewards, rollout, reference, accelerator, train_rows, pad_id):
        self.cfg, self.s, self.rewards, self.rollout = cfg, settings, rewards, rollout
        self.reference, self.acc, self.train_rows, self.pad_id = reference, accelerator, train_rows, pad_id
        self.shared_rows = cfg.grpo.shared_prefix and takes_4d_mask(cfg.model.attn_implementation)  # one row per group
        t = cfg.train  # auto is 0 for grpo, but an objective built without the session still sees "auto"
        self.budget = tokens_per_forward(t.max_tokens_per_forward, verb="grpo", device_type=accelerator.device.type,
                                         lora=cfg.lora.enabled, checkpointing=t.gradient_checkpointing,
                                         in_backward=t.optimizer_in_backward, autocast=t.mixed_precision != "no")
        self.row_tokens = min(ROW_TOKENS, self.budget or ROW_TOKENS)  # a row fits a pass's budget
        g = cfg.grpo
        self.g, self.temperature = g.num_generations, g.temperature
        self.params = SamplingParams(max_new_tokens=g.max_completion_length, temperature=g.temperature,
                                     top_p=g.top_p, top_k=g.top_k, stop=list(g.stop))
        self.buffer: tuple[int, list] | None = None
        self.table = Path(cfg.train.output_dir) / "completions.jsonl"

    # ---- the hook ------------------------------------------------------------------------------
    def __call__(self, model, micro_rows: list[list[dict]], step: int) -> tuple[list[dict], dict]:
        mu = self.cfg.grpo.num_iterations
        if self.buffer is not None and self.buffer[0] == step // mu:
            return self.buffer[1], {}
        prompts = [r for rows in micro_rows for r in rows]
        kept, generated, stats = self._sample(prompts, step)
        sizes = [len(rows) * self.g for rows in micro_rows]
        batches, extra = self._batches(model, kept, self._parts(kept, sizes, step))
        metrics = {**self._metrics(generated, stats), **extra}
        if self.acc.is_main_process and self.cfg.grpo.log_completions_every and (
                step % self.cfg.grpo.log_completions_every == 0):
            self._write_table(step + 1, kept, batches)
        self.buffer = (step // mu, batches) if mu > 1 else None
        return batches, metrics

    # ---- 1-3: sample, score, refill ------------------------------------------------------------
    def generate(self, rows: list[dict], seed: int, params: SamplingParams | None = None, n: int | None = None):
        n = n or self.g
        started = time.perf_counter()
        completions = self.rollout.generate([r["prompt_ids"] for r in rows], n, params or self.params, seed=seed,
                                            shared_prefix=self.cfg.grpo.shared_prefix)
        seconds = time.perf_counter() - started
        expanded = [r for r in rows for _ in range(n)]
        keys = sorted({k for r in rows for k in r["columns"]})
        columns = {k: [r["columns"].get(k) for r in expanded] for k in keys}
        per_function = score(self.rewards, [c.text for c in completions], [r["prompt"] for r in expanded],
                             [c.token_ids for c in completions], columns)
        return Samples(expanded, completions, per_function, combine(per_function, self.rewards)), seconds

    def _seed(self, step: int, round_: int) -> int:
        return ((self.cfg.train.seed * 1_000_003 + step) * 101 + round_) * 64 + self.acc.process_index

    def _sample(self, prompts: list[dict], step: int) -> tuple[Samples, Samples, dict]:
        first, seconds = self.generate(prompts, self._seed(step, 0))
        generated, stats = first, {"seconds": seconds, "rounds": 0}
        if not self.s.dynamic_sampling:
            return first, generated, stats
        rng = random.Random(self._seed(step, 0))
        kept = first.take(self._varied(first), self.g)
        while kept.groups(self.g) < len(prompts) and stats["rounds"] < self.cfg.grpo.max_resample:
            stats["rounds"] += 1
            more, seconds = self.generate([rng.choice(self.train_rows) for _ in prompts],
                                          self._seed(step, stats["rounds"]))
            generated, stats["seconds"] = generated + more, stats["seconds"] + seconds
            kept = kept + more.take(self._varied(more), self.g)
        stats["kept_groups"] = min(kept.groups(self.g), len(prompts))
        if kept.groups(self.g) < len(prompts):  # still short: equal-reward groups fill the rest (advantage 0)
            varied = set(self._varied(generated))
            flat = [k for k in range(generated.groups(self.g)) if k not in varied]
            kept = kept + generated.take(flat[:len(prompts) - kept.groups(self.g)], self.g)
        return kept.take(list(range(len(prompts))), self.g), generated, stats

    def _varied(self, samples: Samples) -> list[int]:
        """Groups whose rewards are not all equal."""
        _, std = adv.group_stats(samples.rewards, self.g)
        return [k for k in range(samples.groups(self.g)) if std[k * self.g] > 1e-8]

    # ---- 4-5: micro-batches, reference, advantages ---------------------------------------------
    def _parts(self, samples: Samples, sizes: list[int], step: int) -> list[range]:
        """Each micro-batch's completions; with train.max_tokens_per_forward, cut into parts of at most
        that many padded tokens (the loss is a sum over completions, so the gradient is the same)."""
        budget, parts, start = self.budget, [], 0
        for size in sizes:
            if budget:
                ids = range(start, start + size)
                cut = split_by_tokens([samples.rows[i]["prompt_ids"] for i in ids],
                                      [samples.completions[i].token_ids for i in ids], budget,
                                      shared=self.shared_rows, row_tokens=self.row_tokens)
                parts += [range(start + r.start, start + r.stop) for r in cut]
            else:
                parts.append(range(start, start + size))
            start += size
        if budget and step == 0:
            self.acc.print(f"unitune: train.max_tokens_per_forward {budget}: step 1 trains its {len(sizes)} "
                           f"micro-batch(es) as {len(parts)} forward/backward passes")
        return parts

    def _batches(self, model, samples: Samples, parts: list[range]) -> tuple[list[dict], dict]:
        s, device, mu = self.s, self.acc.device, self.cfg.grpo.num_iterations
        need_old = mu > 1 or (s.kl_in_reward and s.beta > 0)
        need_ref = s.beta > 0
        batches, olds, refs = [], [], []
        for part in parts:
            batch = build_batch([samples.rows[i]["prompt_ids"] for i in part],
                                [samples.completions[i].token_ids for i in part],
                                [samples.completions[i].finish_reason == "length" for i in part],
                                pad_id=self.pad_id, mask_truncated=s.mask_truncated_completions,
                                shared=self.shared_rows, row_tokens=self.row_tokens)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.no_grad(), self.acc.autocast():
                if need_old:
                    olds.append(completion_logps(model, batch, self.temperature).float())
                if need_ref:
                    refs.append(self.reference(model, batch).float())
            batches.append(batch)
        width = max(b["completion_mask"].shape[1] for b in batches)
        mask = pad_rows([b["completion_mask"] for b in batches], width).double()
        rewards, token_kl, metrics = samples.rewards.to(device), None, {}
        if s.kl_in_reward and s.beta > 0:
            k1 = (pad_rows(olds, width).double() - pad_rows(refs, width).double()) * mask
            metrics["kl"] = self._global_mean(k1.sum(), mask.sum())
            if s.advantage.startswith("reinforce_pp"):
                token_kl = k1
            else:
                rewards = rewards - s.beta * k1.sum(-1)
        a = adv.compute(s.advantage, rewards, mask, group=self.g, scale_rewards=s.scale_rewards,
                        token_kl=token_kl, beta=s.beta, allsum=self._allsum)
        start = 0
        for k, batch in enumerate(batches):
            n, t = batch["completion_mask"].shape
            batch["advantages"] = a[start:start + n, :t].float()
            start += n
            if mu > 1:
                batch["old_logps"] = olds[k]
            if need_ref and not s.kl_in_reward:
                batch["ref_logps"] = refs[k]
        return batches, metrics

    # ---- 6: metrics and the completions table --------------------------------------------------
    def _allsum(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.acc.num_processes == 1 else self.acc.reduce(t, reduction="sum")

    def _global_mean(self, total, count) -> float:
        t = self._allsum(torch.tensor([float(total), float(count)], dtype=torch.float64, device=self.acc.device))
        return float(t[0] / t[1]) if t[1] > 0 else 0.0

    def _metrics(self, samples: Samples, stats: dict) -> dict:
        r, per_fn = samples.rewards, samples.per_function
        _, std = adv.group_stats(r, self.g)
        lengths = torch.tensor([len(c.token_ids) for c in samples.completions], dtype=torch.float64)
        truncated = torch.tensor([c.finish_reason == "length" for c in samples.completions], dtype=torch.float64)
        valid = ~torch.isnan(r)
        m = {"reward": self._global_mean(r[valid].sum(), valid.sum()),
             "reward_std": self._global_mean(std.sum(), len(std)),
             "frac_reward_zero_std": self._global_mean((std <= 1e-8).sum(), len(std))}
        for k, reward in enumerate(self.rewards):
            col = per_fn[:, k]
            ok = ~torch.isnan(col)
            mean = self._global_mean(col[ok].sum(), ok.sum())
            m[f"rewards/{reward.name}/mean"] = mean
            m[f"rewards/{reward.name}/std"] = self._global_mean(((col[ok] - mean) ** 2).sum(), ok.sum()) ** 0.5
        m["completions/mean_length"] = self._global_mean(lengths.sum(), len(lengths))
        m["completions/max_length"] = float(self._allmax(lengths.max()))
        m["completions/clipped_ratio"] = self._global_mean(truncated.sum(), len(truncated))
        m["rollout_tokens_per_s"] = self._global_mean(lengths.sum(), stats["seconds"])  # total over total time
        if self.s.dynamic_sampling:
            m["dynamic_sampling/rounds"] = float(stats["rounds"])
            m["dynamic_sampling/kept_groups"] = float(stats["kept_groups"])
        return m

    def _allmax(self, value) -> float:
        if self.acc.num_processes == 1:
            return float(value)
        return float(self.acc.reduce(torch.tensor([float(value)], device=self.acc.device), reduction="max")[0])

    def _write_table(self, step: int, samples: Samples, batches: list[dict]) -> None:
        advantages = torch.cat([b["advantages"][:, 0] for b in batches]).tolist()
        with self.table.open("a") as f:
            for i in range(min(self.cfg.grpo.log_completions_count, len(samples.rows))):
                c = samples.completions[i]
                row = {"step": step, "prompt": samples.rows[i]["prompt"], "completion": c.text,
                       "finish_reason": c.finish_reason, "tokens": len(c.token_ids),
                       "reward": _num(samples.rewards[i]), "advantage": round(advantages[i], 4),
                       **{f"rewards/{r.name}": _num(samples.per_function[i, k]) for k, r in enumerate(self.rewards)}}
                f.write(json.dumps(row) + "\n")


def _num(x) -> float | None:
    x = float(x)
    return None if x != x else round(x, 4)
