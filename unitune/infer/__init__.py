"""Inference: one batching engine (engine.py) behind `unitune infer`, `unitune sample`,
`unitune serve` and RL rollouts.

    from unitune.infer import Engine, SamplingParams
    engine = Engine.load("smollm2-135m-instruct", adapters={"pirate": "runs/sft/final"})
    [c.text for c in engine.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(temperature=0))]
"""

from unitune.infer.engine import Completion, Engine, PromptTooLong, Request, SamplingParams

__all__ = ["Completion", "Engine", "PromptTooLong", "Request", "SamplingParams"]
