"""Checkpoint only as many decoder layers as a pass needs: `train.checkpoint_above_tokens N`.

Without checkpointing, a pass keeps every decoder layer's activations for backward, in proportion to
its padded tokens T, so the longest batch of a run sets its memory peak; checkpointing every layer
keeps almost nothing but runs the whole forward twice. With N, a pass of T > N tokens runs its first

    k = ceil(L * (1 - N / T))

of the L decoder layers checkpointed: each keeps only its input and runs its forward again in
backward. The other L - k layers keep what they always do, and (L - k) * T <= L * N, so the pass
keeps about what an N-token pass keeps (plus the k layers' inputs, ~a tenth of what a layer keeps
for SmolLM2). A pass of at most N tokens runs as it would without this. The cost is the k layers'
second forward, in the long passes only, and the gradients are the same (tests/models/test_partial_checkpoint.py).

The layers' own flags (transformers' `gradient_checkpointing` on each decoder layer) are set by a
forward pre-hook on the decoder stack, from the pass's input, so every objective and every pass of
the loop gets it. Passes without gradients (a reference model's, a rollout's) checkpoint nothing.
"""

import math

import torch

from unitune.errors import UnituneError


def layers_to_checkpoint(tokens: int, budget: int, layers: int) -> int:
    """k: how many of `layers` decoder layers a pass of `tokens` padded tokens checkpoints under `budget`."""
    if budget <= 0 or tokens <= budget:
        return 0
    return min(layers, math.ceil(layers * (1 - budget / tokens)))


def checkpoint_above_tokens(model, budget: int) -> list:
    """Checkpoint, in every pass with gradients of more than `budget` padded tokens, the first decoder
    layers of `model` (a transformers causal LM, before peft wraps it), as many as the module docstring
    says; returns the decoder layers."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    if not isinstance(budget, int) or budget < 0:
        raise UnituneError(f"train.checkpoint_above_tokens must be 0 (off) or a positive number of tokens, got {budget!r}")
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = [m for m in decoder.modules() if isinstance(m, GradientCheckpointingLayer)] if decoder is not None else []
    if not layers:
        raise UnituneError(f"train.checkpoint_above_tokens {budget}: {type(model).__name__} has no decoder layers "
                           "that transformers can checkpoint; set it to 0, or use train.gradient_checkpointing true")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # the function
    for layer in layers:
        layer.gradient_checkpointing = False  # until a long pass sets it

    def before_pass(module, args, kwargs):
        if not torch.is_grad_enabled():  # nothing is kept, nothing checkpointed; the last pass's flags stay
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        shape = ids.shape if ids is not None else kwargs["inputs_embeds"].shape[:-1]
        k = layers_to_checkpoint(math.prod(shape), budget, len(layers))
        for i, layer in enumerate(layers):
            layer.gradient_checkpointing = i < k

    decoder.register_forward_pre_hook(before_pass, with_kwargs=True)
    return layers
