"""TRL on the benchmark workload: SFTTrainer, DPOTrainer, GRPOTrainer (no vLLM) with TRL's own
defaults for everything the workload does not fix. Run with bench/.venv-peers: python bench/peers/trl_run.py SPEC.

SFT data goes in as TRL's conversational prompt/completion format (the assistant turn is the
completion), so the loss falls on the assistant tokens only, as in every other framework."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Recorder, grpo_reward, hook_hf_trainer, load_spec, versions  # noqa: E402


def common_args(spec: dict) -> dict:
    return dict(output_dir=spec["out_dir"], per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"],
                learning_rate=spec["lr"], lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
                max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to="none", seed=spec["seed"],
                bf16=spec["precision"] == "bf16", use_cpu=spec.get("device", "cpu") == "cpu", dataloader_num_workers=0,
                model_init_kwargs={"dtype": spec.get("model_dtype", "float32")},
                **spec.get("options", {}))  # a variant's own settings, e.g. packing or optim adafactor


def main() -> int:
    spec = load_spec()
    rec = Recorder(spec)
    hook_hf_trainer(rec)
    from datasets import load_dataset
    from peft import LoraConfig

    peft_config = None
    if spec["lora"]:
        peft_config = LoraConfig(r=spec["lora"]["r"], lora_alpha=spec["lora"]["alpha"], lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    task, data = spec["task"], spec["data"]
    if task.startswith("sft"):
        from trl import SFTConfig, SFTTrainer

        ds = load_dataset("json", data_files=os.path.join(data, "sft.jsonl"), split="train")
        ds = ds.map(lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
                    remove_columns=["messages"])
        cfg = SFTConfig(max_length=spec["max_length"], **common_args(spec))
        trainer = SFTTrainer(model=spec["model"], args=cfg, train_dataset=ds, peft_config=peft_config)
    elif task.startswith("dpo"):
        from trl import DPOConfig, DPOTrainer

        ds = load_dataset("json", data_files=os.path.join(data, "dpo.jsonl"), split="train")
        cfg = DPOConfig(max_length=spec["max_length"], beta=spec["beta"], **common_args(spec))
        trainer = DPOTrainer(model=spec["model"], args=cfg, train_dataset=ds, peft_config=peft_config)
    elif task.startswith("grpo"):
        from trl import GRPOConfig, GRPOTrainer

        g = spec["grpo"]
        ds = load_dataset("json", data_files=os.path.join(data, "grpo.jsonl"), split="train")
        args = common_args(spec)
        args["per_device_train_batch_size"] = spec["batch_size"] * g["num_generations"]  # TRL counts completions
        cfg = GRPOConfig(num_generations=g["num_generations"], max_completion_length=g["max_completion_length"],
                         temperature=g["temperature"], beta=g["beta"], use_vllm=False, **args)
        trainer = GRPOTrainer(model=spec["model"], reward_funcs=[grpo_reward], args=cfg, train_dataset=ds,
                              peft_config=peft_config)
        generate = trainer._generate_single_turn

        def timed(*a, **k):
            t = time.perf_counter()
            completion_ids, logprobs = generate(*a, **k)
            rec.rollout(time.perf_counter() - t, [len(c) for c in completion_ids])
            return completion_ids, logprobs

        trainer._generate_single_turn = timed
    else:
        raise SystemExit(f"trl_run: no task {task}")
    rec.extra.update(versions("trl", "torch", "transformers", "peft", "accelerate"))
    try:
        trainer.train()
    finally:
        rec.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
