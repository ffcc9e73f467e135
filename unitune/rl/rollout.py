"""Rollouts: G completions per prompt from the current weights, on the one inference engine.

Shared prefix: each distinct prompt is prefilled once; its KV-cache rows, attention mask,
positions and last logits are repeated G times (`repeat_interleave`) before the first token
is sampled, so a group's G generations decode together without re-encoding the prompt G
times. From there the engine's own machinery runs (unitune/infer/engine.py): sampling
(temperature, top-p, top-k, one seeded generator per completion), EOS (kept in token_ids,
which is what RL trains on, never in the text), stop strings (the text is cut at the stop
and generation ends) and the token limit. `shared_prefix=False` prefills every copy on its
own (for the benchmark; same samples under greedy decoding).

Engines behind `make_rollout`:
  hf    in-process, on the training model itself (not a copy): what the optimizer just
        updated (with LoRA, the active adapter) is what the next rollout samples from.
  vllm  not wired in yet: asking for it says so (and whether vLLM is installed at all);
        `auto` picks hf.
The engine's background worker is not used: a rollout runs synchronously in the training
thread, with the model in eval mode (dropout off), and restores train mode after. It runs at
the model's own dtype, outside mixed-precision autocast, which on CPU would re-cast every
weight at every decode step.
"""

import dataclasses
import importlib.util

import torch

from unitune.errors import UnituneError
from unitune.infer.engine import Completion, Engine, Request, SamplingParams, _Batch


def completion_seed(seed: int, prompt: int, copy: int) -> int:
    return (seed * 1_000_003 + prompt * 1_009 + copy) % (2**63)


class HFRollout:
    """Group generation on an in-process `Engine` wrapped around `model`."""

    def __init__(self, model, tokenizer, *, chat_template: str | None = None, max_batch_size: int = 256):
        self.engine = Engine(model, tokenizer, chat_template=chat_template, max_batch_size=max_batch_size)
        self.engine.adapters = []  # no per-row adapter routing: sample from the model as it is (its active adapter)
        self.model = model
        self.max_batch_size = max_batch_size

    def generate(self, prompts: list[list[int]], n: int, params: SamplingParams, *, seed: int = 0,
                 shared_prefix: bool = True) -> list[Completion]:
        """n completions per prompt, grouped: [p0c0, p0c1, ..., p1c0, ...]. Completion j of prompt i draws
        from seed completion_seed(seed, i, j), whatever else shares its batch."""
        params.check()
        training = self.model.training
        self.model.eval()
        per_chunk = max(1, self.max_batch_size // n)
        out: list[Completion] = []
        try:
            with torch.inference_mode():
                for start in range(0, len(prompts), per_chunk):
                    chunk = prompts[start:start + per_chunk]
                    seeds = [completion_seed(seed, start + i, j) for i in range(len(chunk)) for j in range(n)]
                    if shared_prefix:
                        out += self._run(chunk, n, params, seeds)
                    else:
                        out += self._run([p for p in chunk for _ in range(n)], 1, params, seeds)
        finally:
            self.model.train(training)
        return out

    def _run(self, prompts: list[list[int]], n: int, params: SamplingParams, seeds: list[int]) -> list[Completion]:
        """Prefill `prompts` once each, repeat every row n times, then decode to the end."""
        engine = self.engine
        for p in prompts:
            if len(p) + 1 >= engine.context_length:
                raise UnituneError(f"a prompt of {len(p)} tokens leaves no room in the model's context "
                                   f"({engine.context_length}); lower data.max_length")
        device = self.model.device
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[engine.pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        heads = [Request(p, params, None, sink=_drop) for p in prompts]
        logits, cache = engine._forward(ids, mask, positions, None, heads)
        rows = [Request(p, dataclasses.replace(params, seed=s), None, sink=_drop)
                for p, s in zip((p for p in prompts for _ in range(n)), seeds)]
        if n > 1:
            index = torch.arange(len(prompts), device=device).repeat_interleave(n)
            for layer in cache.layers:
                if layer.keys is not None and layer.keys.numel():
                    layer.keys, layer.values = layer.keys[index], layer.values[index]
            logits, mask, positions = logits[index], mask[index], positions[index]
        batch = _Batch(rows, cache, mask, positions[:, -1] + 1, None)
        batch.next_ids = engine._pick(logits, rows)
        batch = engine._after_sampling(batch)
        while batch is not None:
            batch = engine._decode(batch)
        return [r.completion for r in rows]


def _drop(event) -> None:
    """Rollouts read results, not streams."""


def make_rollout(kind: str, model, tokenizer, *, chat_template: str | None = None, max_batch_size: int = 256):
    if kind in ("auto", "hf"):
        return HFRollout(model, tokenizer, chat_template=chat_template, max_batch_size=max_batch_size)
    if kind == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise UnituneError("grpo.engine vllm: vLLM is not installed (pip install vllm; it needs a CUDA GPU); "
                               "use --grpo.engine hf (the in-process engine)")
        raise UnituneError("grpo.engine vllm: the colocated vLLM engine is not wired in yet; "
                           "use --grpo.engine hf (the in-process engine)")
    raise UnituneError(f"grpo.engine must be auto, hf or vllm, not '{kind}'")


__all__ = ["Completion", "HFRollout", "SamplingParams", "completion_seed", "make_rollout"]
