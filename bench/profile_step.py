"""Where a unitune training step spends its time: torch.profiler over a few steps of the benchmark workload.

    .venv/bin/python bench/profile_step.py sft_lora            # fp32, unpadded batches of 4
    .venv/bin/python bench/profile_step.py sft_full --precision bf16 --packing
    .venv/bin/python bench/profile_step.py sft_lora --precision bf16 --train.gradient_checkpointing true

Other arguments are passed to unitune's CLI as they are.

The loop's phases are labelled (collate, forward+loss, backward, clip, optimizer) by wrapping them
from outside; the table shows those ranges and the top operators by self time. Steps before
`--skip` are not profiled (first-call costs). Run bench/run.py first (it writes the workload).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("task", choices=["sft_lora", "sft_full", "dpo_lora"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--packing", action="store_true")
    p.add_argument("--skip", type=int, default=2, help="steps run before profiling starts")
    p.add_argument("--steps", type=int, default=3, help="steps profiled")
    p.add_argument("--data", default=str(HERE / ".work" / "data"))
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--shape-rows", type=int, default=15, help="rows of the table by input shape")
    p.add_argument("--trace", default="", help="write a Chrome trace here")
    args, extra = p.parse_known_args()

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from unitune.models.registry import ensure_builtin
    from unitune.train import loop
    from unitune_run import flags

    spec = {"task": args.task, "precision": args.precision, "model": str(ensure_builtin("smollm2-135m-instruct")),
            "data": args.data, "out_dir": "/tmp/unitune-profile", "steps": args.skip + args.steps,
            "batch_size": 2 if args.task.startswith("dpo") else 4, "lr": 2e-4, "seed": 42, "max_length": 512,
            "lora": None if args.task == "sft_full" else {"r": 8, "alpha": 16}, "beta": 0.1,
            "options": {"data.packing": "true"} if args.packing else {}}
    _, cli_args = flags(spec)
    cli_args += ["--train.tensorboard", "false", "--train.plot", "false", *extra]

    state = {"step": 0, "prof": None, "times": []}
    original_step = loop.Trainer.train_step

    def labelled(name, fn):
        def wrapper(*a, **k):
            with record_function(name):
                return fn(*a, **k)
        return wrapper

    def train_step(self):
        if not getattr(self, "_labelled", False):  # label the phases once, on this trainer's objects
            self._labelled = True
            self._make_batches = labelled("collate", self._make_batches)
            self.objective.loss = labelled("forward+loss", self.objective.loss)
            self.acc.backward = labelled("backward", self.acc.backward)
            self._clip = labelled("clip", self._clip)
            self.optimizer.step = labelled("optimizer", self.optimizer.step)
            self.scheduler.step = labelled("scheduler", self.scheduler.step)
        state["step"] += 1
        if state["step"] == args.skip + 1:
            state["prof"] = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
            state["prof"].__enter__()
        t = time.perf_counter()
        with record_function("train_step"):
            row = original_step(self)
        if state["prof"] is not None:
            state["times"].append((time.perf_counter() - t, row.get("tokens", 0) if row else 0))
        if state["step"] == args.skip + args.steps and state["prof"] is not None:
            state["prof"].__exit__(None, None, None)
            report(state["prof"], state["times"], args)
            state["prof"] = None
        return row

    loop.Trainer.train_step = train_step
    from unitune.cli import main as cli

    return cli(cli_args) or 0


def report(prof, times, args) -> None:
    seconds = sum(t for t, _ in times)
    tokens = sum(n for _, n in times)
    print(f"\nprofile: {args.task} {args.precision}{' packed' if args.packing else ''}: {len(times)} steps, "
          f"{seconds:.1f}s, {tokens} tokens, {tokens / seconds:.0f} tokens/s (profiler on)")
    events = prof.key_averages()
    total = sum(e.cpu_time_total for e in events if e.key == "train_step") or 1
    print("\nphases (share of train_step):")
    for name in ("collate", "forward+loss", "backward", "clip", "optimizer", "scheduler"):
        for e in events:
            if e.key == name:
                print(f"  {name:14s} {e.cpu_time_total / 1e6:8.2f}s  {100 * e.cpu_time_total / total:5.1f}%")
    print()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=48))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=args.shape_rows,
                                                             max_name_column_width=40, max_shapes_column_width=70))
    if args.trace:
        prof.export_chrome_trace(args.trace)
    summary = {e.key: e.self_cpu_time_total / 1e6 for e in events}
    Path("/tmp/unitune-profile").mkdir(exist_ok=True)
    Path(f"/tmp/unitune-profile/{args.task}-{args.precision}{'-packed' if args.packing else ''}.json").write_text(
        json.dumps({"seconds": seconds, "tokens": tokens, "self_s": summary}))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
