"""The SwiGLU MLP keeping gate and up only (unitune/models/swiglu.py): the same loss and gradients
bit for bit, one MLP-wide activation fewer kept for backward."""

import copy

import pytest
import torch

from tests.conftest import loss_and_grads, saved_bytes
from unitune.config import LoraConfig, TrainConfig
from unitune.models.load import load_model
from unitune.models.lora import prepare_for_training
from unitune.models.swiglu import fuse_swiglu


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_the_same_loss_and_gradients_bit_for_bit(lora, autocast):
    torch.manual_seed(0)
    plain = load_model("tiny-llama")
    if lora:
        from peft import LoraConfig as PeftLora, get_peft_model

        plain = get_peft_model(plain, PeftLora(r=4, target_modules="all-linear"))
        with torch.no_grad():
            for n, p in plain.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
    fused = copy.deepcopy(plain)
    assert fuse_swiglu(fused) == fused.config.num_hidden_layers
    ids = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(3))
    loss0, grads0 = loss_and_grads(plain, ids, autocast)
    loss1, grads1 = loss_and_grads(fused, ids, autocast)
    assert torch.equal(loss0, loss1)
    assert grads0.keys() == grads1.keys() and grads0
    assert all(torch.equal(grads0[n], grads1[n]) for n in grads0)


def test_one_mlp_wide_activation_fewer_is_kept():
    plain = load_model("tiny-llama")
    fused = copy.deepcopy(plain)
    fuse_swiglu(fused)
    ids = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(3))
    cfg = plain.config
    per_mlp = ids.numel() * cfg.intermediate_size * 4  # silu(gate) in fp32
    assert saved_bytes(plain, ids) - saved_bytes(fused, ids) == cfg.num_hidden_layers * per_mlp


def test_training_models_get_it_and_inference_is_unchanged():
    model = prepare_for_training(load_model("tiny-llama"), LoraConfig(r=4), TrainConfig())
    mlps = [m for m in model.modules() if type(m).__name__.endswith("MLP")]
    assert mlps and all("forward" in vars(m) for m in mlps)
    assert fuse_swiglu(model) == 0  # already done: not wrapped twice
    plain = load_model("tiny-llama")
    ids = torch.randint(0, 500, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model.get_base_model()(input_ids=ids).logits, plain(input_ids=ids).logits,
                                   rtol=0, atol=0)  # LoRA B starts at zero
