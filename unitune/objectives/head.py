"""The LM head at target positions only: every objective scores tokens through here.

    log p(y_t | h_t) = z_t[y_t] - logsumexp(z_t),     z_t = (W h_t + b) / T

The model returns its final hidden states (`logits_to_keep` empty, so no logits at all); the
head then runs only on the rows that are scored (assistant tokens for sft, completions for
dpo / kto / grpo), `CHUNK` rows at a time, so the [batch, length, vocab] logits tensor never
exists and prompt positions cost no head matmul.

Three ways through the head, the same numbers (tests/objectives/test_head.py):

- frozen head (LoRA; the usual case): the forward of one chunk also computes the gradient of
  each log-prob with respect to its hidden state,

      d log p(y_t) / d h_t = (onehot(y_t) - softmax(z_t)) W / T,

  keeps that [rows, hidden] tensor and frees the chunk's logits; backward only multiplies it
  by the incoming per-token gradient. No logits are kept and none are recomputed.
- trainable head (full fine-tuning): the weight's gradient needs every chunk's softmax times the
  incoming per-token gradient, known only in backward. Forward keeps only each row's logsumexp;
  backward makes each chunk's logits again, turns them into d loss / d z in place and adds that
  chunk's share into one weight-gradient buffer. One chunk of logits and the weight's gradient are
  all it holds (autograd through checkpointed chunks held the chunk's logits two or three times
  over, and a second weight-sized gradient per chunk before adding it: ~0.3 GiB for a 49k x 576
  head, at the top of full fine-tuning's step; BENCHMARKS.md).
- trainable head under a plain sum of -log p (the LM loss, `token_nll_sum`): d loss / d z is
  softmax - onehot for every row whatever comes after the sum, so forward makes the gradients
  itself, each chunk's logits once, and backward only scales them (the fused linear cross-entropy
  of Liger Kernel, on CPU and GPU alike).
"""

import torch
from torch.utils.checkpoint import checkpoint

