"""One inference engine for `infer`, `sample`, `serve` and RL rollouts.

A background worker owns the model and runs continuous batching on plain
transformers forward passes with a KV cache (`DynamicCache`):

    loop:  admit pending requests  ->  one prefill pass over them (left-padded)
           merge their cache rows into the running batch (left-padding the shorter)
           one decode pass for every running row  ->  sample, detokenize, stream
           drop finished rows (and cache columns that are padding in every row)

So requests that arrive together share forward passes, and a request that
arrives mid-generation joins the batch at the next step instead of waiting for
it to finish. Positions are tracked per row (`position_ids`), padding is masked
with the 2-D attention mask.

On CPU, `Engine.load` packs the linear layers' weights once for oneDNN's kernels
(unitune/models/prepack.py; `prepack=False` / `--engine.prepack false` keeps them plain):
decoding is bound by reading the weights, which MKL's GEMM does slowly at small batches.

LoRA adapters: several named peft adapters on one base, chosen per request;
one batch mixes them through peft's `adapter_names` (rows with no adapter use
the base). A model that is itself a single adapter folder is merged into its
base, so plain inference pays nothing for it.

Sampling, per row: repetition penalty (as in CTRL / transformers: positive
logits divided, negative multiplied, over every token seen), temperature
(0 = greedy), top-k, top-p, then inverse-CDF sampling with one uniform number
drawn from the request's own `torch.Generator` (first token whose cumulative
probability exceeds it). A seed thus fixes a request's
draws whatever else shares its batch; the logits can still differ in the last
bits with the batch's padding, which flips a draw only when it lands that close
to a boundary between two tokens.

Simplifications: the prefill of a long prompt is not chunked; caches other than
plain `DynamicLayer`s (sliding-window models) are not merged, so those models
admit new requests only when the running batch is empty; DoRA adapters cannot
be mixed in one batch (peft refuses), so they must be served alone.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import random
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from unitune.errors import UnituneError

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


class PromptTooLong(UnituneError):
    """The prompt does not fit in the model's context."""


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)  # strings that end the text (not included in it)
    seed: int | None = None  # None: a fresh random seed

    def check(self) -> SamplingParams:
        problems = [(self.max_new_tokens < 0, "max_new_tokens must be >= 0"),
                    (self.temperature < 0, "temperature must be >= 0"),
                    (not 0 < self.top_p <= 1, "top_p must be in (0, 1]"),
                    (self.top_k < 0, "top_k must be >= 0"),
                    (self.repetition_penalty <= 0, "repetition_penalty must be > 0"),
                    (any(not isinstance(s, str) or not s for s in self.stop), "stop strings must be non-empty")]
        for bad, message in problems:
            if bad:
                raise UnituneError(message)
        return self


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str  # stop | length | cancelled | error
    prompt_tokens: int
    error: str | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


class Request:
    """One prompt in flight. Iterate it for text deltas; `result()` waits for the Completion.

    `sink`, when given, receives each event instead (a str delta, then the
    Completion), called from the worker thread: the server uses it to hop
    onto its event loop.
    """

    _ids = itertools.count()

    def __init__(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None, sink=None):
        import torch

        self.id = next(Request._ids)
        self.prompt_ids, self.params, self.adapter = list(prompt_ids), params, adapter
        seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**63)
        self.generator = torch.Generator().manual_seed(seed)
        self.out_ids: list[int] = []
        self.text, self.emitted = "", 0  # text so far (stop strings cut), chars already streamed
        self._prefix, self._read = 0, 0  # incremental detokenization offsets into out_ids
        self.completion: Completion | None = None
        self.cancelled = False
        self._queue: queue.Queue = queue.Queue()
        self._sink = sink or self._queue.put
        self._done = threading.Event()

    def cancel(self) -> None:
        self.cancelled = True

    def _send(self, event) -> None:
        try:
            self._sink(event)
        except Exception:  # a closed event loop: the client is gone
            self.cancelled = True

    def _finish(self, reason: str, error: str | None = None) -> None:
        if self.completion is not None:
            return
        if self.emitted < len(self.text):
            self._send(self.text[self.emitted:])
            self.emitted = len(self.text)
        self.completion = Completion(self.text, self.out_ids, reason, len(self.prompt_ids), error)
        self._send(self.completion)
        self._done.set()

    def __iter__(self):
        while True:
            event = self._queue.get()
            if isinstance(event, Completion):
                return
            yield event

    def result(self, timeout: float | None = None) -> Completion:
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} did not finish in {timeout}s")
        return self.completion


