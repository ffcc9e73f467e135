"""The optimizer: fused AdamW where torch has it, with the numbers of torch's reference loop."""

from types import SimpleNamespace

import pytest
import torch

from unitune.train.optim import build_optimizer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_adamw_matches_the_loop(dtype):
    cfg = SimpleNamespace(lr=1e-2, weight_decay=0.1, adam_betas=[0.9, 0.99])
    torch.manual_seed(0)
    fused_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3)).to(dtype)
    loop_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3)).to(dtype)
    loop_model.load_state_dict(fused_model.state_dict())
    fused = build_optimizer(fused_model, cfg)
    assert fused.defaults["fused"] is True
    groups = [{"params": [p for p in loop_model.parameters() if p.ndim >= 2], "weight_decay": 0.1},
              {"params": [p for p in loop_model.parameters() if p.ndim < 2], "weight_decay": 0.0}]
    loop = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.99), foreach=False)
    for step in range(5):
        x = torch.randn(4, 8, dtype=dtype, generator=torch.Generator().manual_seed(step))
        for model, opt in ((fused_model, fused), (loop_model, loop)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for (name, a), b in zip(fused_model.named_parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 if dtype == torch.float32 else 1e-12, msg=name)
