"""Reward functions: a batch of completions -> one number (or None) each; several combine with weights.

    R_i = nansum_k w_k r_k,i        (None becomes NaN and is ignored; if every function
                                     returns None for a completion, R_i = NaN and its advantage is 0)

Every function is called TRL-style, once per generation batch:
    fn(completions=[str], prompts=[messages], completion_ids=[[int]], **columns) -> [float | None]
where `columns` are the dataset's other fields (one value per completion), so a user function
can read `answer` or anything else the rows carry; accept `**kwargs` for the rest.

Specs (`--grpo.reward SPEC ...`, weights in `--grpo.reward_weights`):
    accuracy[:MODE[:COLUMN]]  1 if the completion's answer equals the row's COLUMN (default `answer`,
                              else `solution`); MODE auto (\\boxed{} if present, else the last number
                              for numeric targets, else exact), boxed, last_number or exact. Numbers
                              compare as numbers ("1,000" == "1000.0"); a target holding "#### x" or
                              \\boxed{x} is reduced to x first.
    format:REGEX              1 if REGEX matches somewhere in the completion (re.DOTALL), else 0
    contains:TEXT             1 if TEXT occurs in the completion, else 0
    length:N                  max(0, 1 - |tokens - N| / N): 1 at N completion tokens
    soft_overlong[:BUFFER]    DAPO: 0 up to L_max - BUFFER tokens, then falling linearly to -1 at L_max
                              (L_max = grpo.max_completion_length; BUFFER defaults to L_max / 4)
    repetition[:N]            -(1 - distinct N-grams / N-grams) over words (N = 3): 0 for no repeats
    rm:PATH                   a reward model trained with `unitune rm` (unitune.reward_model.RewardModel)
    FILE.py:FUNCTION          a user function with the signature above

A function that raises stops the run with a UnituneError naming the function and the first
sample on which it fails on its own (found by calling it again one sample at a time).
"""

import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from unitune.errors import UnituneError, suggest

BUILTINS: dict[str, Callable[..., Callable]] = {}  # name -> factory(arg, context) -> reward function


def builtin(name: str):
    def wrap(factory):
        BUILTINS[name] = factory
        return factory
    return wrap


@dataclass
class Reward:
    name: str
    fn: Callable
    weight: float = 1.0


# --- answers -------------------------------------------------------------------------------------------

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (nested braces allowed)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j].strip()
    return None


def last_number(text: str) -> str | None:
    found = NUMBER.findall(text)
    return found[-1] if found else None


def as_number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text.strip().strip("$").replace(",", "").rstrip("."))
    except ValueError:
        return None


def target_answer(value) -> str:
    """A dataset answer reduced to the thing to match: after '####' (GSM8K), inside \\boxed{}, or as is."""
    text = str(value)
    if "####" in text:
        return text.split("####")[-1].strip()
    return boxed(text) or text.strip()


def same_answer(completion: str, target, mode: str = "auto") -> bool:
    want = target_answer(target)
    if mode == "auto":
        mode = "boxed" if boxed(completion) is not None else "last_number" if as_number(want) is not None else "exact"
    got = {"boxed": boxed, "last_number": last_number, "exact": str.strip}[mode](completion)
    if got is None:
        return False
    a, b = as_number(got), as_number(want)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return got.strip() == want.strip()


@builtin("accuracy")
def _accuracy(arg: str, ctx: dict) -> Callable:
    mode, _, column = (arg or "auto").partition(":")
    if mode not in ("auto", "boxed", "last_number", "exact"):
        raise UnituneError(f"reward 'accuracy:{arg}': mode must be auto, boxed, last_number or exact")

    def accuracy(completions, **columns):
        key = column or next((k for k in ("answer", "solution") if k in columns), None)
        if key is None or key not in columns:
            raise UnituneError(f"reward 'accuracy' needs a '{column or 'answer'}' column in the data "
                               f"(the rows have: {', '.join(sorted(columns)) or 'no extra columns'})")
        return [float(same_answer(c, t, mode)) if t is not None else None for c, t in zip(completions, columns[key])]
    return accuracy


@builtin("format")
def _format(arg: str, ctx: dict) -> Callable:
    try:
        pattern = re.compile(arg, re.DOTALL)
    except re.error as err:
        raise UnituneError(f"reward 'format:{arg}': invalid regular expression: {err}") from None

    def format_(completions, **_):
        return [float(bool(pattern.search(c))) for c in completions]
    return format_


@builtin("contains")
def _contains(arg: str, ctx: dict) -> Callable:
    if not arg:
        raise UnituneError("reward 'contains' needs the text to look for: contains:TEXT")

    def contains(completions, **_):
        return [float(arg in c) for c in completions]
    return contains


@builtin("length")
def _length(arg: str, ctx: dict) -> Callable:
    target = _int_arg("length", arg, None)

    def length(completion_ids, **_):
        return [max(0.0, 1 - abs(len(ids) - target) / target) for ids in completion_ids]
    return length


