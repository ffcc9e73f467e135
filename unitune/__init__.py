"""unitune: train, align, serve, evaluate and export causal language models
with one CLI, one config format, one Python API and one training loop."""

# One function per training verb. (`unitune.api.train(verb, ...)` is the general form; it is not
# re-exported here because `unitune.train` is the package that holds the loop.)
from unitune.api import Result, dpo, grpo, kto, pt, rm, sft

__all__ = ["Result", "RewardModel", "dpo", "grpo", "kto", "pt", "rm", "rm_score", "sft"]
__version__ = "0.1.0"


def __getattr__(name):  # the reward-model scorer loads transformers only when asked for
    if name in ("RewardModel", "rm_score"):
        from unitune import reward_model

        return getattr(reward_model, name)
    raise AttributeError(f"module 'unitune' has no attribute {name!r}")
