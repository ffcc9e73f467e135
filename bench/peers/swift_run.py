"""ms-swift on the benchmark workload: `swift sft` and `swift rlhf --rlhf_type dpo` in this process
(sft_main / rlhf_main with the CLI's own argument list), ms-swift's defaults for everything the
workload does not fix. Run with bench/.venv-swift: python bench/peers/swift_run.py SPEC.

The model folder is a Llama architecture with SmolLM2's ChatML chat template, so it runs as
model_type llama with ms-swift's `chatml` template (the same tokens as the tokenizer's template)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Recorder, hook_hf_trainer, load_spec, versions  # noqa: E402


def args_for(spec: dict, dataset: str) -> list[str]:
    args = ["--model", spec["model"], "--model_type", "llama", "--template", "chatml", "--dataset", dataset,
            "--max_length", str(spec["max_length"]), "--output_dir", spec["out_dir"], "--add_version", "false",
            "--per_device_train_batch_size", str(spec["batch_size"]), "--max_steps", str(spec["steps"]),
            "--learning_rate", str(spec["lr"]), "--lr_scheduler_type", "cosine", "--warmup_ratio", "0",
            "--weight_decay", "0", "--max_grad_norm", "1.0", "--logging_steps", "1", "--save_strategy", "no",
            "--eval_strategy", "no", "--split_dataset_ratio", "0", "--report_to", "none", "--seed", str(spec["seed"]),
            "--dataloader_num_workers", "0", "--torch_dtype", "float32", "--use_cpu", "true",
            "--bf16", "true" if spec["precision"] == "bf16" else "false", "--fp16", "false",
            "--gradient_accumulation_steps", "1"]  # ms-swift's default makes the effective batch 16
    if spec["lora"]:
        args += ["--tuner_type", "lora", "--lora_rank", str(spec["lora"]["r"]), "--lora_alpha", str(spec["lora"]["alpha"]),
                 "--lora_dropout", "0", "--target_modules", "all-linear"]
    else:
        args += ["--tuner_type", "full"]
    for key, value in spec.get("options", {}).items():  # a variant's own settings, e.g. optim adafactor
        args += [f"--{key}", str(value)]
    return args


def main() -> int:
    spec = load_spec()
    rec = Recorder(spec)
    hook_hf_trainer(rec)
    task, data = spec["task"], spec["data"]
    os.makedirs(spec["out_dir"], exist_ok=True)
    if task.startswith("sft"):
        from swift import sft_main

        run = lambda: sft_main(args_for(spec, os.path.join(data, "sft.jsonl")))  # noqa: E731
    elif task.startswith("dpo"):
        from swift import rlhf_main

        path = os.path.join(spec["out_dir"], "dpo_swift.jsonl")  # ms-swift's format: messages + rejected_response
        with open(os.path.join(data, "dpo.jsonl")) as src, open(path, "w") as dst:
            for line in src:
                row = json.loads(line)
                dst.write(json.dumps({"messages": row["prompt"] + row["chosen"],
                                      "rejected_response": row["rejected"][-1]["content"]}) + "\n")
        args = args_for(spec, path) + ["--rlhf_type", "dpo", "--beta", str(spec["beta"])]
        run = lambda: rlhf_main(args)  # noqa: E731
    else:
        raise SystemExit(f"swift_run: no task {task}")
    rec.extra.update(versions("ms-swift", "trl", "torch", "transformers", "peft", "accelerate"))
    try:
        run()
    finally:
        rec.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
