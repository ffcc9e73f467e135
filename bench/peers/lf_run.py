"""LLaMA-Factory on the benchmark workload: `llamafactory-cli train` stages sft and dpo in this process
(run_exp with the YAML's dict), its defaults for everything the workload does not fix, its own
`smollm2` template (the same ChatML tokens). Run with bench/.venv-lf: python bench/peers/lf_run.py SPEC.

PyPI's torchvision/torchaudio wheels for torch 2.13 are CUDA builds that do not load next to CPU
torch; setup_peers.sh removes them, and since LLaMA-Factory imports torchaudio at module level
(for audio inputs only) this script puts an empty stand-in module in its place."""

import importlib.machinery
import json
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Recorder, hook_hf_trainer, load_spec, versions  # noqa: E402

TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
        "system_tag": "system"}


def stub_torchaudio() -> None:
    try:
        import torchaudio  # noqa: F401
    except Exception:
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub


def dataset_dir(spec: dict) -> str:
    """A dataset_dir with dataset_info.json naming the workload's files (sharegpt format, OpenAI-style tags)."""
    out = os.path.abspath(os.path.join(spec["out_dir"], "lf_data"))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(spec["data"], "dpo.jsonl")) as src, open(os.path.join(out, "dpo.jsonl"), "w") as dst:
        for line in src:
            row = json.loads(line)
            dst.write(json.dumps({"messages": row["prompt"], "chosen": row["chosen"][-1],
                                  "rejected": row["rejected"][-1]}) + "\n")
    info = {"bench_sft": {"file_name": os.path.abspath(os.path.join(spec["data"], "sft.jsonl")), "formatting": "sharegpt",
                          "columns": {"messages": "messages"}, "tags": TAGS},
            "bench_dpo": {"file_name": "dpo.jsonl", "formatting": "sharegpt", "ranking": True,
                          "columns": {"messages": "messages", "chosen": "chosen", "rejected": "rejected"},
                          "tags": TAGS}}
    with open(os.path.join(out, "dataset_info.json"), "w") as f:
        json.dump(info, f)
    return out


def main() -> int:
    spec = load_spec()
    rec = Recorder(spec)
    stub_torchaudio()
    hook_hf_trainer(rec)
    task = spec["task"]
    stage = "sft" if task.startswith("sft") else "dpo" if task.startswith("dpo") else None
    if stage is None:
        raise SystemExit(f"lf_run: no task {task}")
    args = {"model_name_or_path": spec["model"], "stage": stage, "do_train": True, "template": "smollm2",
            "dataset": f"bench_{stage}", "dataset_dir": dataset_dir(spec), "cutoff_len": spec["max_length"],
            "output_dir": spec["out_dir"], "overwrite_output_dir": True,
            "per_device_train_batch_size": spec["batch_size"], "max_steps": spec["steps"],
            "learning_rate": spec["lr"], "lr_scheduler_type": "cosine", "warmup_ratio": 0.0, "weight_decay": 0.0,
            "max_grad_norm": 1.0, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
            "seed": spec["seed"], "bf16": spec["precision"] == "bf16", "dataloader_num_workers": 0, "use_cpu": True,
            "plot_loss": False}
    if spec["lora"]:
        args.update(finetuning_type="lora", lora_rank=spec["lora"]["r"], lora_alpha=spec["lora"]["alpha"],
                    lora_dropout=0.0, lora_target="all")
    else:
        args.update(finetuning_type="full")
    if stage == "dpo":
        args.update(pref_beta=spec["beta"], pref_loss="sigmoid")
    args.update(spec.get("options", {}))  # a variant's own settings, e.g. optim adafactor
    from llamafactory.train.tuner import run_exp

    rec.extra.update(versions("llamafactory", "trl", "torch", "transformers", "peft", "accelerate"))
    try:
        run_exp(args)
    finally:
        rec.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
