"""Kahneman-Tversky optimisation (OBJECTIVES.md §3) on unpaired, labelled completions.

    r    = log pi(y|x) - log pi_ref(y|x)                                   (token sums)
    z0   = max(0, mean_j [log pi(y'_j|x_j) - log pi_ref(y'_j|x_j)])         mismatched pairs, no gradient
    desirable    lambda_D * (1 - sig(beta (r - z0)))
    undesirable  lambda_U * (1 - sig(beta (z0 - r)))
    loss = mean over examples (divided by the example count, not by sum lambda)

`apo_zero_unpaired` drops z0: desirable 1 - sig(beta r), undesirable sig(beta r).

z0 is the mean over the micro-batch (and over ranks, in training) of the
log-ratios of mismatched pairs, then clamped at 0; it is computed under
no_grad, as in the paper. Convention [C]: each example's mismatched completion
y' is fixed when the rows are built (the next example's completion in a seeded
permutation of the split) rather than rotated within each batch as TRL does;
so z0 works at any batch size and precomputed reference log-probs cover it.

Metrics: `kl` (z0 after the clamp), rewards/{chosen,rejected} (mean beta*r over
desirable / undesirable examples), rewards/margins (their difference, per
micro-batch, when both are present), logps/{chosen,rejected}. A class balance
lambda_D*n_D / (lambda_U*n_U) outside [1, 4/3] (KTO paper, Eq. 8) is warned about.
"""

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from unitune.data.collate import collate
from unitune.errors import UnituneError
from unitune.objectives.pairs import FitReport, check_config, fit_all, sequence_logps, side, split_ids, stack_ref
from unitune.objectives.reference import Reference, disable_dropout, resolve_mode


def kto_loss(logp, ref, logp_kl, ref_kl, desirable, beta, lambda_d, lambda_u, loss_type="kto", reduce_kl=None):
    """(sum over examples of the weighted loss, metrics). `reduce_kl(sum, count)` -> global (sum, count)."""
    r = logp - ref
    if loss_type == "kto":
        with torch.no_grad():
            kl_sum = (logp_kl - ref_kl).sum()
            kl_n = torch.tensor(float(len(logp_kl)), dtype=logp.dtype, device=logp.device)
            if reduce_kl is not None:
                kl_sum, kl_n = reduce_kl(kl_sum, kl_n)
            z0 = (kl_sum / kl_n).clamp(min=0)
        good = lambda_d * (1 - torch.sigmoid(beta * (r - z0)))
        bad = lambda_u * (1 - torch.sigmoid(beta * (z0 - r)))
    elif loss_type == "apo_zero_unpaired":
        z0 = torch.zeros((), dtype=logp.dtype, device=logp.device)
        good, bad = 1 - torch.sigmoid(beta * r), torch.sigmoid(beta * r)
    else:
        raise UnituneError(f"kto.loss: unknown loss '{loss_type}' (kto, apo_zero_unpaired)")
    losses = torch.where(desirable, good, bad)
    with torch.no_grad():
        n_d, n_u = int(desirable.sum()), int((~desirable).sum())
        rewards = beta * r.detach()
        metrics = {"kl": (z0, 1),
                   "rewards/chosen": (rewards[desirable].sum(), n_d),
                   "rewards/rejected": (rewards[~desirable].sum(), n_u),
                   "logps/chosen": (logp[desirable].sum(), n_d), "logps/rejected": (logp[~desirable].sum(), n_u)}
        both = n_d > 0 and n_u > 0  # always the same keys on every rank (metrics are all-reduced by position)
        margin = rewards[desirable].mean() - rewards[~desirable].mean() if both else 0.0
        metrics["rewards/margins"] = (margin, int(both))
    return losses.sum(), metrics


