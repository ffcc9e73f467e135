"""The reference model as a strategy, not a trainer (OBJECTIVES.md §2, "three modes").

    adapter     the LoRA base with the adapter switched off (peft's `disable_adapter`);
                exact, because a fresh LoRA adds zero. A no-grad forward every step.
    copy        a frozen copy of the model as it was before the first step.
    precompute  one no-grad pass over the train and val rows before training; each row
                keeps its reference log-probs. Cached in output_dir/ref_logps.pt and
                reused by a resumed or repeated run when the rows and the model match.
    none        no reference: log pi_ref = 0 (reference-free DPO; SimPO, CPO and ORPO
                never need one).
    auto        adapter with LoRA, precompute for full fine-tuning, none when no loss
                needs a reference.

An objective gives `compute(model, batch) -> [rows, k]` log-probs; the strategy decides
which network runs it, or reads the stored values from the batch (`batch["ref"]`).
All modes give the same numbers (tests/objectives/test_reference.py). Under DDP every
rank precomputes every row (simple; the pass is a fraction of one epoch).
"""

import copy
import hashlib
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from unitune.errors import UnituneError


def disable_dropout(model) -> None:
    """Dropout off (TRL's disable_dropout=True): the policy and its reference are the same function."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def resolve_mode(mode: str, lora: bool, needed: bool) -> str:
    if not needed:
        return "none"
    if mode == "auto":
        return "adapter" if lora else "precompute"
    if mode == "adapter" and not lora:
        raise UnituneError("ref.mode adapter needs LoRA (the reference is the base with the adapter off); "
                           "with full fine-tuning use ref.mode copy or precompute")
    return mode


class Reference:
    def __init__(self, mode: str, compute):
        self.mode, self.compute, self.frozen = mode, compute, None

    def __call__(self, model, batch: dict) -> torch.Tensor | None:
        if self.mode == "none":
            return None
        if "ref" in batch:
            return batch["ref"]
        if self.mode == "precompute":
            raise RuntimeError("ref.mode precompute: a batch without precomputed reference log-probs")
        with torch.no_grad():
            if self.mode == "copy":
                return self.compute(self.frozen, batch)
            net = getattr(model, "module", model)  # under DDP, the wrapped model
            with net.disable_adapter():
                return self.compute(net, batch)

    def prepare(self, model, accelerator, splits: dict[str, list[dict]], collate, batch_size: int,
                cache: Path | None = None, model_key: str = "") -> None:
        """Before training: freeze a copy, or precompute every row's reference log-probs."""
        if self.mode == "copy":
            self.frozen = copy.deepcopy(model).to(accelerator.device).eval().requires_grad_(False)
        elif self.mode == "precompute":
            self._precompute(model, accelerator, splits, collate, batch_size, cache, model_key)

    def _precompute(self, model, acc, splits, collate, batch_size, cache, model_key) -> None:
        from peft import PeftModel

        key = _key(splits, model_key)
        if cache is not None and cache.exists():
            saved = torch.load(cache, weights_only=True)
            if saved.get("key") == key:
                for name, rows in splits.items():
                    for row, values in zip(rows, saved[name]):
                        row["ref"] = values
                acc.print(f"unitune: ref: reference log-probs reused from {cache}")
                return
        started = time.perf_counter()
        net = model.to(acc.device)
        training = net.training
        net.eval()
        off = net.disable_adapter() if isinstance(net, PeftModel) else nullcontext()
        with torch.no_grad(), off, acc.autocast():
            for rows in splits.values():
                for k in range(0, len(rows), batch_size):
                    chunk = rows[k:k + batch_size]
                    batch = {n: v.to(acc.device) for n, v in collate(chunk).items()}
                    for row, values in zip(chunk, self.compute(net, batch).float().cpu().tolist()):
                        row["ref"] = values
        net.train(training)
        counts = ", ".join(f"{len(rows)} {name}" for name, rows in splits.items())
        acc.print(f"unitune: ref: precomputed reference log-probs for {counts} rows "
                  f"in {time.perf_counter() - started:.0f}s")
        if cache is not None and acc.is_main_process:
            tmp = cache.with_suffix(".tmp")
            torch.save({"key": key, **{n: [r["ref"] for r in rows] for n, rows in splits.items()}}, tmp)
            os.replace(tmp, cache)


def _key(splits: dict[str, list[dict]], model_key: str) -> str:
    h = hashlib.sha256(model_key.encode())
    for name, rows in splits.items():
        h.update(name.encode())
        for row in rows:
            h.update(json.dumps({k: v for k, v in row.items() if k != "ref"}, sort_keys=True).encode())
    return h.hexdigest()[:16]
