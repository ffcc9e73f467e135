"""Objectives by verb. Each is built from (verb, config, tokenizer) and owns only its math
(see base.py for what the loop asks of one)."""

from unitune.objectives.lm import LMObjective


def build_objective(verb: str, cfg, tokenizer):
    builders = {
        "pt": lambda: LMObjective("pt", tokenizer.pad_token_id, tokenizer=tokenizer, cfg=cfg),
        "sft": lambda: LMObjective("sft", tokenizer.pad_token_id, tokenizer=tokenizer, cfg=cfg),
    }
    return builders[verb]()
