"""Preference alignment on the built-in SmolLM2-135M-Instruct, on CPU: DPO (LoRA) and a reward model
on the built-in `pirate-prefs` pairs, with held-out accuracy before and after and the wall time of each.

    python examples/preference_bench.py            # both
    python examples/preference_bench.py dpo        # one of them; extra flags go to the run:
    python examples/preference_bench.py rm --train.max_steps 20

Targets (issue 3): DPO raises held-out rewards/accuracies from its start to >= 0.8, and the RM reaches
>= 0.9 held-out accuracy, each in <= 10 minutes. The configs are examples/dpo_pirate.yaml and
examples/rm_pirate.yaml; the held-out pairs (`pirate-prefs-val`) ask questions the training pairs never
ask. The figures are written to runs/preference_bench.json.

DPO's held-out accuracy at step 0 is 0 by construction (the policy is its own reference, so every
implicit reward is 0 and ties count as wrong); the RM's step-0 accuracy is that of a random head.
"""

import json
import sys
import time
from pathlib import Path

from unitune.api import make_config, run
from unitune.config import parse_flags

RUNS = {"dpo": ("examples/dpo_pirate.yaml", "eval_rewards/accuracies", 0.8),
        "rm": ("examples/rm_pirate.yaml", "eval_accuracy", 0.9)}


def bench(verb: str, flags: list[str]) -> dict:
    config, key, target = RUNS[verb]
    _, overrides = parse_flags(flags)
    cfg = make_config(verb, config, overrides)
    started = time.perf_counter()
    run(verb, cfg)
    seconds = time.perf_counter() - started
    rows = [json.loads(line) for line in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r[key]) for r in rows if key in r]
    return {"verb": verb, "config": config, "flags": flags, "metric": key, "target": target,
            "start": evals[0][1], "end": evals[-1][1], "curve": evals, "steps": rows[-1]["step"],
            "seconds": round(seconds), "passed": evals[-1][1] >= target and seconds <= 600,
            "final_loss": next(r["loss"] for r in reversed(rows) if "loss" in r)}


def main(argv: list[str]) -> int:
    verbs = [argv[0]] if argv and argv[0] in RUNS else list(RUNS)
    flags = argv[1:] if argv and argv[0] in RUNS else argv
    results = [bench(verb, flags) for verb in verbs]
    out = Path("runs/preference_bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for r in results:
        print(f"{r['verb']:4s} {r['metric']}: {r['start']:.2f} -> {r['end']:.2f} (target >= {r['target']}) "
              f"in {r['steps']} steps, {r['seconds']} s (limit 600): {'PASS' if r['passed'] else 'FAIL'}")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
