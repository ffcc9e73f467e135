"""unitune on the benchmark workload: the real CLI (`unitune sft|dpo|grpo ...`) in this process,
with the loop's `train_step` timed. Run with unitune's own .venv: python bench/peers/unitune_run.py SPEC."""

import os
import sys
import time

from unitune.malloc import preload

preload()  # as the `unitune` command does first: re-execute on mimalloc (UNITUNE_MALLOC=system: glibc's)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Recorder, load_spec, versions  # noqa: E402

VERBS = {"sft_lora": "sft", "sft_full": "sft", "dpo_lora": "dpo", "grpo_lora": "grpo"}
DATA = {"sft": "sft.jsonl", "dpo": "dpo.jsonl", "grpo": "grpo.jsonl"}


def flags(spec: dict) -> tuple[str, list[str]]:
    verb = VERBS[spec["task"]]
    args = [verb, "--model.name", spec["model"], "--data.train", os.path.join(spec["data"], DATA[verb]),
            "--data.max_length", str(spec["max_length"]), "--train.output_dir", spec["out_dir"],
            "--train.max_steps", str(spec["steps"]), "--train.batch_size", str(spec["batch_size"]),
            "--train.lr", str(spec["lr"]), "--train.seed", str(spec["seed"]), "--train.progress", "false",
            "--train.mixed_precision", "bf16" if spec["precision"] == "bf16" else "no",
            "--lora.enabled", "true" if spec["lora"] else "false", "--model.dtype", spec.get("model_dtype", "float32")]
    if spec["lora"]:
        args += ["--lora.r", str(spec["lora"]["r"]), "--lora.alpha", str(spec["lora"]["alpha"])]
    if verb == "dpo":
        args += ["--dpo.beta", str(spec["beta"])]
    if verb == "grpo":
        g = spec["grpo"]
        here = os.path.dirname(os.path.abspath(__file__))
        args += ["--grpo.num_generations", str(g["num_generations"]),
                 "--grpo.max_completion_length", str(g["max_completion_length"]),
                 "--grpo.temperature", str(g["temperature"]), "--grpo.beta", str(g["beta"]),
                 "--grpo.reward", os.path.join(here, "common.py") + ":grpo_reward",
                 "--grpo.log_completions_every", "0"]
    for key, value in spec.get("options", {}).items():  # a variant's own flags, e.g. data.packing
        if not key.startswith("_"):  # _name: a patch applied below, not a flag
            args += [f"--{key}", str(value)]
    return verb, args


def main() -> int:
    spec = load_spec()
    rec = Recorder(spec)
    from unitune.train import loop

    original = loop.Trainer.train_step

    def train_step(self):
        rec.step_started()
        row = original(self)
        if row is not None:
            rec.step_ended(tokens=row.get("tokens", 0), loss=row.get("loss"))
        return row

    loop.Trainer.train_step = train_step
    if spec.get("options", {}).get("_fused_adamw"):  # a proposed change to unitune/train/optim.py, measured first
        import torch

        build = loop.build_optimizer

        def fused_adamw(model, cfg):
            groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in build(model, cfg).param_groups]
            return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), fused=True)

        loop.build_optimizer = fused_adamw
    if spec["task"].startswith("grpo"):
        from unitune.rl import rollout

        generate = rollout.HFRollout.generate

        def timed(self, *args, **kwargs):
            t = time.perf_counter()
            out = generate(self, *args, **kwargs)
            rec.rollout(time.perf_counter() - t, [len(c.token_ids) for c in out])
            return out

        rollout.HFRollout.generate = timed
    from unitune.cli import main as cli

    _, args = flags(spec)
    rec.extra.update(versions("torch", "transformers", "peft", "accelerate"))
    try:
        return cli(args) or 0
    finally:
        rec.write()


if __name__ == "__main__":
    sys.exit(main())
