"""Linear layers that run from weights pre-packed for oneDNN: faster CPU inference, same products.

On CPU, `nn.Linear` hands its plain [out, in] weight to MKL's GEMM at every call. At the row counts
of decoding (1-64 rows) that reads the weights far below the memory bandwidth: SmolLM2-135M's 210
linear layers take 52-62 ms at 16 fp32 rows on the benchmark machine, reading at 9 GB/s where the
machine reads 33. oneDNN's linear over a weight re-laid out once ahead of time
(`torch.ops.mkldnn._reorder_linear_weight` / `_linear_pointwise`, what inductor freezes CPU linear
layers into) takes 28 ms there; it is faster at every fp32 row count measured (1 to 2,600) and at
bf16's decoding ones, and ties at bf16's prefill-sized ones (`bench/prepack_linears.py`). The
packed layout is opaque, so a packed layer's plain weight is freed (unless another module shares
it, as a head tied to the embedding does): packing is for weights that no longer change, or that
are packed again after they do (the GRPO rollout copy), and a packed layer has no backward.
"""

import torch

ROWS = 16  # the row count oneDNN lays the weights out for; any count runs


def can_prepack(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether this torch build has oneDNN's pre-packed linear kernels for `dtype` on `device` (CPU only)."""
    if torch.device(device).type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if not (torch.ops.mkldnn._reorder_linear_weight and torch.ops.mkldnn._linear_pointwise):
            return False
        # oneDNN packs bf16 only where the CPU converts bf16 (AVX-512 BW/VL/DQ or AVX-NE-CONVERT); on an
        # AVX2 CPU _reorder_linear_weight raises "bf16 path needs the cpu support ..."
        return dtype == torch.float32 or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _packed_forward(module, x):
    return torch.ops.mkldnn._linear_pointwise(x, module.unitune_packed, module.bias, "none", [], "")


class Prepacked:
    """`model`'s plain `nn.Linear` layers (subclasses such as quantised layers and LoRA's own small
    ones left alone), switched to the packed forward; `pack()` (re)packs their current weights."""

    def __init__(self, model: torch.nn.Module):
        self.linears = [m for name, m in model.named_modules()
                        if type(m) is torch.nn.Linear and ".lora_" not in f".{name}"]
        # a weight another module also uses (the head tied to the embedding) keeps its plain copy
        others = {id(p) for m in model.modules() if type(m) is not torch.nn.Linear
                  for p in m.parameters(recurse=False)}
        self.shared = {id(m) for m in self.linears if id(m.weight) in others}
        for m in self.linears:
            m.unitune_packed = None
            m.forward = _packed_forward.__get__(m)

    def pack(self) -> None:
        """Each layer's weight re-laid out for oneDNN, its plain copy freed unless shared."""
        for m in self.linears:
            m.unitune_packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), ROWS)
            if id(m) not in self.shared:
                m.weight.data = torch.empty(0, dtype=m.weight.dtype, device=m.weight.device)

    def release(self) -> None:
        for m in self.linears:
            m.unitune_packed = None


def pack_linears(model: torch.nn.Module) -> int:
    """Pack `model`'s linear layers in place for inference; the number packed."""
    packed = Prepacked(model)
    with torch.no_grad():
        packed.pack()
    return len(packed.linears)
