"""Under autocast, a tensor that feeds several linear layers is cast to the low dtype once, not once per layer.

Autocast casts a linear layer's fp32 input at every call, and a layer whose weight trains keeps its
cast input for backward. A decoder layer's two norm outputs feed five linear layers (q, k, v; gate,
up), and with LoRA each of them twice (the base layer and lora_A), so one [tokens, hidden] tensor
was cast ten times per layer and kept up to five times. Here each linear layer gets a view of one
shared cast; its backward casts that layer's gradient back to fp32 exactly as autocast's cast does,
so the gradients reaching the fp32 tensor, and their fp32 sum, are the same as before
(tests/models/test_shared_cast.py). The saving for SmolLM2-135M under bf16 LoRA is in BENCHMARKS.md.
"""

import torch

from unitune.models.recompute import cast, recipe_of, remember


class _SharedCast(torch.autograd.Function):
    """`low` (a cast of `x` made once) as this consumer's input; the gradient goes back to `x` in its dtype."""

    @staticmethod
    def forward(ctx, x, low):
        ctx.dtype = x.dtype
        return low.view_as(low)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.dtype), None


def _low_copy(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The one cast of `x` to `dtype`, kept on `x` while `x` is alive and unchanged."""
    cached = getattr(x, "_unitune_cast", None)
    if cached is not None and cached[0] == x._version and cached[1].dtype == dtype:
        return cached[1]
    low = x.detach().to(dtype)
    x._unitune_cast = (x._version, low)
    if recipe_of(x) is not None:  # x is made again in backward (unitune.models.recompute): so is its cast
        remember(low, cast, x, dtype)
    return low


def _cast_input(module, args):
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        return None
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return None
    low = _low_copy(x, torch.get_autocast_dtype(device))
    if torch.is_grad_enabled() and x.requires_grad:
        return (_SharedCast.apply(x, low), *args[1:])
    return (low, *args[1:])


def share_input_casts(model) -> int:
    """Give every nn.Linear of `model` the shared cast of its input (in place); the number of layers."""
    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and not getattr(module, "_unitune_shared_cast", False):
            module.register_forward_pre_hook(_cast_input)
            module._unitune_shared_cast = True
            count += 1
    return count
