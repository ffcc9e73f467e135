"""The GRPO-family policy loss per token, and how a micro-batch's tokens add up (OBJECTIVES.md §5.2).

    rho_t = exp(l_t - l_old_t)                               importance_sampling_level token
    s_i   = exp(mean_t m (l_t - l_old_t)), broadcast         sequence (GSPO: length-normalised)
    S_i   = exp(sum_t m (l_t - l_old_t)), broadcast          sequence_sum (RLOO: the plain product)
    L_t   = -min(rho A, clip(rho, 1 - eps, 1 + eps_high) A) + beta KL_t
    KL_t  = exp(l_ref - l) - (l_ref - l) - 1                 (Schulman's k3; times rho with bias_correction_kl)

l_old = l.detach() when no old log-probs are given (on-policy: rho = 1, clipping inactive).
`delta` (INTELLECT-2) caps the unclipped rho. Clip metrics (TRL): low = rho < 1-eps with A < 0,
high = rho > 1+eps_high with A > 0, region = either; token means (sequence means for the
sequence levels).

Aggregations, as (sum, units) for the loop, which divides the step's sums by its units:

    grpo     sum_i [sum_t m L / sum_t m]        units: sequences           (per-sequence mean)
    bnpo     sum_t m L / sum_t m (micro-batch)  units: 1 per micro-batch   (so / GA; not GA-invariant)
    dr_grpo  sum_t m L / max_completion_length  units: sequences
    dapo     sum_t m L                          units: tokens of the step  (token mean)
"""

from typing import Callable, NamedTuple

import torch


class Aggregation(NamedTuple):
    total: Callable  # (per_token [N,T], mask [N,T], max_len) -> scalar
    units: Callable  # (mask) -> number


AGGREGATIONS: dict[str, Aggregation] = {
    "grpo": Aggregation(lambda L, m, _: ((L * m).sum(-1) / m.sum(-1).clamp(min=1)).sum(), lambda m: m.shape[0]),
    "bnpo": Aggregation(lambda L, m, _: (L * m).sum() / m.sum().clamp(min=1), lambda m: 1),
    "dr_grpo": Aggregation(lambda L, m, max_len: (L * m).sum() / max_len, lambda m: m.shape[0]),
    "dapo": Aggregation(lambda L, m, _: (L * m).sum(), lambda m: int(m.sum())),
}
LEVELS = ("token", "sequence", "sequence_sum")


def log_weights(logps, old_logps, mask, level: str) -> torch.Tensor:
    """log of the importance ratio, [N, T]."""
    log_ratio = logps - old_logps
    if level == "token":
        return log_ratio
    total = (log_ratio * mask).sum(-1, keepdim=True)
    if level == "sequence":
        return (total / mask.sum(-1, keepdim=True).clamp(min=1)).expand_as(logps)
    if level == "sequence_sum":
        return total.expand_as(logps)
    raise ValueError(f"importance_sampling_level must be one of {', '.join(LEVELS)}, not {level!r}")


def k3(logps, ref_logps) -> torch.Tensor:
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def policy_loss(logps, mask, advantages, *, old_logps=None, ref_logps=None, beta: float = 0.0,
                epsilon: float = 0.2, epsilon_high: float | None = None, level: str = "token",
                bias_correction_kl: bool = False, delta: float | None = None) -> tuple[torch.Tensor, dict]:
    """Per-token loss [N, T] and metric sums {name: (sum, count)} for the micro-batch."""
    eps_high = epsilon if epsilon_high is None else epsilon_high
    old = logps.detach() if old_logps is None else old_logps
    a = advantages if advantages.dim() == 2 else advantages[:, None].expand_as(logps)
    ratio = torch.exp(log_weights(logps, old, mask, level))
    clipped = ratio.clamp(1 - epsilon, 1 + eps_high)
    unclipped = ratio.clamp(max=delta) if delta is not None else ratio
    per_token = -torch.min(unclipped * a, clipped * a)
    metrics = {}
    if beta != 0 and ref_logps is not None:
        kl = k3(logps, ref_logps)
        if bias_correction_kl:
            kl = kl * ratio
        per_token = per_token + beta * kl
        metrics["kl"] = ((kl.detach() * mask).sum(), mask.sum())
    with torch.no_grad():
        low = ((ratio < 1 - epsilon) & (a < 0)).to(mask.dtype)
        high = ((ratio > 1 + eps_high) & (a > 0)).to(mask.dtype)
        if level == "token":
            w, n = mask, mask.sum()
        else:  # one value per sequence (TRL's masked_batch_mean of a [N, 1] tensor)
            w, n = torch.zeros_like(mask), mask.shape[0]
            w[:, 0] = 1
        metrics["clip_ratio/low_mean"] = ((low * w).sum(), n)
        metrics["clip_ratio/high_mean"] = ((high * w).sum(), n)
        metrics["clip_ratio/region_mean"] = (((low + high).clamp(max=1) * w).sum(), n)
    return per_token, metrics


def aggregate(loss_type: str, per_token, mask, max_len: int) -> tuple[torch.Tensor, int]:
    if loss_type not in AGGREGATIONS:
        raise ValueError(f"unknown loss_type {loss_type!r} (known: {', '.join(AGGREGATIONS)})")
    agg = AGGREGATIONS[loss_type]
    return agg.total(per_token, mask, max_len), agg.units(mask)
