"""The optimizer: fused AdamW where torch has it, with the numbers of torch's reference loop; Adafactor as the
HF Trainer builds it, with a state a fraction of AdamW's."""

from types import SimpleNamespace

import pytest
import torch

from unitune.train.optim import build_optimizer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_adamw_matches_the_loop(dtype):
    cfg = SimpleNamespace(optimizer="adamw", lr=1e-2, weight_decay=0.1, adam_betas=[0.9, 0.99])
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


def _state_bytes(optimizer) -> int:
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
               if torch.is_tensor(t))


def test_adafactor_is_the_hf_trainers_with_a_fraction_of_adamws_state(tmp_path):
    """train.optimizer adafactor steps as the HF Trainer's optim="adafactor" (TRL, ms-swift and LLaMA-Factory
    build theirs so), weight decay on matrices only; its state is rows + columns where AdamW's is 2x the weights."""
    from transformers import Trainer, TrainingArguments

    cfg = SimpleNamespace(optimizer="adafactor", lr=1e-2, weight_decay=0.1, adam_betas=[0.9, 0.999])
    torch.manual_seed(0)
    ours_model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 32))
    hf_model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 32))
    adamw_model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 32))
    hf_model.load_state_dict(ours_model.state_dict())
    adamw_model.load_state_dict(ours_model.state_dict())
    ours = build_optimizer(ours_model, cfg)
    adamw = build_optimizer(adamw_model, SimpleNamespace(**{**vars(cfg), "optimizer": "adamw"}))
    args = TrainingArguments(output_dir=str(tmp_path), optim="adafactor", learning_rate=1e-2, weight_decay=0.1,
                             report_to=[], use_cpu=True)
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    hf = cls([{"params": [p for p in hf_model.parameters() if p.ndim >= 2], "weight_decay": 0.1},
              {"params": [p for p in hf_model.parameters() if p.ndim < 2], "weight_decay": 0.0}], **kwargs)
    for step in range(5):
        x = torch.randn(4, 8, generator=torch.Generator().manual_seed(step))
        for model, opt in ((ours_model, ours), (hf_model, hf), (adamw_model, adamw)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    assert type(ours) is cls
    for (name, a), b, c in zip(ours_model.named_parameters(), hf_model.parameters(), adamw_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
        assert not torch.allclose(a, c), name  # a different optimizer: the test would notice AdamW
    weights = sum(p.numel() * p.element_size() for p in ours_model.parameters())
    assert _state_bytes(adamw) >= 2 * weights
    assert _state_bytes(ours) < 0.4 * weights  # 8x64 and 64x32 keep 72 and 96 floats; vectors keep their own size


def _run(tmp_path, name, **train):
    """Three steps of full fine-tuning of tiny-llama (tied embeddings) through the Python API; its losses,
    gradient norms and final weights."""
    import unitune
    from safetensors.torch import load_file
    from tests.e2e.helpers import chat_rows, metrics, write_jsonl

    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(12))
    out = tmp_path / name
    unitune.sft(model="tiny-llama", data={"train": [str(data)], "max_length": 64},
                train={"max_steps": 3, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.1, "max_grad_norm": 0.0,
                       "output_dir": str(out), "progress": False, "tensorboard": False, "plot": False, **train},
                **{"lora.enabled": False})
    rows = [r for r in metrics(out) if "loss" in r]
    return rows, load_file(str(out / "final" / "model.safetensors"))


@pytest.mark.parametrize("extra", [{}, {"gradient_checkpointing": True}, {"optimizer": "adafactor"}],
                         ids=["plain", "checkpointing", "adafactor"])
def test_optimizer_in_backward_trains_the_same_weights(tmp_path, extra):
    """train.optimizer_in_backward steps each parameter inside backward: the same losses, gradient norms and
    weights after three steps as the ordinary step after backward (no clipping in either)."""
    plain, w_plain = _run(tmp_path, "plain", **extra)
    fused, w_fused = _run(tmp_path, "fused", optimizer_in_backward=True, **extra)
    assert len(plain) == len(fused) == 3
    for a, b in zip(plain, fused):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert plain[0]["loss"] != pytest.approx(plain[-1]["loss"], rel=1e-3)  # the weights did move
    assert w_plain.keys() == w_fused.keys()
    for name in w_plain:
        torch.testing.assert_close(w_fused[name], w_plain[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("train, says", [
    ({}, "train.max_grad_norm 0"),  # the default clips at 1.0
    ({"max_grad_norm": 0.0, "grad_accum": 2}, "train.grad_accum 1"),
    ({"max_grad_norm": 0.0, "max_tokens_per_forward": 64}, "train.max_tokens_per_forward 0"),
])
def test_optimizer_in_backward_says_what_it_cannot_do(tmp_path, train, says):
    import unitune
    from tests.e2e.helpers import chat_rows, write_jsonl
    from unitune.errors import UnituneError

    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    with pytest.raises(UnituneError, match="train.optimizer_in_backward steps each parameter inside backward") as err:
        unitune.sft(model="tiny-llama", data={"train": [str(data)], "max_length": 64},
                    train={"max_steps": 1, "output_dir": str(tmp_path / "out"), "progress": False,
                           "tensorboard": False, "plot": False, "optimizer_in_backward": True, **train},
                    **{"lora.enabled": False})
    assert says in str(err.value)