class KTOObjective:
    name = "kto"

    def __init__(self, cfg, tokenizer):
        check_config(cfg, self.name)
        if cfg.kto.beta <= 0:
            raise UnituneError(f"kto.beta must be positive, got {cfg.kto.beta}")
        self.cfg, self.tokenizer = cfg, tokenizer
        self.reference = Reference(resolve_mode(cfg.ref.mode, cfg.lora.enabled, True), self.policy_logps)

    def rows(self, examples: list[dict], split: str) -> tuple[list, list[str]]:
        data, report, parts = self.cfg.data, FitReport("examples"), []
        for ex in examples:
            prompt, completion = split_ids(self.tokenizer, ex["prompt"], ex["completion"],
                                           self.tokenizer.chat_template, self.cfg.template.system)
            fitted = fit_all(report, [side(prompt, completion)], data.max_length, data.truncation)
            if fitted:
                parts.append((prompt, completion, bool(ex["label"]), fitted[0]))
        order = list(range(len(parts)))
        random.Random(self.cfg.train.seed).shuffle(order)
        partner = {order[k]: order[(k + 1) % len(order)] for k in range(len(order))}  # a derangement (n > 1)
        rows = []
        for i, (prompt, _, label, seq) in enumerate(parts):
            kl = report.fit(side(prompt, parts[partner[i]][1]), data.max_length, data.truncation)
            rows.append({"seq": seq, "kl": kl or seq, "label": label})  # kl: the prompt with another's completion
        notes = report.lines(split)
        if split == "train":
            notes += self._balance(rows)
        return rows, notes

    def _balance(self, rows) -> list[str]:
        k = self.cfg.kto
        n_d = sum(r["label"] for r in rows)
        n_u = len(rows) - n_d
        line = (f"kto: {n_d} desirable, {n_u} undesirable; lambda_D {k.desirable_weight:g}, "
                f"lambda_U {k.undesirable_weight:g}; reference: {self.reference.mode}")
        ratio = k.desirable_weight * n_d / (k.undesirable_weight * n_u) if n_u else float("inf")
        if not 1 <= ratio <= 4 / 3:
            line += (f"\nwarning: kto: lambda_D*n_D / (lambda_U*n_U) = {ratio:.3g}, outside the recommended [1, 4/3]; "
                     f"set kto.desirable_weight / kto.undesirable_weight to rebalance")
        if len(rows) < 2:
            line += "\nwarning: kto: one example: its mismatched pair is itself, so z0 equals its own reward"
        return line.split("\n")

    @staticmethod
    def length(row) -> int:
        return len(row["seq"]["input_ids"])

    def collate(self, rows):
        pad = self.tokenizer.pad_token_id
        main = collate([[r["seq"]] for r in rows], pad)
        kl = collate([[r["kl"]] for r in rows], pad)
        labels = torch.tensor([r["label"] for r in rows], dtype=torch.bool)
        return {**main, **{f"kl_{k}": v for k, v in kl.items() if k != "num_tokens"}, "label": labels,
                **stack_ref(rows)}

    @staticmethod
    def count(batch) -> int:
        return batch["input_ids"].shape[0]

    @staticmethod
    def policy_logps(model, batch) -> torch.Tensor:
        """[B, 2]: summed completion log-probs of (y, the mismatched y')."""
        main, _ = sequence_logps(model, batch)
        kl, _ = sequence_logps(model, {k[3:]: v for k, v in batch.items() if k.startswith("kl_")})
        return torch.stack([main, kl], dim=1)

    def prepare(self, model, accelerator, rows, val_rows) -> None:
        disable_dropout(model)
        self.reference.prepare(model, accelerator, {"train": rows, "val": val_rows}, self.collate,
                               self.cfg.train.batch_size, Path(self.cfg.train.output_dir) / "ref_logps.pt",
                               self.cfg.model.name)

    def loss(self, model, batch):
        # the no-grad forwards first: their memory is free before the policy's graph exists
        ref = self.reference(model, batch)
        logp_kl = None
        if self.cfg.kto.loss == "kto":
            with torch.no_grad():
                logp_kl, _ = sequence_logps(model, {k[3:]: v for k, v in batch.items() if k.startswith("kl_")})
        logp, _ = sequence_logps(model, batch)
        logp_kl = torch.zeros_like(logp) if logp_kl is None else logp_kl
        ref = ref.to(logp.dtype) if ref is not None else torch.zeros(len(logp), 2, dtype=logp.dtype, device=logp.device)
        k = self.cfg.kto
        return kto_loss(logp, ref[:, 0], logp_kl, ref[:, 1], batch["label"], k.beta, k.desirable_weight,
                        k.undesirable_weight, k.loss, _all_ranks if model.training else None)


def _all_ranks(total, count):
    """Sum (total, count) over data-parallel ranks (every rank runs the same number of train micro-batches)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return total, count
    both = torch.stack([total.detach().float(), count.float()])
    dist.all_reduce(both)
    return both[0].to(total.dtype), both[1].to(total.dtype)
