"""The LM head at target positions only: every objective scores tokens through here.

    log p(y_t | h_t) = z_t[y_t] - logsumexp(z_t),     z_t = (W h_t + b) / T

The model returns its final hidden states (`logits_to_keep` empty, so no logits at all); the
head then runs only on the rows that are scored (assistant tokens for sft, completions for
dpo / kto / grpo), `CHUNK` rows at a time, so the [batch, length, vocab] logits tensor never
exists and prompt positions cost no head matmul.

Two ways through the head, the same numbers (tests/objectives/test_head.py):

- frozen head (LoRA; the usual case): the forward of one chunk also computes the gradient of
  each log-prob with respect to its hidden state,

      d log p(y_t) / d h_t = (onehot(y_t) - softmax(z_t)) W / T,

  keeps that [rows, hidden] tensor and frees the chunk's logits; backward only multiplies it
  by the incoming per-token gradient. No logits are kept and none are recomputed.
- trainable head (full fine-tuning): each chunk is checkpointed (recomputed in backward),
  since the weight's gradient needs every chunk's softmax.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

CHUNK = 256  # rows of [CHUNK, vocab] float32 logits at a time: 50 MB for a 49k vocabulary


def final_hidden(model, batch) -> torch.Tensor:
    """[batch, length, hidden]: the last hidden states, after the final norm, without computing logits.

    The decoder stack is called itself where it can be, so the LM head is not run even on no rows:
    under autocast that still cast the whole head weight (49k x 576: 54 MiB held until backward).
    Through DDP the wrapper's own forward has to run, with `logits_to_keep` empty."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": model_mask(model, batch["attention_mask"]),
              "position_ids": batch["position_ids"]}
    decoder = _decoder(model)
    if decoder is not None:
        return decoder(**inputs).last_hidden_state
    out = model(**inputs, output_hidden_states=True,
                logits_to_keep=torch.empty(0, dtype=torch.long, device=batch["input_ids"].device))
    return out.hidden_states[-1]


def _decoder(model):
    """The causal LM's decoder stack (through peft), or None: wrapped in DDP, or no separate stack."""
    if hasattr(model, "module"):  # DDP: its forward prepares the gradient all-reduce
        return None
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else None
    return decoder if decoder is not lm else None


def model_mask(model, mask: torch.Tensor) -> torch.Tensor | None:
    """The mask as the model's attention takes it.

    Rows padded at the end only (a 2-D mask of ones then zeros) need none: under the causal mask a
    real token sees only the real tokens before it, and padding is never scored. Without a mask sdpa
    runs its causal kernel, with no [b, 1, q, k] mask built per layer and the key/value heads not
    repeated for grouped-query attention (transformers passes `enable_gqa` only without a mask):
    less kept for backward and ~7% less attention time on CPU (BENCHMARKS.md).

    A 4-D boolean mask (packed or shared-prefix rows): transformers passes it through untouched, and its
    eager attention *adds* it to the scores, so there it must be additive (0 where seen, the dtype's
    minimum elsewhere); sdpa takes it as it is."""
    config = getattr(getattr(model, "module", model), "config", None)
    attention = getattr(config, "_attn_implementation", None)
    if mask.dim() == 2 and attention in ("sdpa", "eager") and bool((mask[:, 1:] <= mask[:, :-1]).all()):
        return None
    if mask.dim() != 4 or mask.dtype != torch.bool or attention != "eager":
        return mask
    device = mask.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else next(model.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def output_head(model):
    """The LM head of a model, through DDP and peft wrappers."""
    return getattr(model, "module", model).get_output_embeddings()


def token_logps(head, hidden: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0,
                chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of `hidden` [n, hidden]: (log p(target) at `temperature` in at least float32, top-1 hit)."""
    if not (torch.is_grad_enabled() and hidden.requires_grad):
        weight = _compute_dtype(head.weight) if type(head) is torch.nn.Linear else None
        parts = [_logps(head, hidden[k:k + chunk], targets[k:k + chunk], temperature, weight)
                 for k in range(0, hidden.shape[0], chunk)]
    elif _frozen_linear(head):
        return _FrozenHeadLogps.apply(hidden, _compute_dtype(head.weight), head.bias, targets, temperature, chunk)
    else:
        parts = [checkpoint(_logps, head, hidden[k:k + chunk], targets[k:k + chunk], temperature,
                            use_reentrant=False) for k in range(0, hidden.shape[0], chunk)]
    if not parts:  # nothing to score: an empty result that still reaches every parameter
        return hidden.sum(-1) * 0.0, torch.zeros(0, dtype=torch.bool, device=hidden.device)
    return torch.cat([p for p, _ in parts]), torch.cat([h for _, h in parts])


def _logps(head, hidden, targets, temperature, weight=None):
    z = _scaled(head(hidden) if weight is None else F.linear(hidden, weight, head.bias), temperature)
    logps = z.gather(-1, targets[:, None]).squeeze(-1) - z.logsumexp(-1)
    return logps, (z.detach().argmax(-1) == targets)


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if logits.dtype in (torch.bfloat16, torch.float16):  # the softmax in float32
        logits = logits.float()
    return logits / temperature if temperature != 1.0 else logits


def _compute_dtype(weight: torch.Tensor) -> torch.Tensor:
    """A frozen head weight in the dtype autocast computes it in, cast once for all chunks: autocast
    caches casts only of weights that require grad, so it cast this one at every use, twice a
    chunk (6% of a bf16 LoRA step for a 49k x 576 head). The same numbers."""
    device = weight.device.type
    if torch.is_autocast_enabled(device) and weight.is_floating_point() and not weight.requires_grad:
        return weight.to(torch.get_autocast_dtype(device))
    return weight


def _frozen_linear(head) -> bool:
    return (type(head) is torch.nn.Linear and not head.weight.requires_grad
            and (head.bias is None or not head.bias.requires_grad))


class _FrozenHeadLogps(torch.autograd.Function):
    """Log-probs through a frozen linear head, with d logp / d hidden computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk):
        n = hidden.shape[0]
        logps = hidden.new_empty(n, dtype=torch.promote_types(hidden.dtype, torch.float32))
        hits = torch.empty(n, dtype=torch.bool, device=hidden.device)
        grad = torch.empty_like(hidden)
        rows = torch.arange(min(n, chunk), device=hidden.device)
        for k in range(0, n, chunk):
            y = targets[k:k + chunk]
            z = _scaled(F.linear(hidden[k:k + chunk], weight, bias), temperature)
            lse = z.logsumexp(-1)
            logps[k:k + chunk] = z.gather(-1, y[:, None]).squeeze(-1) - lse
            hits[k:k + chunk] = z.argmax(-1) == y
            p = z.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            p[rows[:len(y)], y] -= 1.0  # softmax - onehot = -T d logp / d z
            grad[k:k + chunk] = torch.matmul(p.to(weight.dtype), weight).to(hidden.dtype) / -temperature
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(hits)
        return logps, hits

    @staticmethod
    def backward(ctx, grad_logps, _grad_hits):
        (grad,) = ctx.saved_tensors
        return grad * grad_logps[:, None].to(grad.dtype), None, None, None, None, None