class Engine:
    """Generation with dynamic batching over one model (plus named LoRA adapters)."""

    def __init__(self, model, tokenizer, *, chat_template: str | None = None, stop: list[str] = (),
                 max_batch_size: int = 64, default_adapter: str | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.chat_template = chat_template
        self.stop = list(stop)  # template stop strings, added to every request's own
        self.max_batch_size = max_batch_size
        self.default_adapter = default_adapter
        self.adapters = sorted(getattr(model, "peft_config", {}) or {})
        config = model.config
        self.context_length = getattr(config, "max_position_embeddings", None) or 2048
        eos = [tokenizer.eos_token_id, *_as_list(getattr(model.generation_config, "eos_token_id", None))]
        self.eos_ids = {int(i) for i in eos if i is not None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids, default=0)
        self._pending: list[Request] = []
        self._cv = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # forward passes run (prefill + decode), for tests and stats
        self.running = 0  # rows in the running batch

    # ---- loading -----------------------------------------------------------------------
    @classmethod
    def load(cls, name: str, *, adapters: dict[str, str] | None = None, dtype: str = "auto",
             device: str = "auto", template: str = "auto", max_batch_size: int = 64,
             attn_implementation: str | None = None, trust_remote_code: bool = False,
             prepack: bool = True) -> Engine:
        """Load `name` (anything unitune loads, or a LoRA run's adapter folder) and named adapters. With
        `prepack`, on CPU in float32 / bfloat16 the linear layers run from weights re-laid out once for
        oneDNN (unitune/models/prepack.py): faster decoding, no slower prefill, the plain weights freed."""
        import torch

        from unitune.models.load import load_model, load_tokenizer
        from unitune.models.prepack import pack_linears
        from unitune.templates import get_template, resolve_chat_template

        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        adapters = dict(adapters or {})
        base = _adapter_base(name)
        own, name_for_base = (name, base) if base is not None else (None, name)
        if "default" in adapters:
            raise UnituneError("adapter name 'default' is reserved; pick another name")
        tokenizer = load_tokenizer(name)
        model = load_model(name_for_base, dtype=dtype, device_type=device, attn_implementation=attn_implementation,
                           trust_remote_code=trust_remote_code)
        default = None
        if own or adapters:
            from peft import PeftModel

            loaded = ([("default", own)] if own else []) + list(adapters.items())
            for adapter_name, path in loaded:
                _check_adapter(path, name_for_base, adapter_name, mixed=bool(adapters))
            first_name, first_path = loaded[0]
            model = PeftModel.from_pretrained(model, first_path, adapter_name=first_name)
            for adapter_name, path in loaded[1:]:
                model.load_adapter(path, adapter_name=adapter_name)
            if own and not adapters:
                model = model.merge_and_unload()  # one adapter, always on: fold it into the weights
            else:
                default = "default" if own else None
        model.to(device).eval()
        if prepack and _packable(model):
            pack_linears(model)
        chat_template = resolve_chat_template(tokenizer, template)
        stop = get_template(template).stop if template != "auto" else []
        return cls(model, tokenizer, chat_template=chat_template, stop=stop, max_batch_size=max_batch_size,
                   default_adapter=default)

    # ---- prompts -----------------------------------------------------------------------
    def encode_chat(self, messages: list[dict], tools=None) -> list[int]:
        from unitune.templates import render_prompt

        return render_prompt(self.tokenizer, messages, chat_template=self.chat_template, tools=tools)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    # ---- requests ----------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams | None = None, *, adapter: str | None = None,
               sink=None) -> Request:
        """Queue one prompt; returns at once. Raises PromptTooLong / UnituneError for bad input."""
        params = (params or SamplingParams()).check()
        if not prompt_ids:
            raise UnituneError("the prompt is empty")
        if len(prompt_ids) >= self.context_length:
            raise PromptTooLong(f"the prompt has {len(prompt_ids)} tokens; the model's context is "
                                f"{self.context_length} (with room for at least one new token)")
        adapter = adapter if adapter is not None else self.default_adapter
        if adapter is not None and adapter not in self.adapters:
            raise UnituneError(f"unknown adapter '{adapter}'; loaded: {', '.join(self.adapters) or 'none'}")
        request = Request(prompt_ids, params, adapter, sink)
        if params.max_new_tokens == 0:
            request._finish("length")
            return request
        with self._cv:
            if self._closing:
                raise UnituneError("the engine is shutting down")
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="unitune-engine", daemon=True)
                self._thread.start()
            self._cv.notify()
        return request

    def generate(self, prompts: list, params: SamplingParams | None = None, *, adapter: str | None = None
                 ) -> list[Completion]:
        """Blocking batch generation. A prompt is token ids, a string (raw text) or a message list."""
        requests = [self.submit(self._ids(p), params, adapter=adapter) for p in prompts]
        return [r.result() for r in requests]

    def generate_groups(self, prompts: list[list[int]], n: int, params: list[SamplingParams],
                        shared_prefix: bool = True) -> list[Completion]:
        """n completions of each prompt, grouped [p0c0, p0c1, ..., p1c0, ...], one SamplingParams per
        completion (their seeds fix the draws), computed in the calling thread (the background worker
        is not used; RL rollouts call this with gradients off).

        Shared prefix: each prompt is prefilled once; its KV-cache rows, attention mask, positions and
        last logits are repeated n times before the first token is sampled, so a group's n generations
        decode together without encoding the prompt n times. `shared_prefix=False` prefills every copy
        on its own (the same samples under greedy decoding)."""
        import torch

        if not shared_prefix:
            prompts, n = [p for p in prompts for _ in range(n)], 1
        for p in prompts:
            if len(p) + 1 >= self.context_length:
                raise PromptTooLong(f"a prompt of {len(p)} tokens leaves no room in the model's context "
                                    f"({self.context_length})")
        logits, cache, mask, positions = self._encode([Request(p, params[0], None, sink=_drop) for p in prompts])
        rows = [Request(p, q, None, sink=_drop) for p, q in zip((p for p in prompts for _ in range(n)), params)]
        if n > 1:
            index = torch.arange(len(prompts), device=mask.device).repeat_interleave(n)
            for layer in cache.layers:
                if layer.keys is not None and layer.keys.numel():
                    layer.keys, layer.values = layer.keys[index], layer.values[index]
            logits, mask, positions = logits[index], mask[index], positions[index]
        batch = _Batch(rows, cache, mask, positions[:, -1] + 1, None)
        batch.next_ids = self._pick(logits, rows)
        batch = self._after_sampling(batch)
        while batch is not None:
            batch = self._decode(batch)
        return [r.completion for r in rows]

    def _ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.encode_text(prompt)
        if prompt and isinstance(prompt[0], dict):
            return self.encode_chat(prompt)
        return list(prompt)

    def stats(self) -> dict:
        return {"running": self.running, "waiting": len(self._pending), "forward_passes": self.steps}

    def close(self, timeout: float = 10.0) -> None:
        """Cancel what is queued or running and stop the worker."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- the worker --------------------------------------------------------------------
    def _loop(self) -> None:
        import torch

        batch: _Batch | None = None
        with torch.inference_mode():
            while True:
                with self._cv:
                    while not self._pending and batch is None and not self._closing:
                        self._cv.wait()
                    if self._closing:
                        for r in self._pending + (batch.rows if batch else []):
                            r._finish("cancelled")
                        self._pending.clear()
                        return
                    room = self.max_batch_size - (len(batch.rows) if batch else 0)
                    if batch is not None and not batch.mergeable:
                        room = 0
                    new, self._pending = self._pending[:room], self._pending[room:]
                try:
                    new = [r for r in new if _alive(r)]
                    if new:
                        batch = self._prefill(new) if batch is None else batch.merge(self._prefill(new))
                    if batch is not None:
                        batch = self._decode(batch)
                    self.running = len(batch.rows) if batch is not None else 0
                except Exception as err:  # keep serving: fail what was in flight, log the cause
                    traceback.print_exc(file=sys.stderr)
                    for r in new + (batch.rows if batch else []):
                        r._finish("error", f"{type(err).__name__}: {err}")
                    batch = None
                    self.running = 0

    def _forward(self, ids, mask, positions, cache, rows):
        kwargs = {"adapter_names": [r.adapter or BASE for r in rows]} if self.adapters else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                         logits_to_keep=1, **kwargs)
        self.steps += 1
        return out.logits[:, -1].float(), out.cache

    def _prefill(self, rows: list[Request]) -> _Batch:
        logits, cache, mask, positions = self._encode(rows)
        batch = _Batch(rows, cache, mask, positions[:, -1] + 1, None)
        batch.next_ids = self._pick(logits, rows)
        return self._after_sampling(batch)

    def _encode(self, rows: list[Request]):
        """One left-padded forward over the rows' prompts: last logits, cache, mask and positions."""
        import torch

        device = self.model.device
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.tensor([[self.pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows],
                            device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward(ids, mask, positions, None, rows)
        return logits, cache, mask, positions

    def _decode(self, batch: _Batch) -> _Batch | None:
        import torch

        batch = batch.keep([i for i, r in enumerate(batch.rows) if _alive(r)])
        if batch is None:
            return None
        mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], dim=1)
        logits, batch.cache = self._forward(batch.next_ids[:, None], mask, batch.positions[:, None],
                                            batch.cache, batch.rows)
        batch.mask, batch.positions = mask, batch.positions + 1
        batch.next_ids = self._pick(logits, batch.rows)
        return self._after_sampling(batch)

    def _after_sampling(self, batch: _Batch) -> _Batch | None:
        """Append each row's new token; finished rows leave the batch."""
        keep = []
        for i, (r, token, pos) in enumerate(zip(batch.rows, batch.next_ids.tolist(), batch.positions.tolist())):
            if self._append(r, token, pos + 1):
                keep.append(i)
        return batch.keep(keep)

    def _append(self, r: Request, token: int, length: int) -> bool:
        """Record a token; stream what is safe to show; False when the request is finished."""
        if r.cancelled:
            r._finish("cancelled")
            return False
        r.out_ids.append(token)
        if token in self.eos_ids:  # kept in token_ids (RL trains on it), never in the text
            r._finish("stop")
            return False
        self._detokenize(r)
        stops = r.params.stop + self.stop
        cut = min((p for p in (r.text.find(s) for s in stops) if p >= 0), default=-1)
        if cut >= 0:
            r.text = r.text[:cut]
            r._finish("stop")
            return False
        if len(r.out_ids) >= r.params.max_new_tokens or length >= self.context_length:
            r._finish("length")
            return False
        safe = len(r.text) - _held_back(r.text, stops)
        if safe > r.emitted:
            r._send(r.text[r.emitted:safe])
            r.emitted = safe
        return True

    def _detokenize(self, r: Request) -> None:
        """Incremental decoding (as in TGI): decode a short window, hold back partial UTF-8."""
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        before = decode(r.out_ids[r._prefix:r._read])
        now = decode(r.out_ids[r._prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            r.text += now[len(before):]
            r._prefix, r._read = r._read, len(r.out_ids)

    def _pick(self, logits, rows: list[Request]):
        """One sampled token per row (see the module docstring)."""
        import torch

        for i, r in enumerate(rows):
            if r.params.repetition_penalty != 1.0:
                seen = torch.tensor(r.prompt_ids + r.out_ids, device=logits.device).unique()
                values = logits[i, seen]
                penalty = r.params.repetition_penalty
                logits[i, seen] = torch.where(values < 0, values * penalty, values / penalty)
        temps = torch.tensor([r.params.temperature for r in rows], device=logits.device)
        greedy = temps == 0
        scaled = logits / temps.clamp(min=1e-5)[:, None]
        filtered = [i for i, r in enumerate(rows) if r.params.top_k > 0 or r.params.top_p < 1.0]
        if filtered:
            scaled[filtered] = _top_k_top_p(scaled[filtered], [rows[i].params for i in filtered])
        u = torch.cat([torch.rand(1, generator=r.generator) for r in rows]).to(logits.device)
        sampled = _inverse_cdf(scaled, u)
        return torch.where(greedy, logits.argmax(-1), sampled) if bool(greedy.any()) else sampled


class _Batch:
    """The running rows: their requests, KV cache, attention mask, next positions and next tokens."""

    def __init__(self, rows, cache, mask, positions, next_ids):
        from transformers.cache_utils import DynamicLayer

        self.rows, self.cache, self.mask, self.positions, self.next_ids = rows, cache, mask, positions, next_ids
        self.mergeable = all(type(layer) is DynamicLayer for layer in cache.layers)

    def keep(self, index: list[int]) -> _Batch | None:
        """Only these rows; cache columns that are padding in every kept row are dropped."""
        import torch

        if not index:
            return None
        if len(index) == len(self.rows):
            return self
        idx = torch.tensor(index, device=self.mask.device)
        self.rows = [self.rows[i] for i in index]
        self.mask, self.positions, self.next_ids = self.mask[idx], self.positions[idx], self.next_ids[idx]
        start = int(self.mask.any(0).nonzero()[0]) if self.mergeable else 0
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            if layer.keys is not None and layer.keys.numel():
                layer.keys, layer.values = layer.keys[idx, :, start:], layer.values[idx, :, start:]
        return self

    def merge(self, other: _Batch | None) -> _Batch | None:
        """Append other's rows, left-padding the shorter cache so columns line up."""
        import torch
        import torch.nn.functional as F

        if other is None:
            return self
        width = max(self.mask.shape[1], other.mask.shape[1])
        pad = lambda t, dim: F.pad(t, (0, 0) * (t.dim() - 1 - dim) + (width - t.shape[dim], 0))  # noqa: E731
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])
        self.mask = torch.cat([pad(self.mask, 1), pad(other.mask, 1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.next_ids = torch.cat([self.next_ids, other.next_ids])
        self.rows = self.rows + other.rows
        return self


def _top_k_top_p(scores, params: list[SamplingParams]):
    """Mask tokens outside each row's top-k and nucleus (top-p; the top token always stays)."""
    import torch

    ordered, order = scores.sort(dim=-1, descending=True)
    rank = torch.arange(scores.shape[-1], device=scores.device)[None]
    k = torch.tensor([p.top_k or scores.shape[-1] for p in params], device=scores.device)[:, None]
    top_p = torch.tensor([p.top_p for p in params], device=scores.device)[:, None]
    probs = torch.softmax(ordered, dim=-1)
    drop = (rank >= k) | ((probs.cumsum(-1) - probs) >= top_p)
    ordered = ordered.masked_fill(drop, float("-inf"))
    return torch.full_like(scores, float("-inf")).scatter(1, order, ordered)


def _inverse_cdf(scores, u, block: int = 256):
    """Per row, the first token whose cumulative softmax(scores) mass exceeds u (in [0, 1)).

    The same draw as `searchsorted(softmax(scores).cumsum(-1), u, right=True)`, without the
    full-vocabulary cumsum: block sums first, then a cumsum inside the chosen block only.
    Tokens of zero probability (score -inf) are never drawn.
    """
    import torch
    import torch.nn.functional as F

    rows, vocab = scores.shape
    weights = (scores - scores.max(-1, keepdim=True).values).exp_()
    blocks = F.pad(weights, (0, -vocab % block)).view(rows, -1, block)
    cum = blocks.sum(-1).cumsum(-1)
    target = (u * cum[:, -1])[:, None]
    b = torch.searchsorted(cum, target, right=True).clamp(max=cum.shape[1] - 1)
    before = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0)), torch.zeros_like(target))
    inner = blocks[torch.arange(rows, device=scores.device), b[:, 0]].cumsum(-1)
    j = torch.searchsorted(inner, target - before, right=True).clamp(max=block - 1)
    return (b[:, 0] * block + j[:, 0]).clamp(max=vocab - 1)


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop string."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if s.startswith(text[-n:]):
                longest = n
                break
    return longest


