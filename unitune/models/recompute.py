"""Activations that backward makes again from tensors it keeps anyway, instead of keeping them too.

A trained linear layer keeps its input for its weight's gradient: with LoRA, each lora_A. Per
decoder layer those inputs are the two norm outputs (q/k/v's and gate/up's) and the MLP's product
silu(gate) * up (down's): 2,688 of the ~8,500 floats a token keeps per SmolLM2 layer in fp32
(bench/saved_tensors.py), and full fine-tuning keeps the same. Each is a cheap elementwise function
of tensors that backward keeps regardless: a norm's input (the residual stream, kept by the norm's
own backward) and the MLP's gate and up (kept by silu_mul). In full fine-tuning a norm also keeps
its normalised input for its weight's gradient (576 floats a token per norm for SmolLM2, a sixth
of what a layer keeps): a norm with a trained weight runs checkpointed, keeping only its input,
which the residual stream holds anyway. So while a decoder layer runs forward,
autograd's saved-tensor hooks swap such a tensor, when a layer saves it, for the recipe that made it,
and backward runs the recipe again when it needs the tensor: the same operations on the same inputs
under the same autocast state, so the same bits and the same gradients (tests/models/test_recompute.py).

Under autocast a linear layer's fp32 weight is cast to the low dtype, and the matmul keeps that cast
for backward (for its input's gradient): in full fine-tuning, a low-precision copy of every decoder
weight sits beside the activations at the end of forward (for SmolLM2-135M in bf16, 202 MiB, as much
as ~300 tokens' activations). Such a layer now makes the cast itself, remembered as a recipe of the
fp32 weight, which stays anyway: backward makes it again, once per layer, when it needs it.

Off under gradient checkpointing, whose own hooks recompute whole layers; with
`train.checkpoint_above_tokens` (models/partial_checkpoint.py) a layer that runs checkpointed in a
pass goes without these hooks in that pass.
"""

import functools
import types
import weakref

import torch
import torch.utils.checkpoint

_recipes: dict[int, "_Recipe"] = {}  # data pointer of an output's storage -> how to make it again


class _Recipe:
    """out = fn(*inputs), inputs being tensors (kept) or other recipes, run under the autocast state of its forward."""

    def __init__(self, out: torch.Tensor, fn, inputs: tuple):
        self.fn, self.inputs, self.dtype, self.version = fn, inputs, out.dtype, out._version
        self.device = out.device.type
        self.autocast = (torch.is_autocast_enabled(self.device), torch.get_autocast_dtype(self.device))
        self.value, self.uses = None, 0
        key = out.untyped_storage().data_ptr()
        self.out = weakref.ref(out, functools.partial(_forget, key))  # no reference back to the recipe: no cycle
        _recipes[key] = self

    def make(self) -> torch.Tensor:
        args = [a.make() if isinstance(a, _Recipe) else a for a in self.inputs]
        enabled, dtype = self.autocast
        with torch.no_grad(), torch.autocast(self.device, dtype=dtype, enabled=enabled):
            return self.fn(*args)


def _forget(key: int, dead: weakref.ref) -> None:
    """`out` is gone: drop its entry (unless the storage has a newer recipe by now)."""
    recipe = _recipes.get(key)
    if recipe is not None and recipe.out is dead:
        del _recipes[key]


def remember(out: torch.Tensor, fn, *inputs) -> torch.Tensor:
    """Record that `out` is `fn(*inputs)`, so a layer that saves it for backward keeps the recipe instead.
    An input may itself be an output remembered here (made again first). Returns `out`."""
    if (torch.is_grad_enabled() and out.layout == torch.strided and out.numel()  # empty ones share data pointer 0
            and out.is_contiguous() and out.storage_offset() == 0):
        _Recipe(out, fn, tuple(recipe_of(a) or a for a in inputs))
    return out


def recipe_of(t: torch.Tensor) -> "_Recipe | None":
    """The live recipe of `t`'s storage, if `t` (or the tensor it views) was remembered."""
    if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
        return None
    recipe = _recipes.get(t.untyped_storage().data_ptr())
    if recipe is None or recipe.out() is None or recipe.dtype != t.dtype or recipe.version != t._version:
        return None  # not remembered, gone, or changed in place since (views share the version counter)
    return recipe


def _pack(t: torch.Tensor):
    recipe = recipe_of(t)
    if recipe is None:
        return t
    recipe.uses += 1
    return recipe, t.size(), t.stride(), t.storage_offset()


def _unpack(packed):
    if isinstance(packed, torch.Tensor):
        return packed
    recipe, size, stride, offset = packed
    if recipe.value is None:  # a tensor several layers saved (a norm output) is made once per backward
        recipe.value = recipe.make()
    value = recipe.value
    recipe.uses -= 1
    if recipe.uses <= 0:
        recipe.value = None
    return value.as_strided(size, stride, offset)


def _layer_forward(self, *args, **kwargs):
    if not torch.is_grad_enabled() or (self.training and getattr(self, "gradient_checkpointing", False)):
        return self._unitune_forward(*args, **kwargs)  # a checkpointed layer keeps only its input anyway
    with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
        return self._unitune_forward(*args, **kwargs)


def _norm_hook(module, args, out):
    if isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
        remember(out, module.forward, args[0])


def _norm_forward(self, hidden_states):
    """A norm with a trained weight: its own forward, with what it saves made again in backward."""
    if not (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters(recurse=False))):
        return self._unitune_forward(hidden_states)
    return torch.utils.checkpoint.checkpoint(self._unitune_forward, hidden_states, use_reentrant=False)


def cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`x` in `dtype`: the recipe of a cast (a weight's here, a norm output's in unitune.models.shared_cast)."""
    return x.to(dtype)


def _linear_forward(self, x):
    """A linear layer with an fp32 weight under autocast: the cast autocast would make of the weight
    (the same `to`, so the same bits, and the same cast back of its gradient), remembered so that
    what the matmul saves is the recipe, not the copy."""
    weight, device = self.weight, self.weight.device.type
    if not (weight.dtype == torch.float32 and torch.is_autocast_enabled(device) and torch.is_grad_enabled()):
        return self._unitune_forward(x)  # (a LoRA base stored in bf16 needs no cast)
    dtype = torch.get_autocast_dtype(device)
    return torch.nn.functional.linear(x, remember(cast(weight, dtype), cast, weight, dtype), self.bias)


def recompute_inputs(model) -> int:
    """Swap the norm outputs, MLP products and weight casts that `model`'s decoder layers save for
    their recipes, and checkpoint the norms whose weight trains (in place; the MLP product is
    remembered by unitune.models.swiglu); the number of layers."""
    count = 0
    for layer in model.modules():
        if not type(layer).__name__.endswith("DecoderLayer") or "_unitune_forward" in vars(layer):
            continue
        layer._unitune_forward = layer.forward
        layer.forward = types.MethodType(_layer_forward, layer)
        for name, module in layer.named_modules():
            if type(module).__name__.endswith("RMSNorm"):
                module.register_forward_hook(_norm_hook)
                module._unitune_forward = module.forward
                module.forward = types.MethodType(_norm_forward, module)
            # full fine-tuning's weights; a LoRA adapter's cast is r rows, not worth a recipe
            elif type(module) is torch.nn.Linear and "lora_" not in name:
                module._unitune_forward = module.forward
                module.forward = types.MethodType(_linear_forward, module)
        count += 1
    return count
