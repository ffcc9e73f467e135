"""unitune: train, align, serve, evaluate and export causal language models
with one CLI, one config format, one Python API and one training loop."""

from unitune.api import Result, pt, sft, train

__all__ = ["Result", "pt", "sft", "train"]
__version__ = "0.1.0"
