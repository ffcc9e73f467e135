"""Shared fixtures: the tiny models and the real SmolLM2 tokenizer, built once per session."""

import sys

import pytest


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each test starts from accelerate's defaults: its state is one per process, so an in-process run
    with `mixed_precision: bf16` (the Python API's tests) left bf16 autocast on for every `Accelerator()`
    a later test built. unitune's own sessions reset it (unitune/train/session.py)."""
    yield
    if "accelerate.state" in sys.modules:
        sys.modules["accelerate.state"].AcceleratorState._reset_state()


@pytest.fixture(scope="session")
def tokenizer():
    from unitune.models.load import load_tokenizer

    return load_tokenizer("tiny-llama")


@pytest.fixture()
def tiny_model():
    from unitune.models.load import load_model

    return load_model("tiny-llama")


def random_features(n: int, seed: int = 0, lo: int = 4, hi: int = 40, vocab: int = 2000):
    """Features with varying lengths and a random loss mask (first token never trained)."""
    import random

    rng = random.Random(seed)
    feats = []
    for _ in range(n):
        length = rng.randint(lo, hi)
        ids = [rng.randrange(5, vocab) for _ in range(length)]
        mask = [0] + [int(rng.random() < 0.7) for _ in range(length - 1)]
        mask[-1] = 1
        feats.append({"input_ids": ids, "mask": mask})
    return feats


def recording_casts():
    """A dispatch mode that records every cast (aten._to_copy) run inside it as (input shape, output dtype)
    in its `.casts`, e.g. to check what autocast or peft copies."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Casts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.casts = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten._to_copy.default:
                self.casts.append((tuple(args[0].shape), out.dtype))
            return out

    return Casts()


def live_bytes():
    """A dispatch mode whose `.peak` is the most bytes of tensor storage that ops run inside it made and
    that were alive at once (a storage is counted until it is freed; views and in-place results are not
    new storage). It sees what autograd's backward allocates too, when `.backward()` is called inside it."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class LiveBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0
            self.alive = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            for t in tree_leaves(out):
                if not isinstance(t, torch.Tensor):
                    continue
                storage = t.untyped_storage()  # one Python object per storage while it lives
                if id(storage) in inputs or id(storage) in self.alive:
                    continue
                self.alive.add(id(storage))
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._freed, id(storage), storage.nbytes())
            return out

        def _freed(self, key, nbytes):
            self.alive.discard(key)
            self.live -= nbytes

    return LiveBytes()


def loss_and_grads(model, ids, autocast=False):
    """A causal-LM loss on `ids` and every parameter's gradient (cloned), optionally under bf16 autocast."""
    import torch

    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def saved_bytes(model, ids, autocast=False) -> int:
    """Bytes of the distinct storages autograd keeps for backward in one forward."""
    import torch

    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with (torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
          torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())
