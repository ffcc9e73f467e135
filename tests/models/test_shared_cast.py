"""One autocast cast per tensor that feeds several linear layers (unitune/models/shared_cast.py): the
same loss and gradients bit for bit, fewer casts run and fewer copies kept for backward."""

import copy

import pytest
import torch

from tests.conftest import loss_and_grads, recording_casts, saved_bytes
from unitune.config import LoraConfig, TrainConfig
from unitune.models.load import load_model
from unitune.models.lora import lower_frozen_base, prepare_for_training
from unitune.models.shared_cast import share_input_casts


def with_lora(model):
    from peft import LoraConfig as PeftLora, get_peft_model

    model = get_peft_model(model, PeftLora(r=4, target_modules="all-linear"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


IDS = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(3))


CASES = [(kind, autocast) for kind in ("lora", "lora-lowered", "full", "full-checkpointed") for autocast in (False, True)
         if autocast or kind != "lora-lowered"]  # a base lowered to bf16 runs only under autocast


@pytest.mark.parametrize(("kind", "autocast"), CASES, ids=[f"{k}-{'bf16' if a else 'fp32'}" for k, a in CASES])
def test_the_same_loss_and_gradients_bit_for_bit(kind, autocast):
    torch.manual_seed(0)
    plain = load_model("tiny-llama")
    if kind.startswith("lora"):
        plain = with_lora(plain)
        if kind == "lora-lowered":
            lower_frozen_base(plain, torch.bfloat16)
    if kind == "full-checkpointed":
        plain.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    shared = copy.deepcopy(plain)
    assert share_input_casts(shared) > 0
    loss0, grads0 = loss_and_grads(plain, IDS, autocast)
    loss1, grads1 = loss_and_grads(shared, IDS, autocast)
    assert torch.equal(loss0, loss1)
    assert grads0.keys() == grads1.keys() and grads0
    assert all(torch.equal(grads0[n], grads1[n]) for n in grads0)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_each_norm_output_is_cast_and_kept_once(lora):
    plain = load_model("tiny-llama")
    if lora:
        plain = with_lora(plain)
        lower_frozen_base(plain, torch.bfloat16)
    shared = copy.deepcopy(plain)
    share_input_casts(shared)
    cfg = plain.config
    hidden = (*IDS.shape, cfg.hidden_size)

    def hidden_casts(model):
        with recording_casts() as mode, torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=IDS, labels=IDS)
        return sum(1 for shape, dtype in mode.casts if shape == hidden and dtype == torch.bfloat16)

    per_layer = 10 if lora else 5  # q, k, v, gate, up; with LoRA each also through lora_A
    assert hidden_casts(plain) >= cfg.num_hidden_layers * per_layer
    assert hidden_casts(shared) == hidden_casts(plain) - cfg.num_hidden_layers * (per_layer - 2)
    # kept for backward: five copies per layer before (LoRA's A or the trained weight needs each), two now
    copy_bytes = IDS.numel() * cfg.hidden_size * 2
    assert saved_bytes(plain, IDS, autocast=True) - saved_bytes(shared, IDS, autocast=True) == cfg.num_hidden_layers * 3 * copy_bytes


def test_without_autocast_nothing_changes():
    model = load_model("tiny-llama")
    share_input_casts(model)
    with recording_casts() as mode:
        model(input_ids=IDS)
    assert mode.casts == [] or all(dtype == torch.float32 for _, dtype in mode.casts)


def test_training_models_get_it_once():
    model = prepare_for_training(load_model("tiny-llama"), LoraConfig(r=4), TrainConfig())
    assert share_input_casts(model) == 0  # every linear layer has it already
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(getattr(m, "_unitune_shared_cast", False) for m in linears)
