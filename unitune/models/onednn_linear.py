"""fp32 training passes' linear layers through oneDNN's kernel instead of MKL's GEMM on CPU: the same
products (to fp32 rounding), faster at a decoder's layer shapes.

On CPU, `F.linear` hands an fp32 product to MKL's GEMM. At the shapes of a training pass over
SmolLM2-135M (~1,000 rows against 576 x 576, 576 x 192, 576 x 1536, 1536 x 576 weights) oneDNN's
linear over the same plain weight (`torch.ops.mkldnn._linear_pointwise`, what inductor lowers CPU
linears to) ran the forward product 12-27% faster on the benchmark machine (a Zen 4), and the input's
gradient (the gradient times the weight, the same kernel over the weight transposed) 14-23% faster
at all but the narrowest shape; the weight's gradient (gradient^T times input) was no faster there.
In the benchmark's fp32 cells that is +10% tokens/s in SFT LoRA, +7-17% in full fine-tuning and +12-21%
in DPO (BENCHMARKS.md, performance-pass table). On a Zen 5 all three products ran 1.5-2.4x MKL's rate
(`bench/matmul.py shapes`: ~170 GFLOP/s through MKL against 340-400 for the forward and the input's
gradient and 240-340 for the weight's), so the weight's gradient goes through oneDNN too, over
transposed views (+11% tokens/s in full fine-tuning there; under LoRA only the adapters' rank-r
gradients, a few ms a step faster or slower by shape). On an AVX2 Zen 3 the same kernels were the
other way round (the forward 4-19% slower, a LoRA pass +12-16%), so `auto` turns it on only where it
was measured faster: AMD CPUs that torch runs with AVX-512 (`faster_here`). On an Intel CPU with
AVX-512 and AMX (2026-12-02) MKL's GEMM ran these shapes as fast as oneDNN or faster (its weight gradient
355-364 against 274-299 GFLOP/s, a LoRA pass 3-10% slower through oneDNN), so Intel stays off; Arm is
not measured and stays off unless asked for.

So in a pass with gradients, outside autocast, on CPU, each decoder layer's `nn.Linear` runs as the
autograd function below; anything else (autocast, whose bf16 products already go to oneDNN; no
gradients, e.g. a rollout or a reference pass; another device or dtype) runs `F.linear` as before.
Like `F.linear`'s own backward, the function keeps the input only when the weight trains, and the
weight only when the input wants a gradient. `train.onednn_linears false` turns it off.
"""

import types

import torch


def available() -> bool:
    """Whether this torch build has oneDNN's linear kernel (CPU builds for x86 and Arm do)."""
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._linear_pointwise)
    except (AttributeError, RuntimeError):
        return False


def faster_here() -> bool:
    """Whether this CPU is of the kind where oneDNN's fp32 linear was measured faster than MKL's GEMM at a
    decoder's shapes: an AMD CPU that torch runs with AVX-512 kernels (a Zen 4; slower on an AVX2 Zen 3)."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("vendor_id") and "AuthenticAMD" in line for line in f)
    except OSError:
        return False


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight^T (+ bias) through oneDNN; `weight` [out, in] as nn.Linear stores it, or a transposed view."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        want_x, want_weight = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x if want_weight else None, weight if want_x else None)
        return _linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        want_x, want_weight, want_bias = ctx.needs_input_grad
        flat = grad.reshape(-1, grad.shape[-1])
        grad_x = _linear(grad, weight.t()) if want_x else None
        grad_weight = _linear(flat.t(), x.reshape(-1, x.shape[-1]).t()) if want_weight else None
        grad_bias = flat.sum(0) if want_bias else None
        return grad_x, grad_weight, grad_bias


def _forward(self, x):
    weight = self.weight
    if (torch.is_grad_enabled() and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.device.type == "cpu" and weight.device.type == "cpu" and not torch.is_autocast_enabled("cpu")):
        return _OneDNNLinear.apply(x, weight, self.bias)
    return torch.nn.functional.linear(x, weight, self.bias)


def use_onednn_linears(model: torch.nn.Module) -> int:
    """Run every plain `nn.Linear` inside `model`'s decoder layers (LoRA's base layers and adapters
    included) through `_OneDNNLinear` where it applies (in place); the number of layers."""
    count = 0
    for layer in model.modules():
        if not type(layer).__name__.endswith("DecoderLayer"):
            continue
        for module in layer.modules():
            if type(module) is torch.nn.Linear and "forward" not in vars(module):
                module.forward = types.MethodType(_forward, module)
                count += 1
    return count
