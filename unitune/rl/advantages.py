"""Advantage estimators: the rewards of G completions per prompt -> an advantage per completion token.

    grpo                   A_i = (R_i - mean_g R) / (std_g R + 1e-4)        (TRL; std unbiased, NaN-aware)
                           scale_rewards: group (above) | batch (group mean, std over the batch) | none (Dr. GRPO)
    rloo                   A_i = R_i - mean_{j != i} R_j  =  G/(G-1) (R_i - mean_g R)
    reinforce_pp           r_t = -beta k1_t (k1 = l_old - l_ref, clamped to +-10), plus R_i on the last token;
                           G_t = sum_{s >= t} r_s;  A_t = (G_t - mu) / sqrt(max(var, 1e-8))
                           with mu, var (population) over every valid token of the batch (OpenRLHF `reinforce`)
    reinforce_pp_baseline  R_i <- R_i - mean_g R, then the same whitening (OpenRLHF `reinforce_baseline`)

Groups are contiguous runs of G rows. A reward of NaN (no function scored the completion) gives
advantage 0. Estimators return [N, T] (constant over a sequence for the group estimators).
`allsum` sums a small tensor over data-parallel ranks (identity on one process), so batch
statistics are over the global batch while groups, which never span ranks, stay local.
KL folded into the reward (RLOO's sequence k1, REINFORCE++'s token k1) is `kl_reward` here;
KL as a loss term is in losses.py.
"""

from typing import Callable

import torch

EPS = 1e-4  # TRL's std epsilon
ESTIMATORS: dict[str, Callable] = {}


def estimator(name: str):
    def wrap(fn):
        ESTIMATORS[name] = fn
        return fn
    return wrap


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def group_stats(rewards: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row NaN-aware group mean and unbiased std (rows of one group share them)."""
    r = rewards.view(-1, group)
    valid = ~torch.isnan(r)
    n = valid.sum(-1, keepdim=True)
    mean = torch.where(valid, r, 0).sum(-1, keepdim=True) / n.clamp(min=1)
    var = torch.where(valid, (r - mean) ** 2, 0).sum(-1, keepdim=True) / (n - 1).clamp(min=1)
    std = torch.where(n > 1, var.sqrt(), torch.zeros_like(var))
    return mean.expand_as(r).reshape(-1), std.expand_as(r).reshape(-1)


def batch_std(rewards: torch.Tensor, allsum=_identity) -> torch.Tensor:
    """Unbiased std of every non-NaN reward of the (global) batch."""
    valid = ~torch.isnan(rewards)
    r = torch.where(valid, rewards, 0)
    n, s, s2 = allsum(torch.stack([valid.sum().to(r.dtype), r.sum(), (r * r).sum()]))
    var = (s2 - s * s / n.clamp(min=1)) / (n - 1).clamp(min=1)
    return var.clamp(min=0).sqrt()


def _per_token(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(a, nan=0.0)[:, None].expand_as(mask).clone()


@estimator("grpo")
def grpo(rewards, mask, *, group: int, scale_rewards: str = "group", allsum=_identity, **_) -> torch.Tensor:
    mean, std = group_stats(rewards, group)
    a = rewards - mean
    if scale_rewards == "group":
        a = a / (std + EPS)
    elif scale_rewards == "batch":
        a = a / (batch_std(rewards, allsum) + EPS)
    elif scale_rewards != "none":
        raise ValueError(f"scale_rewards must be group, batch or none, not {scale_rewards!r}")
    return _per_token(a, mask)


@estimator("rloo")
def rloo(rewards, mask, *, group: int, **_) -> torch.Tensor:
    """Leave-one-out baseline; NaN-aware: the baseline averages the other valid rewards of the group."""
    r = rewards.view(-1, group)
    valid = ~torch.isnan(r)
    total = torch.where(valid, r, 0).sum(-1, keepdim=True)
    others = (valid.sum(-1, keepdim=True) - valid.to(r.dtype)).clamp(min=1)
    a = torch.where(valid, r - (total - torch.where(valid, r, 0)) / others, torch.nan)
    return _per_token(a.reshape(-1), mask)


def whiten(values: torch.Tensor, mask: torch.Tensor, allsum=_identity) -> torch.Tensor:
    """(x - mean) / sqrt(max(var, 1e-8)) over valid tokens, population variance (OpenRLHF)."""
    m = mask.to(values.dtype)
    n, s = allsum(torch.stack([m.sum(), (values * m).sum()]))
    mean = s / n.clamp(min=1)
    var = allsum(((values - mean) ** 2 * m).sum()[None])[0] / n.clamp(min=1)
    return (values - mean) * var.clamp(min=1e-8).rsqrt() * m


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, token_kl: torch.Tensor | None, beta: float):
    """G_t = sum_{s>=t} r_s with r_t = -beta*k1_t and the sequence reward on its last valid token."""
    m = mask.to(torch.float64 if rewards.dtype == torch.float64 else torch.float32)
    r = torch.zeros_like(m)
    if token_kl is not None and beta:
        r = -beta * token_kl.clamp(-10, 10) * m
    last = (m.cumsum(-1) * m).argmax(-1)  # index of the last valid token
    has = m.sum(-1) > 0
    r[has, last[has]] += torch.nan_to_num(rewards, nan=0.0)[has].to(r.dtype)
    return (r.flip(-1).cumsum(-1).flip(-1)) * m


@estimator("reinforce_pp")
def reinforce_pp(rewards, mask, *, token_kl=None, beta: float = 0.0, allsum=_identity, **_) -> torch.Tensor:
    return whiten(returns_to_go(rewards, mask, token_kl, beta), mask, allsum)


@estimator("reinforce_pp_baseline")
def reinforce_pp_baseline(rewards, mask, *, group: int, token_kl=None, beta: float = 0.0, allsum=_identity,
                          **_) -> torch.Tensor:
    mean, _ = group_stats(rewards, group)
    return whiten(returns_to_go(rewards - mean, mask, token_kl, beta), mask, allsum)


def kl_reward(rewards: torch.Tensor, old_logps, ref_logps, mask, beta: float) -> torch.Tensor:
    """RLOO's reward shaping: R_i - beta * sum_t m (l_old - l_ref) (k1 of the sampling policy)."""
    return rewards - beta * ((old_logps - ref_logps) * mask).sum(-1)


def compute(name: str, rewards: torch.Tensor, mask: torch.Tensor, **kwargs) -> torch.Tensor:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r} (known: {', '.join(ESTIMATORS)})")
    return ESTIMATORS[name](rewards, mask, **kwargs)
