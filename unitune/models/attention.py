"""SDPA attention that hands grouped key/value heads to the kernel as they are on CPU.

A model with fewer key/value heads than query heads (grouped-query attention: Llama 3, Qwen2/3,
Mistral, SmolLM2's 3 for 9) has each key/value head serve a group of query heads. Given an
attention mask (any padded batch, and packed rows), transformers' `sdpa` copies every key/value
head once per query head of its group before calling `scaled_dot_product_attention`, because
CUDA's fast kernels take no mask together with `enable_gqa`. PyTorch's CPU flash-attention kernel
takes both, so on CPU the copies are pure cost: two tensors of query-head width per layer made in
forward and kept for backward (768 of the ~6,560 floats a token keeps per SmolLM2-135M layer in
fp32 training), and their gradients summed back in backward. The kernel's output is the same bits
(tests/models/test_attention.py); the key/value gradients are summed in another order (fp32
rounding). The passes with a mask are packed rows, DPO's and GRPO's shared-prefix rows and
left-padded prefills; right-padded SFT batches run without one (objectives/head.py::model_mask).
Measured with bench/attention_gqa.py: BENCHMARKS.md, performance-pass table.

Everything else (CUDA, no mask, one query token, where transformers already avoids the copies,
position biases, soft-capping) goes to transformers' own function unchanged.
"""

import torch.nn.functional as F
from transformers.integrations.sdpa_attention import sdpa_attention_forward


def grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' `sdpa` attention, with `enable_gqa` instead of copied key/value heads on CPU under a mask."""
    if (query.device.type != "cpu" or getattr(module, "num_key_value_groups", 1) == 1 or attention_mask is None
            or query.shape[2] == 1 or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None
            or kwargs.get("output_attentions")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling, enable_gqa=True)  # a mask given: never is_causal
    return out.transpose(1, 2).contiguous(), None


def use_grouped_sdpa() -> None:
    """Make `grouped_sdpa` what every model in this process runs as `sdpa` (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register("sdpa", grouped_sdpa)