def _drop(event) -> None:
    """Group generation reads results, not streams."""


def _alive(r: Request) -> bool:
    if r.cancelled:
        r._finish("cancelled")
    return not r.cancelled


def _as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]


def _packable(model) -> bool:
    """Pre-packed kernels exist for the model's dtype and device, and no adapter reads its base weights
    at run time (DoRA and peft's other LoRA variants do)."""
    from unitune.models.prepack import can_prepack

    first = next(model.parameters())
    variants = any(getattr(m, "lora_variant", None) for m in model.modules())
    return can_prepack(first.dtype, first.device) and not variants


def _adapter_base(name: str) -> str | None:
    """The base model named by an adapter folder's adapter_config.json, or None for a plain model."""
    config = Path(name) / "adapter_config.json"
    if not (os.path.isdir(name) and config.exists()):
        return None
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise UnituneError(f"{config} names no base model (base_model_name_or_path)")
    return base


def _check_adapter(path: str, base: str, name: str, mixed: bool) -> None:
    config = Path(path) / "adapter_config.json"
    if not config.exists():
        raise UnituneError(f"adapter '{name}': {path} is not a LoRA adapter folder (no adapter_config.json)")
    data = json.loads(config.read_text())
    if data.get("use_dora") and mixed:
        raise UnituneError(f"adapter '{name}' uses DoRA, which cannot share a batch with other adapters; "
                           "merge it (unitune export) and serve the merged model")
    from unitune.models.load import resolve

    own_base = data.get("base_model_name_or_path")
    if own_base and own_base != base and os.path.realpath(own_base) != os.path.realpath(resolve(base)[0]):
        print(f"unitune: warning: adapter '{name}' was trained on {own_base}, served on {base}", file=sys.stderr)
