"""Direct preference optimisation and its family (OBJECTIVES.md §2), on one concatenated forward.

    s_w = log pi(y_w|x) - log pi_ref(y_w|x),  s_l the same for y_l   (token sums; pi_ref = 0 with ref.mode none)
    D = s_w - s_l,  a = log pi(y|x) / n  (per-token mean, n = completion tokens >= 1)

    sigmoid  -log sig(beta D)                                   DPO (Rafailov et al. 2023)
    hinge    max(0, 1 - beta D)                                 SLiC
    ipo      (s_w/n_w - s_l/n_l - 1/(2 beta))^2                 IPO, length-normalised as TRL
    robust   [-(1-e) log sig(beta D) + e log sig(-beta D)] / (1-2e)   rDPO, e = label_smoothing
    cpo      -log sig(beta (log pi(y_w) - log pi(y_l))) + NLL   CPO (TRL's cpo_alpha = 1)
    simpo    -log sig(beta (a_w - a_l) - gamma)                 SimPO as in the paper (no NLL; add sft)
    orpo     NLL - beta log sig(log-odds),  log-odds = (a_w - a_l) - (log(1-e^a_w) - log(1-e^a_l))
    sft      NLL = -(sum of chosen completion log-probs) / (chosen completion tokens)

    loss = sum_k w_k * mean over pairs of loss_k        (RPO = [sigmoid, sft] with weights [1, alpha])

cpo, simpo, orpo and sft need no reference model. The batch is one forward (and one
for the reference): B rows [common prefix | rest of chosen | rest of rejected], so the
prompt both sides repeat is computed once (`dpo.shared_prompt`, pairs.py), or with
`--dpo.shared_prompt false` 2B rows, the B chosen then the B rejected, right-padded.
Metrics as TRL names them: rewards/{chosen,rejected} = mean beta*s (beta*log pi for
cpo, beta*a for simpo and orpo), rewards/accuracies (strict >), rewards/margins,
logps/{chosen,rejected} (token sums).

Convention [C]: the NLL term is a token mean per micro-batch, weighted by its
pairs in the step (exactly TRL's value with one micro-batch per step).
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from unitune.data.collate import collate, takes_4d_mask
from unitune.errors import UnituneError, suggest
from unitune.objectives.pairs import (FitReport, check_config, common_prefix, fit_all, sequence_logps,
                                      shared_prefix_collate, side, split_ids, stack_ref)
from unitune.objectives.reference import Reference, disable_dropout, resolve_mode

LOSSES = {
    "sigmoid": lambda p: -F.logsigmoid(p.beta * p.delta),
    "hinge": lambda p: torch.relu(1 - p.beta * p.delta),
    "ipo": lambda p: (p.s_w / p.n_w - p.s_l / p.n_l - 1 / (2 * p.beta)) ** 2,
    "robust": lambda p: ((1 - p.eps) * -F.logsigmoid(p.beta * p.delta)
                         + p.eps * F.logsigmoid(-p.beta * p.delta)) / (1 - 2 * p.eps),
    "cpo": lambda p: -F.logsigmoid(p.beta * (p.logp_w - p.logp_l)) + p.nll,
    "simpo": lambda p: -F.logsigmoid(p.beta * (p.avg_w - p.avg_l) - p.gamma),
    "orpo": lambda p: p.nll - p.beta * F.logsigmoid(p.log_odds),
    "sft": lambda p: p.nll,
}
REFERENCE_FREE = {"cpo", "simpo", "orpo", "sft"}
REWARD = {"cpo": "sum", "simpo": "mean", "orpo": "mean"}  # what beta multiplies in rewards/* (else s)


class Pairs:
    """The per-pair quantities every loss is written in (tensors of shape [B])."""

    def __init__(self, logp_w, logp_l, ref_w, ref_l, n_w, n_l, beta, eps=0.0, gamma=0.0):
        self.logp_w, self.logp_l, self.beta, self.eps, self.gamma = logp_w, logp_l, beta, eps, gamma
        self.n_w, self.n_l = n_w.clamp(min=1).to(logp_w.dtype), n_l.clamp(min=1).to(logp_w.dtype)
        self.s_w, self.s_l = logp_w - ref_w, logp_l - ref_l
        self.delta = self.s_w - self.s_l
        self.avg_w, self.avg_l = logp_w / self.n_w, logp_l / self.n_l
        self.nll = (-logp_w.sum() / self.n_w.sum()).expand_as(logp_w)  # token mean over the micro-batch

    @property
    def log_odds(self):
        return (self.avg_w - self.avg_l) - (torch.log1p(-torch.exp(self.avg_w)) - torch.log1p(-torch.exp(self.avg_l)))


def dpo_loss(pairs: Pairs, losses: list[str], weights: list[float]) -> tuple[torch.Tensor, dict]:
    """(sum over pairs of the weighted loss, metric sums over pairs)."""
    total = sum(w * LOSSES[name](pairs) for name, w in zip(losses, weights))
    kind = next((REWARD.get(name, "ratio") for name in losses if name != "sft"), "ratio")
    with torch.no_grad():
        score_w, score_l = {"ratio": (pairs.s_w, pairs.s_l), "sum": (pairs.logp_w, pairs.logp_l),
                            "mean": (pairs.avg_w, pairs.avg_l)}[kind]
        r_w, r_l = pairs.beta * score_w, pairs.beta * score_l
        metrics = {"rewards/chosen": r_w.sum(), "rewards/rejected": r_l.sum(),
                   "rewards/accuracies": (r_w > r_l).sum(), "rewards/margins": (r_w - r_l).sum(),
                   "logps/chosen": pairs.logp_w.sum(), "logps/rejected": pairs.logp_l.sum()}
        if {"sft", "cpo", "orpo"} & set(losses):
            metrics["nll_loss"] = pairs.nll.sum()
    return total.sum(), metrics


class DPOObjective:
    name = "dpo"
    rows_independent = True  # the loss is a sum over rows: a micro-batch may run in parts

    def __init__(self, cfg, tokenizer):
        check_config(cfg, self.name)
        d = cfg.dpo
        unknown = [name for name in d.loss if name not in LOSSES]
        if unknown or not d.loss:
            bad = unknown[0] if unknown else ""
            raise UnituneError(f"dpo.loss: unknown loss '{bad}'{suggest(bad, LOSSES)}; known: {', '.join(LOSSES)}")
        if d.loss_weights and len(d.loss_weights) != len(d.loss):
            raise UnituneError(f"dpo.loss_weights has {len(d.loss_weights)} values for {len(d.loss)} losses")
        if not 0 <= d.label_smoothing < 0.5:
            raise UnituneError(f"dpo.label_smoothing must be in [0, 0.5), got {d.label_smoothing}")
        if d.beta <= 0:
            raise UnituneError(f"dpo.beta must be positive, got {d.beta}")
        self.cfg, self.tokenizer, self.losses = cfg, tokenizer, list(d.loss)
        self.weights = list(d.loss_weights) or [1.0] * len(d.loss)
        needed = any(name not in REFERENCE_FREE for name in d.loss)
        self.reference = Reference(resolve_mode(cfg.ref.mode, cfg.lora.enabled, needed), self.policy_logps)
        self.shared = d.shared_prompt and takes_4d_mask(cfg.model.attn_implementation)

    def rows(self, examples: list[dict], split: str) -> tuple[list, list[str]]:
        data, report, rows = self.cfg.data, FitReport("pairs"), []
        for ex in examples:
            sides = []
            for key in ("chosen", "rejected"):
                prompt, completion = split_ids(self.tokenizer, ex["prompt"], ex[key], self.tokenizer.chat_template,
                                               self.cfg.template.system)
                sides.append(side(prompt, completion))
            fitted = fit_all(report, sides, data.max_length, data.truncation)
            if fitted:
                rows.append({"chosen": fitted[0], "rejected": fitted[1]})
        notes = report.lines(split)
        if split == "train":
            notes.append(f"dpo: loss {' + '.join(f'{w:g}*{n}' for n, w in zip(self.losses, self.weights))}, "
                         f"beta {self.cfg.dpo.beta}, reference: {self.reference.mode}")
            if self.shared and rows:
                both = sum(self.length(r) for r in rows)
                once = sum(common_prefix(r["chosen"]["input_ids"], r["rejected"]["input_ids"]) for r in rows)
                notes.append(f"dpo: each pair's shared prompt computed once: {once / both:.0%} fewer tokens "
                             "through the model (--dpo.shared_prompt false: two rows per pair)")
        return rows, notes

    @staticmethod
    def length(row) -> int:
        return len(row["chosen"]["input_ids"]) + len(row["rejected"]["input_ids"])

    def collate(self, rows):
        if self.shared:
            batch = shared_prefix_collate([(r["chosen"], r["rejected"]) for r in rows], self.tokenizer.pad_token_id)
        else:
            batch = collate([[r["chosen"]] for r in rows] + [[r["rejected"]] for r in rows],
                            self.tokenizer.pad_token_id)
        return {**batch, **stack_ref(rows)}

    @staticmethod
    def count(batch) -> int:
        """Pairs: a shared row is one pair, else two rows are."""
        return batch["input_ids"].shape[0] // (1 if "score_at" in batch else 2)

    @staticmethod
    def policy_logps(model, batch) -> torch.Tensor:
        """[B, 2]: summed completion log-probs of (chosen, rejected)."""
        logps, _ = sequence_logps(model, batch)
        return torch.stack(logps.chunk(2), dim=1)

    def prepare(self, model, accelerator, rows, val_rows) -> None:
        disable_dropout(model)
        cache = Path(self.cfg.train.output_dir) / "ref_logps.pt"
        self.reference.prepare(model, accelerator, {"train": rows, "val": val_rows}, self.collate,
                               self.cfg.train.batch_size, cache, self.cfg.model.name)

    def loss(self, model, batch):
        ref = self.reference(model, batch)  # first: its forward's memory is free before the policy's graph exists
        logps, counts = sequence_logps(model, batch)
        logp_w, logp_l = logps.chunk(2)
        n_w, n_l = counts.chunk(2)
        ref_w, ref_l = (ref[:, 0], ref[:, 1]) if ref is not None else (torch.zeros_like(logp_w),) * 2
        d = self.cfg.dpo
        pairs = Pairs(logp_w, logp_l, ref_w, ref_l, n_w, n_l, d.beta, d.label_smoothing, d.gamma)
        return dpo_loss(pairs, self.losses, self.weights)
