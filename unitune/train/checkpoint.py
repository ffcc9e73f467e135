"""Checkpoints: everything needed to resume exactly, written atomically.

`checkpoints/step-N/` holds the trainable parameters (adapter or full weights,
as safetensors), the optimizer and scheduler states, every RNG state, and
`state.json` (step, data fingerprint). It is written to a temporary folder and
renamed into place, so a crash never leaves a half checkpoint; the oldest are
removed beyond `save_total_limit`.
"""

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from unitune.errors import UnituneError


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save(root: Path, step: int, model, optimizer, scheduler, state: dict, keep: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
    torch.save({"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
               tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if re.fullmatch(r"step-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def find(resume: str, root: Path) -> Path:
    if resume == "latest":
        found = list_checkpoints(root)
        if not found:
            raise UnituneError(f"train.resume=latest: no checkpoint in {root}")
        return found[-1]
    path = Path(resume)
    if not (path / "state.json").exists():
        raise UnituneError(f"train.resume: {resume} is not a checkpoint folder (no state.json)")
    return path


def load(path: Path, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG; return state.json."""
    weights = load_file(path / "trainable.safetensors")
    missing = set(weights) - {n for n, p in model.named_parameters() if p.requires_grad}
    if missing:
        raise UnituneError(f"checkpoint {path} does not match this model: {sorted(missing)[:3]} ...")
    model.load_state_dict(weights, strict=False)
    optim = torch.load(path / "optim.pt", weights_only=False)
    optimizer.load_state_dict(optim["optimizer"])
    scheduler.load_state_dict(optim["scheduler"])
    rng = torch.load(path / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    return json.loads((path / "state.json").read_text())
