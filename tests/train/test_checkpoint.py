"""Checkpoints are atomic folders, the oldest beyond the limit are removed, and loading restores state."""

import torch

from unitune.train import checkpoint


def test_save_keeps_last_k_and_restores(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, model, opt, sched, {"fingerprint": "x"}, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-2", "step-3"]
    assert not list(tmp_path.glob(".step-*"))  # no temporary folder left behind
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    torch.nn.init.zeros_(model.weight)
    state = checkpoint.load(checkpoint.find("latest", tmp_path), model, opt, sched)
    assert state["step"] == 3 and state["fingerprint"] == "x"
    assert torch.equal(model.weight, saved["weight"])