CHUNK = 256  # rows of float32 logits at a time ([vocab, CHUNK]): 50 MB for a 49k vocabulary
WEIGHT_GRAD_ROWS = 4096  # vocabulary rows of a chunk's bf16 weight-gradient product at a time (`_add_weight_grad`)


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
    repeated for grouped-query attention (on GPUs transformers passes `enable_gqa` only without a
    mask; on CPU unitune's sdpa always does, models/attention.py): ~7% less attention time on CPU
    (BENCHMARKS.md).

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
    """Per row of `hidden` [n, hidden]: (log p(target) at `temperature` in at least float32, top-1 hit:
    the target's logit is a largest one, a tie for the top counting as a hit)."""
    trained = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    if not trained and type(head) is torch.nn.Linear:
        weight = _compute_dtype(head.weight)
        parts = [_softmax_(_logits(hidden[k:k + chunk], weight, head.bias, temperature), targets[k:k + chunk])[:2]
                 for k in range(0, hidden.shape[0], chunk)]
    elif not trained:
        parts = [_logps(head, hidden[k:k + chunk], targets[k:k + chunk], temperature)
                 for k in range(0, hidden.shape[0], chunk)]
    elif _frozen_linear(head):
        return _FrozenHeadLogps.apply(hidden, _compute_dtype(head.weight), head.bias, targets, temperature, chunk)
    elif type(head) is torch.nn.Linear and type(head.weight) is torch.nn.Parameter:
        return _TrainedHeadLogps.apply(hidden, head.weight, head.bias, targets, temperature, chunk)
    else:  # another head module (a wrapped or sharded one): autograd through checkpointed chunks
        parts = [checkpoint(_logps, head, hidden[k:k + chunk], targets[k:k + chunk], temperature,
                            use_reentrant=False) for k in range(0, hidden.shape[0], chunk)]
    if not parts:  # nothing to score: an empty result that still reaches every parameter
        return hidden.sum(-1) * 0.0, torch.zeros(0, dtype=torch.bool, device=hidden.device)
    return torch.cat([p for p, _ in parts]), torch.cat([h for _, h in parts])


def token_nll_sum(head, hidden: torch.Tensor, targets: torch.Tensor, *,
                  chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(the sum over rows of `hidden` [n, hidden] of -log p(target), top-1 hits): the LM loss's sum.

    Through a trainable linear head (full fine-tuning) its gradients are made in forward: every row
    enters the sum with weight 1, so d sum / d z is softmax - onehot for every row before backward
    starts, and each chunk's logits are made once, where `token_logps` makes them again in backward
    (one product of the head's four a chunk). Any other head goes through `token_logps`."""
    if (torch.is_grad_enabled() and hidden.shape[0] and type(head) is torch.nn.Linear
            and type(head.weight) is torch.nn.Parameter and not _frozen_linear(head)):
        return _TrainedHeadNLLSum.apply(hidden, head.weight, head.bias, targets, chunk)
    logps, hits = token_logps(head, hidden, targets, chunk=chunk)
    return -logps.sum(), hits


def _logps(head, hidden, targets, temperature):
    """Through any head module, differentiable by autograd (checkpointed chunks)."""
    z = _scaled(head(hidden), temperature)
    picked = z.gather(-1, targets[:, None]).squeeze(-1)
    return picked - z.logsumexp(-1), picked.detach() >= z.detach().amax(-1)


def _logits(hidden, weight, bias, temperature: float) -> torch.Tensor:
    """One chunk's logits / T, laid out [vocab, rows], in at least float32, a tensor of its own (so it
    can be changed in place).

    Vocabulary-major because that product runs faster on CPU: W [vocab, hidden] times the chunk's
    hidden states transposed, rather than the states times W transposed (a 256-row chunk of a 49k x
    576 head, logits to d logp / d h: 288-326 against 302-367 ms, 2 cores). The softmax then reduces
    over dimension 0, and the top-1 hit is read off the softmax's max, not an argmax (which costs
    ~8x the max over that dimension). Through `token_logps`, forward and backward over 1,024 rows:
    frozen head -15 to -25%, trained head -10 to -15% (`bench/head_layout.py --baseline`, BENCHMARKS.md)."""
    z = torch.mm(weight, hidden.T) if bias is None else torch.addmm(bias[:, None], weight, hidden.T)
    if z.dtype in (torch.bfloat16, torch.float16):
        z = z.float()
    return z.div_(temperature) if temperature != 1.0 else z


def _softmax_(z: torch.Tensor, targets: torch.Tensor):
    """(log p(target), top-1 hit, logsumexp, sum of exp(z - max)) of a chunk's [vocab, rows] logits `z`,
    leaving exp(z - max) in `z`: the chunk's one [vocab, rows] buffer is all it takes (`logsumexp`
    would allocate a second one for its exponentials)."""
    picked = z.gather(0, targets[None, :]).squeeze(0)
    top = z.amax(0)
    hits = picked >= top  # the target is a largest logit (argmax over dimension 0 would cost ~8x the softmax's max)
    sums = z.sub_(top).exp_().sum(0)
    lse = top + sums.log()
    return picked - lse, hits, lse, sums


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if logits.dtype in (torch.bfloat16, torch.float16):  # the softmax in float32
        logits = logits.float()
    return logits / temperature if temperature != 1.0 else logits


def _compute_dtype(weight: torch.Tensor) -> torch.Tensor:
    """A frozen head weight in the dtype autocast computes it in, cast once for all chunks: autocast
    caches casts only of weights that require grad, so it cast this one at every use, twice a
    chunk (6% of a bf16 LoRA step for a 49k x 576 head). The same numbers."""
    device = weight.device.type
    if torch.is_autocast_enabled(device) and _autocast_casts(weight) and not weight.requires_grad:
        return weight.to(torch.get_autocast_dtype(device))
    return weight


def _autocast_casts(tensor: torch.Tensor) -> bool:
    """Whether autocast would cast `tensor` for a matmul: floating point, but not float64, which it leaves be."""
    return tensor.is_floating_point() and tensor.dtype != torch.float64


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
            z = _logits(hidden[k:k + chunk], weight, bias, temperature)
            logps[k:k + chunk], hits[k:k + chunk], _, sums = _softmax_(z, y)
            p = z.div_(sums)  # softmax, in place of the logits
            p[y, rows[:len(y)]] -= 1.0  # softmax - onehot = -T d logp / d z
            grad[k:k + chunk] = torch.mm(p.to(weight.dtype).T, weight).to(hidden.dtype) / -temperature
            del z, p  # before the next chunk's logits exist
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(hits)
        return logps, hits

    @staticmethod
    def backward(ctx, grad_logps, _grad_hits):
        (grad,) = ctx.saved_tensors
        return grad * grad_logps[:, None].to(grad.dtype), None, None, None, None, None


class _TrainedHeadLogps(torch.autograd.Function):
    """Log-probs through a trainable linear head: logits made chunk by chunk in forward and again in backward.

    Under autocast the matmuls run in its dtype, as autograd through `F.linear` would, with the weight
    cast once a pass; the weight's and bias's gradients are summed over the chunks in their own dtype."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk):
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None  # compute dtype
        n, w, b = hidden.shape[0], _to(weight, dtype), _to(bias, dtype)
        logps = hidden.new_empty(n, dtype=torch.promote_types(hidden.dtype, torch.float32))
        lse = torch.empty_like(logps)
        hits = torch.empty(n, dtype=torch.bool, device=hidden.device)
        for k in range(0, n, chunk):
            z = _logits(_to(hidden[k:k + chunk], dtype), w, b, temperature)
            logps[k:k + chunk], hits[k:k + chunk], lse[k:k + chunk], _ = _softmax_(z, targets[k:k + chunk])
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.temperature, ctx.chunk, ctx.dtype = temperature, chunk, dtype
        ctx.mark_non_differentiable(hits)
        return logps, hits

    @staticmethod
    def backward(ctx, grad_logps, _grad_hits):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        temperature, chunk, dtype, n = ctx.temperature, ctx.chunk, ctx.dtype, hidden.shape[0]
        want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
        with torch.autocast(hidden.device.type, enabled=False):  # forward's dtype, whatever surrounds backward
            w, b, h_all = _to(weight, dtype), _to(bias, dtype), _to(hidden, dtype)
            grad_hidden = torch.empty_like(hidden) if want_hidden else None
            grad_weight = None
            grad_bias = torch.zeros_like(bias) if want_bias else None
            rows = torch.arange(min(n, chunk), device=hidden.device)
            for k in range(0, n, chunk):
                y, h = targets[k:k + chunk], h_all[k:k + chunk]
                g = _logits(h, w, b, temperature).sub_(lse[k:k + chunk]).exp_()  # softmax, in place
                g[y, rows[:len(y)]] -= 1.0  # softmax - onehot = -T d logp / d z
                g.mul_((grad_logps[k:k + chunk] / -temperature).to(g.dtype))  # d loss / d (W h + b), [vocab, rows]
                g = g.to(w.dtype)
                if want_hidden:
                    grad_hidden[k:k + chunk] = (g.T @ w).to(hidden.dtype)
                if want_weight:
                    grad_weight = _add_weight_grad(grad_weight, g, h, weight.dtype)
                if want_bias:
                    grad_bias.add_(g.sum(1))
                del g  # before the next chunk's logits exist
            if want_weight and grad_weight is None:  # no rows: a zero gradient still reaches the weight
                grad_weight = torch.zeros_like(weight)
        return grad_hidden, grad_weight, grad_bias, None, None, None


class _TrainedHeadNLLSum(torch.autograd.Function):
    """sum of -log p(target) through a trainable linear head, with its gradients made in forward.

    Per chunk, as `_TrainedHeadLogps.backward` does it but once: the logits, the softmax in place,
    minus the one-hot (d sum / d z), then d sum / d hidden and the chunk's share of the weight's and
    bias's gradients. Forward ends holding those gradients (the weight's is the one weight-sized
    tensor, which the per-token path allocates at the start of backward instead: the same peak);
    backward scales them by the incoming scalar gradient, the weight's in place."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None  # compute dtype
        want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
        n = hidden.shape[0]
        with torch.autocast(device, enabled=False):
            w, b = _to(weight, dtype), _to(bias, dtype)
            logps = hidden.new_empty(n, dtype=torch.promote_types(hidden.dtype, torch.float32))
            hits = torch.empty(n, dtype=torch.bool, device=hidden.device)
            grad_hidden = torch.empty_like(hidden) if want_hidden else None
            grad_weight = None
            grad_bias = torch.zeros_like(bias) if want_bias else None
            rows = torch.arange(min(n, chunk), device=hidden.device)
            for k in range(0, n, chunk):
                y, h = targets[k:k + chunk], _to(hidden[k:k + chunk], dtype)
                z = _logits(h, w, b, 1.0)
                logps[k:k + chunk], hits[k:k + chunk], _, sums = _softmax_(z, y)
                g = z.div_(sums)  # softmax, in place of the logits
                g[y, rows[:len(y)]] -= 1.0  # softmax - onehot = d (-log p) / d z, [vocab, rows]
                g = g.to(w.dtype)
                if want_hidden:
                    grad_hidden[k:k + chunk] = (g.T @ w).to(hidden.dtype)
                if want_weight:
                    grad_weight = _add_weight_grad(grad_weight, g, h, weight.dtype)
                if want_bias:
                    grad_bias.add_(g.sum(1))
                del z, g  # before the next chunk's logits exist
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.mark_non_differentiable(hits)
        return -logps.sum(), hits

    @staticmethod
    def backward(ctx, grad_sum, _grad_hits):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_sum.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight.mul_(grad_sum.to(grad_weight.dtype))  # in place (a second backward through it is refused)
        if grad_bias is not None:
            grad_bias.mul_(grad_sum.to(grad_bias.dtype))
        return grad_hidden, grad_weight, grad_bias, None, None


def _add_weight_grad(grad_weight: torch.Tensor | None, g: torch.Tensor, h: torch.Tensor,
                     dtype: torch.dtype) -> torch.Tensor:
    """The weight's gradient summed over chunks in its own `dtype`, plus this chunk's g @ h.

    In `dtype` (fp32) the first chunk's product is the buffer and later ones are added by the product
    itself (no second weight-sized tensor). In a lower compute dtype (autocast), each chunk's share is
    made `WEIGHT_GRAD_ROWS` vocabulary rows at a time and added in `dtype`: a whole [vocab, hidden]
    bf16 product held its own 57 MB and 113 MB of oneDNN's float32 accumulator for a 49k x 576 head
    at once, the top of bf16 full fine-tuning's step (BENCHMARKS.md); a block holds a twelfth, at
    the same speed and the same numbers (each entry's sum over the chunk's rows is the same product)."""
    if g.dtype == dtype:
        return torch.mm(g, h) if grad_weight is None else grad_weight.addmm_(g, h)
    first = grad_weight is None
    if first:
        grad_weight = torch.empty(g.shape[0], h.shape[1], dtype=dtype, device=g.device)
    for v in range(0, g.shape[0], WEIGHT_GRAD_ROWS):
        part = torch.mm(g[v:v + WEIGHT_GRAD_ROWS], h)
        if first:
            grad_weight[v:v + WEIGHT_GRAD_ROWS].copy_(part)
        else:
            grad_weight[v:v + WEIGHT_GRAD_ROWS].add_(part)
    return grad_weight


def _to(tensor: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    """`tensor` in `dtype` (autocast's, what F.linear would compute in) where autocast would cast it."""
    if tensor is None or dtype is None or not _autocast_casts(tensor):
        return tensor
    return tensor.to(dtype)
