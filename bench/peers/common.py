"""What every framework's bench script shares: the spec it is given, a step recorder, the result file.

Stdlib only at import time (each framework runs it from its own environment). A run is
`python bench/peers/<framework>.py SPEC.json`; the spec (written by bench/run.py) says the task,
precision, model, data, steps and hyperparameters; the script writes `spec["result"]`:

    {"step_end": [t, ...],      wall time (time.time()) at the end of each optimizer step
     "tokens": [n, ...],        trained (non-padding) tokens of each step
     "loss": [x, ...],          the loss each step reported (as the framework logs it)
     "first_step": t,           when the first step started (start-up = first_step - process start)
     "rollout_s", "rollout_tokens", "completion_lengths": GRPO rollouts (seconds, tokens generated)
     "extra": {...}}            anything else worth showing (versions, defaults that differ)

Steps are timed end to end (end of step k-1 to end of step k), so data loading, collation,
logging and callbacks between steps count, the same for every framework.
"""

import functools
import json
import os
import sys
import time
from collections.abc import Mapping


def load_spec() -> dict:
    with open(sys.argv[1]) as f:
        return json.load(f)


class Recorder:
    def __init__(self, spec: dict):
        self.spec = spec
        self.step_end: list[float] = []
        self.tokens: list[int] = []
        self.loss: list[float] = []
        self.first_step: float | None = None
        self.pending_tokens = 0
        self.rollout_s = 0.0
        self.rollout_tokens = 0
        self.completion_lengths: list[int] = []
        self.logs: list[dict] = []
        self.extra: dict = {}

    def step_started(self) -> None:
        if self.first_step is None:
            self.first_step = time.time()

    def step_ended(self, tokens: int | None = None, loss: float | None = None) -> None:
        self.step_end.append(time.time())
        self.tokens.append(int(self.pending_tokens if tokens is None else tokens))
        self.pending_tokens = 0
        if loss is not None:
            self.loss.append(float(loss))

    def rollout(self, seconds: float, lengths: list[int]) -> None:
        self.rollout_s += seconds
        self.rollout_tokens += sum(lengths)
        self.completion_lengths += list(lengths)

    def write(self) -> None:
        out = {"step_end": self.step_end, "tokens": self.tokens, "loss": self.loss, "first_step": self.first_step,
               "rollout_s": self.rollout_s, "rollout_tokens": self.rollout_tokens,
               "completion_lengths": self.completion_lengths, "logs": self.logs[-3:], "extra": self.extra}
        tmp = self.spec["result"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.replace(tmp, self.spec["result"])


def count_tokens(inputs) -> int:
    """Non-padding tokens in a transformers-style batch (2-D attention mask, else every input id)."""
    if not isinstance(inputs, Mapping):  # dict, or transformers' BatchEncoding (a UserDict)
        return 0
    mask = inputs.get("attention_mask")
    if mask is not None and getattr(mask, "dim", lambda: 0)() == 2:
        return int(mask.sum())
    ids = inputs.get("input_ids")
    return int(ids.numel()) if ids is not None and hasattr(ids, "numel") else 0


def hook_hf_trainer(rec: Recorder) -> None:
    """Time every transformers.Trainer (and subclass: TRL, ms-swift, LLaMA-Factory) built from now on:
    a callback stamps each optimizer step's end and collects logged losses; the instance's
    `training_step` is wrapped to count the non-padding tokens it is fed and to stamp the first step."""
    import transformers
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            rec.step_ended()

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            # as the model is set up (LLaMA-Factory enables checkpointing on the model, not in the arguments)
            model = getattr(model, "base_model", model)
            model = getattr(model, "model", model)
            for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
                if hasattr(type(model), name) or hasattr(model, name):
                    rec.extra["gradient_checkpointing"] = bool(getattr(model, name))
                    break
            rec.extra["grad_accum"] = args.gradient_accumulation_steps

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            rec.logs.append({"step": state.global_step, **{k: v for k, v in logs.items()
                                                           if isinstance(v, (int, float))}})
            if "loss" in logs and "train_runtime" not in logs:
                rec.loss.append(float(logs["loss"]))

    original = transformers.Trainer.__init__

    @functools.wraps(original)  # keeps the signature: ms-swift inspects it to pick its keyword arguments
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(StepTimer())
        step = self.training_step

        def training_step(model, inputs, *a, **k):
            rec.step_started()
            rec.pending_tokens += count_tokens(inputs)
            return step(model, inputs, *a, **k)

        self.training_step = training_step
        rec.extra["trainer"] = type(self).__name__
        rec.extra["gradient_checkpointing"] = bool(getattr(self.args, "gradient_checkpointing", False))
        rec.extra["optim"] = str(getattr(self.args, "optim", ""))
        rec.extra["model_dtype"] = str(next(self.model.parameters()).dtype)

    transformers.Trainer.__init__ = init


def versions(*names: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def grpo_reward(completions, answer, **kwargs) -> list[float]:
    """The GRPO workload's reward, identical for every framework: 1 if the true sum appears in
    the completion, else 0 (completions as strings, or TRL's conversational [{"content": ...}])."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [1.0 if str(a) in t else 0.0 for t, a in zip(texts, answer)]
