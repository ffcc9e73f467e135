"""GRPO with LoRA on SmolLM2-135M-Instruct, built-in arithmetic task: held-out accuracy before and after.

    python bench/grpo_arithmetic.py [OUTPUT_DIR] [--flag value ...]     (flags override the example config)

Runs examples/grpo_arithmetic.yaml through the Python API (the same path as the CLI), then prints the
held-out greedy accuracy at step 0 and at the end, the training reward curve (first / last 5 steps),
the wall time, and where reward.png and completions.jsonl are.
"""

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: its file names (profile.py) would shadow the standard library

import unitune  # noqa: E402
from unitune.config import parse_flags  # noqa: E402


def main(argv: list[str]) -> None:
    out = Path(argv.pop(0)) if argv and not argv[0].startswith("--") else ROOT / "runs" / "grpo-arithmetic"
    _, flags = parse_flags(argv)
    started = time.perf_counter()
    unitune.grpo(str(ROOT / "examples" / "grpo_arithmetic.yaml"), **{"train.output_dir": str(out), **flags})
    minutes = (time.perf_counter() - started) / 60
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval_rewards/accuracy/mean"]) for r in rows if "eval_rewards/accuracy/mean" in r]
    train = [r["reward"] for r in rows if "reward" in r]
    print(f"held-out accuracy (greedy, {out}):", ", ".join(f"step {s}: {a:.1%}" for s, a in evals))
    if train:
        k = min(5, len(train))
        print(f"training reward: first {k} steps {sum(train[:k]) / k:.3f}, last {k} steps {sum(train[-k:]) / k:.3f} "
              f"({len(train)} steps)")
    print(f"wall time {minutes:.1f} min; curve {out / 'reward.png'}; samples {out / 'completions.jsonl'}")


if __name__ == "__main__":
    main(sys.argv[1:])
