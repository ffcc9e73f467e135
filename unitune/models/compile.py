"""Decoder layers compiled for training: `train.compile true`.

torch.compile (inductor) turns a decoder layer's forward and backward into generated kernels that
fuse the elementwise work between the matmuls: the norms, rotary embedding, SiLU, products and
residual adds, ~10% of an eager full fine-tuning step on CPU. Which activations backward keeps is
then the compiler's choice (AOTAutograd's partitioner), under `train.compile_memory_budget`, torch's
`activation_memory_budget`: the share of what it would keep by default that it may keep, recomputing
the rest in backward, cheapest first (elementwise results, then matmuls). So the eager tricks that
keep less (models/swiglu.py, models/recompute.py, models/shared_cast.py) are not installed under
compile: the budget does their work. Measured on SmolLM2-135M: BENCHMARKS.md, performance-pass table.

Shapes are compiled dynamic, so batches of other lengths reuse the same kernels; every layer of one
kind shares one compiled graph. Only training passes (gradients on, training mode) run compiled;
evaluation, reference and rollout passes run the layers as they are. The first training passes
pay for the compilation (~45 s for SmolLM2-135M on 2 CPU cores, once per process). On CPU inductor
needs a C++ compiler, checked before training starts.
"""

import types

import torch

from unitune.errors import UnituneError


def _forward(self, *args, **kwargs):
    if torch.is_grad_enabled() and self.training:
        return self._unitune_compiled(*args, **kwargs)
    return self._unitune_eager(*args, **kwargs)


def check_compiler(device_type: str) -> None:
    """Raise a UnituneError naming the fix where inductor cannot build CPU kernels (no C++ compiler)."""
    if device_type != "cpu":
        return
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as err:  # torch's own error type for it has moved between releases
        raise UnituneError(f"train.compile true on CPU needs a C++ compiler for torch.compile's kernels, and none was "
                           f"found ({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}); "
                           "install one (e.g. apt install g++) or set train.compile false") from None


def compile_layers(model, memory_budget: float) -> int:
    """Compile the training forward (and so backward) of every decoder layer of `model`, in place, keeping
    at most `memory_budget` of the activations compile keeps by default; the number of layers."""
    import torch._functorch.config as functorch_config

    if not 0 < memory_budget <= 1:
        raise UnituneError(f"train.compile_memory_budget must be in (0, 1], got {memory_budget!r}")
    functorch_config.activation_memory_budget = memory_budget  # read when a graph is partitioned
    count = 0
    for layer in model.modules():
        if not type(layer).__name__.endswith("DecoderLayer") or "_unitune_eager" in vars(layer):
            continue
        layer._unitune_eager = layer.forward
        layer._unitune_compiled = torch.compile(layer.forward, dynamic=True)
        layer.forward = types.MethodType(_forward, layer)
        count += 1
    if not count:
        raise UnituneError(f"train.compile true: {type(model).__name__} has no decoder layers to compile; "
                           "set train.compile false")
    return count