@builtin("soft_overlong")
def _soft_overlong(arg: str, ctx: dict) -> Callable:
    l_max = ctx["max_completion_length"]
    buffer = _int_arg("soft_overlong", arg, max(1, l_max // 4))

    def soft_overlong(completion_ids, **_):
        out = []
        for ids in completion_ids:
            n = len(ids)
            out.append(0.0 if n <= l_max - buffer else (l_max - buffer - n) / buffer if n <= l_max else -1.0)
        return out
    return soft_overlong


@builtin("repetition")
def _repetition(arg: str, ctx: dict) -> Callable:
    size = _int_arg("repetition", arg, 3)

    def repetition(completions, **_):
        out = []
        for c in completions:
            words = c.split()
            grams = [tuple(words[i:i + size]) for i in range(len(words) - size + 1)]
            out.append(-(1 - len(set(grams)) / len(grams)) if grams else 0.0)
        return out
    return repetition


def _int_arg(name: str, arg: str, default: int | None) -> int:
    if not arg:
        if default is None:
            raise UnituneError(f"reward '{name}' needs a number: {name}:N")
        return default
    if not arg.isdigit() or int(arg) <= 0:
        raise UnituneError(f"reward '{name}:{arg}': expected a positive whole number")
    return int(arg)


# --- building and calling --------------------------------------------------------------------------------

def load_function(spec: str) -> tuple[str, Callable]:
    path, _, name = spec.rpartition(":")
    if not Path(path).is_file():
        raise UnituneError(f"reward '{spec}': {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"unitune_reward_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        raise UnituneError(f"reward '{spec}': importing {path} failed: {type(err).__name__}: {err}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UnituneError(f"reward '{spec}': {path} has no function '{name}'")
    return name, fn


def build_rewards(specs: list[str], weights: list[float], ctx: dict) -> list[Reward]:
    if not specs:
        raise UnituneError("grpo.reward is empty: name at least one reward function, e.g. --grpo.reward accuracy "
                           "(built-ins: " + ", ".join(BUILTINS) + ", rm:PATH, or FILE.py:FUNCTION)")
    if weights and len(weights) != len(specs):
        raise UnituneError(f"grpo.reward_weights has {len(weights)} values for {len(specs)} reward functions")
    rewards = []
    for spec, weight in zip(specs, weights or [1.0] * len(specs)):
        head, _, arg = spec.partition(":")
        if head in BUILTINS:
            name, fn = head, BUILTINS[head](arg, ctx)
        elif head == "rm":  # the hook for reward models trained with `unitune rm`
            from unitune.reward_model import RewardModel

            name, fn = "rm", RewardModel(arg)
        elif spec.rpartition(":")[0].endswith(".py"):
            name, fn = load_function(spec)
        else:
            raise UnituneError(f"unknown reward '{spec}'{suggest(head, BUILTINS)}; built-ins: {', '.join(BUILTINS)}, "
                               "rm:PATH, or FILE.py:FUNCTION")
        taken = {r.name for r in rewards}
        unique = name if name not in taken else next(f"{name}_{k}" for k in range(2, 99) if f"{name}_{k}" not in taken)
        rewards.append(Reward(unique, fn, float(weight)))
    return rewards


def score(rewards: list[Reward], completions: list[str], prompts: list, completion_ids: list[list[int]],
          columns: dict[str, list]) -> torch.Tensor:
    """[N, K] float64 rewards, NaN where a function returned None."""
    out = torch.full((len(completions), len(rewards)), float("nan"), dtype=torch.float64)
    for k, reward in enumerate(rewards):
        values = _call(reward, completions, prompts, completion_ids, columns)
        out[:, k] = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)
    return out


def combine(per_function: torch.Tensor, rewards: list[Reward]) -> torch.Tensor:
    """R = nansum_k w_k r_k; NaN when every function returned None."""
    weights = torch.tensor([r.weight for r in rewards], dtype=per_function.dtype)
    weighted = per_function * weights
    all_nan = torch.isnan(per_function).all(-1)
    return torch.where(all_nan, torch.nan, torch.nansum(weighted, -1))


def _call(reward: Reward, completions, prompts, completion_ids, columns) -> list:
    kwargs = dict(completions=completions, prompts=prompts, completion_ids=completion_ids, **columns)
    try:
        values = list(reward.fn(**kwargs))
    except UnituneError:
        raise
    except Exception as err:
        raise UnituneError(_failure(reward, err, completions, prompts, completion_ids, columns)) from None
    if len(values) != len(completions):
        raise UnituneError(f"reward '{reward.name}' returned {len(values)} values for {len(completions)} completions")
    for i, v in enumerate(values):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise UnituneError(f"reward '{reward.name}' returned {v!r} for completion {i} "
                               f"({completions[i][:80]!r}); expected a number or None")
    return values


def _failure(reward: Reward, err: Exception, completions, prompts, completion_ids, columns) -> str:
    """Name the function and the first sample on which it fails alone."""
    bad = None
    for i in range(len(completions)):
        one = {k: v[i:i + 1] for k, v in columns.items()}
        try:
            reward.fn(completions=completions[i:i + 1], prompts=prompts[i:i + 1],
                      completion_ids=completion_ids[i:i + 1], **one)
        except Exception:
            bad = i
            break
    where = "" if bad is None else (
        f" on sample {bad}: prompt {_show(prompts[bad])!r}, completion {completions[bad][:200]!r}"
        + "".join(f", {k}={v[bad]!r:.80}" for k, v in columns.items()))
    return f"reward function '{reward.name}' failed{where}: {type(err).__name__}: {err}"


def _show(prompt) -> str:
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        return str(prompt[-1].get("content", ""))[:200]
    return str(prompt)[:200]
