"""Objectives by verb. Each is built from (verb, config, tokenizer) and owns only its math
(see base.py for what the loop asks of one).

Optional hooks the session calls when an objective has them:
  - `load_model(accelerator)`: the model to train, instead of a causal LM (rm)
  - `prepare(model, accelerator, rows, val_rows)`: after LoRA, before the loop
    (a reference model: a frozen copy, or log-probs precomputed into the rows)
  - `plot(metric_rows, output_dir)`: the objective's own plots at the end (grpo: reward.png)

Optional hooks the loop calls (train/loop.py): `step_batches(model, micro_rows, step)` makes
a step's batches itself (grpo: generate and score), `steps_per_batch` reuses one step's data for
several optimizer steps, `evaluate(model, rows) -> {metric: (sum, count)}` replaces the loss
evaluation."""

from unitune.objectives.lm import LMObjective


def build_objective(verb: str, cfg, tokenizer):
    builders = {
        "pt": lambda: LMObjective("pt", tokenizer.pad_token_id, tokenizer=tokenizer, cfg=cfg),
        "sft": lambda: LMObjective("sft", tokenizer.pad_token_id, tokenizer=tokenizer, cfg=cfg),
        "dpo": lambda: _load("dpo", "DPOObjective")(cfg, tokenizer),
        "kto": lambda: _load("kto", "KTOObjective")(cfg, tokenizer),
        "rm": lambda: _load("rm", "RMObjective")(cfg, tokenizer),
        "grpo": lambda: _load("grpo", "GRPOObjective")(cfg, tokenizer),
    }
    return builders[verb]()


def _load(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(f"unitune.objectives.{module}"), name)
