"""Norm outputs and SwiGLU products made again in backward (unitune/models/recompute.py): the same
gradients to the bit, and the tensors are no longer kept between forward and backward."""

import gc
import weakref

import pytest
import torch

from unitune.config import LoraConfig, TrainConfig
from unitune.models import recompute
from unitune.models.load import load_model
from unitune.models.lora import lower_frozen_base, prepare_for_training


def _model(lora: bool, recompute: bool, checkpointing: bool = False, autocast: bool = False):
    torch.manual_seed(0)
    model = load_model("tiny-llama")
    lora_cfg = LoraConfig(enabled=lora, r=4, alpha=8)
    train_cfg = TrainConfig(gradient_checkpointing=checkpointing, recompute_elementwise=recompute)
    model = prepare_for_training(model, lora_cfg, train_cfg)
    if lora and autocast:  # as training does under bf16 autocast: the frozen base stored in bf16
        lower_frozen_base(model, torch.bfloat16)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; make the adapters' gradients non-trivial
            p.data.normal_(0, 0.02)
    return model.train()


def _grads(model, ids, autocast: bool) -> dict:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora,autocast", [(True, False), (True, True), (False, False), (False, True)])
def test_gradients_are_bit_identical(lora, autocast):
    ids = torch.randint(0, 1000, (2, 24))
    want = _grads(_model(lora, recompute=False, autocast=autocast), ids, autocast)
    got = _grads(_model(lora, recompute=True, autocast=autocast), ids, autocast)
    assert want.keys() == got.keys() and want
    for name in want:
        assert torch.equal(got[name], want[name]), name


def _kept_after_forward(model, ids) -> dict:
    """Which norm outputs and MLP products are still alive between forward and backward."""
    refs = {"norm": [], "product": [], "gate": []}
    hooks = []
    for name, module in model.named_modules():
        if type(module).__name__.endswith("RMSNorm") and "layers." in name:
            hooks.append(module.register_forward_hook(lambda m, a, out: refs["norm"].append(weakref.ref(out))))
        if name.endswith("gate_proj"):
            hooks.append(module.register_forward_hook(lambda m, a, out: refs["gate"].append(weakref.ref(out))))
        if name.endswith("down_proj"):
            hooks.append(module.register_forward_pre_hook(
                lambda m, args: refs["product"].append(weakref.ref(args[0]))))
    gc.disable()  # what is freed must be freed by reference counting, as in a training step
    try:
        loss = model(input_ids=ids, labels=ids).loss
        kept = {k: sum(r() is not None for r in v) for k, v in refs.items()}
        loss.backward()  # still works with the tensors gone
        del loss
        assert not recompute._recipes  # nothing outlives the step: no entries, no recipe keeping its inputs
        assert not any(r() for v in refs.values() for r in v)
    finally:
        gc.enable()
    for h in hooks:
        h.remove()
    return {k: kept[k] for k in ("norm", "product")}, len(refs["norm"]) + len(refs["product"])


@pytest.mark.parametrize("lora", [True, False])
def test_norm_outputs_and_products_are_not_kept_for_backward(lora):
    ids = torch.randint(0, 1000, (2, 24))
    kept, seen = _kept_after_forward(_model(lora, recompute=False), ids)
    assert seen == 3 * 2 and kept == {"norm": 4, "product": 2}  # 2 layers: 2 norms and 1 product each
    kept, _ = _kept_after_forward(_model(lora, recompute=True), ids)
    assert kept == {"norm": 0, "product": 0}


def test_off_under_gradient_checkpointing():
    model = _model(True, recompute=True, checkpointing=True)
    assert not any("_unitune_forward" in vars(m) for m in model.modules())


def test_a_tensor_changed_in_place_is_kept_as_it_is():
    x = torch.randn(4, 8, requires_grad=True)
    out = recompute.remember(torch.tanh(x), torch.tanh, x)
    assert recompute.recipe_of(out[1:]) is not None  # a view of it
    out.mul_(2)  # the recipe would now make the wrong values
    assert recompute.recipe_of(out) is None and recompute.recipe_of(out[1:]) is None


def _kept_bytes(model, ids, monkeypatch) -> int:
    """Bytes of the distinct non-parameter tensors the decoder layers keep between forward and backward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        packed = real_pack(t)
        if packed is t and t.untyped_storage().data_ptr() not in params:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return packed

    real_pack = recompute._pack
    monkeypatch.setattr(recompute, "_pack", pack)
    model(input_ids=ids, labels=ids).loss.backward()
    return sum(kept.values())


def test_a_trained_norm_weight_costs_no_kept_activations(monkeypatch):
    """A norm whose weight trains would also keep its normalised input for the weight's gradient (one
    [tokens, hidden] tensor a norm), unless it runs checkpointed, keeping only its input."""
    ids = torch.randint(0, 1000, (2, 24))
    trained = _kept_bytes(_model(False, recompute=True), ids, monkeypatch)
    model = _model(False, recompute=True)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.requires_grad_(False)
    assert 0 < trained <= _kept_bytes(model, ids, monkeypatch)


def test_weight_casts_under_autocast_are_made_again_not_kept(monkeypatch):
    """Full fine-tuning under bf16 autocast: the bf16 copy of each decoder weight that a matmul saves
    for backward is a recipe of the fp32 weight, not a kept tensor (the gradients: the test above)."""
    model = _model(False, recompute=True)
    weights = [m.weight for n, m in model.named_modules() if type(m) is torch.nn.Linear and ".layers." in n]
    kept, remade = [], []

    def pack(t):
        packed = real_pack(t)
        (kept if packed is t else remade).append(t)
        return packed

    def is_cast(t):
        flat = torch.empty(0, dtype=t.dtype).set_(t.untyped_storage())
        return t.dtype == torch.bfloat16 and any(
            flat.numel() == w.numel() and torch.equal(flat, w.detach().to(torch.bfloat16).flatten()) for w in weights)

    real_pack = recompute._pack
    monkeypatch.setattr(recompute, "_pack", pack)
    ids = torch.randint(0, 1000, (2, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, labels=ids).loss.backward()
    assert len(weights) == 2 * 7
    assert sum(map(is_cast, remade)) == len(weights)  # each layer's cast saved once, as its recipe
    assert not any(map(is_cast, kept))
