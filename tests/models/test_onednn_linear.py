"""Decoder linears through oneDNN in fp32 CPU training passes (unitune/models/onednn_linear.py): the loss
and every gradient of `F.linear`'s to fp32 rounding, the same tensors kept for backward, and the plain
path wherever it does not apply."""

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.conftest import loss_and_grads, saved_bytes
from unitune.config import LoraConfig, TrainConfig
from unitune.errors import UnituneError
from unitune.models import onednn_linear
from unitune.models.load import load_model
from unitune.models.lora import prepare_for_training, use_onednn
from unitune.models.onednn_linear import available, use_onednn_linears

pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no oneDNN linear kernel")

IDS = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(3))


class _Ops(TorchDispatchMode):
    """Counts the oneDNN linears run inside it."""

    def __init__(self):
        super().__init__()
        self.onednn = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.mkldnn._linear_pointwise.default:
            self.onednn += 1
        return func(*args, **(kwargs or {}))


def _model(name: str, lora: bool, onednn: bool, **train):
    torch.manual_seed(0)
    model = prepare_for_training(load_model(name), LoraConfig(enabled=lora, r=4, alpha=8),
                                 TrainConfig(onednn_linears=onednn, **train))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:  # peft starts B at zero; make the adapters' gradients non-trivial
                p.normal_(0, 0.05)
    return model.train()


def _error(got, exact):
    return ((got - exact).abs().max() / exact.abs().max().clamp(min=1e-12)).item()


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])  # qwen2's q/k/v carry a bias
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["", "checkpointed"])
def test_the_loss_and_gradients_of_plain_linears(name, lora, checkpointing):
    """Both kernels against the float64 answer: oneDNN's error is fp32 rounding, as MKL's is. (Compared
    with each other directly, two summation orders may differ by more than either is off.)"""
    plain = _model(name, lora, onednn=False, gradient_checkpointing=checkpointing)
    fast = _model(name, lora, onednn=True, gradient_checkpointing=checkpointing)
    exact_loss, exact = loss_and_grads(copy.deepcopy(plain).double(), IDS)
    want_loss, want = loss_and_grads(plain, IDS)
    with _Ops() as ops:
        got_loss, got = loss_and_grads(fast, IDS)
    layers = len(fast.get_base_model().model.layers if lora else fast.model.layers)
    per_layer = 7 * (3 if lora else 1)  # q k v o gate up down; with LoRA each one's base, A and B
    # every forward (twice under checkpointing), and input and trained weights' gradients in backward
    assert ops.onednn > layers * per_layer * (2 if checkpointing else 1) + (0 if lora else layers * per_layer)
    assert got.keys() == want.keys() == exact.keys() and want
    assert _error(got_loss, exact_loss) < 1e-6
    for n in want:
        assert _error(got[n], exact[n]) < max(4 * _error(want[n], exact[n]), 1e-6), n


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_keeps_what_f_linear_keeps(lora):
    """A frozen base layer keeps no input, a trained one its input: the bytes of F.linear's backward."""
    plain, fast = _model("tiny-llama", lora, onednn=False), _model("tiny-llama", lora, onednn=True)
    assert saved_bytes(fast, IDS) == saved_bytes(plain, IDS)


def test_plain_linears_under_autocast_and_without_gradients():
    model = _model("tiny-llama", lora=True, onednn=True)
    with _Ops() as ops:
        loss_and_grads(model, IDS)
    assert ops.onednn > 0
    with _Ops() as ops:
        loss_and_grads(model, IDS, autocast=True)  # bf16 products reach oneDNN through autocast, not here
        with torch.no_grad():
            model(input_ids=IDS)
    assert ops.onednn == 0


def test_off_and_refused_settings():
    model = _model("tiny-llama", lora=False, onednn=False)
    assert not any("forward" in vars(m) and type(m) is torch.nn.Linear and m.forward.__func__.__module__
                   == "unitune.models.onednn_linear" for m in model.modules())
    with pytest.raises(UnituneError, match="train.onednn_linears true and train.compile true"):
        prepare_for_training(load_model("tiny-llama"), LoraConfig(enabled=False),
                             TrainConfig(onednn_linears=True, compile=True))


@pytest.mark.parametrize("faster", [True, False])
def test_auto_follows_where_the_kernel_was_measured_faster(monkeypatch, faster):
    """auto turns the linears on only on the CPUs where oneDNN beat MKL (AMD with AVX-512), never with
    compile; true turns them on anywhere the kernel exists."""
    monkeypatch.setattr(onednn_linear, "faster_here", lambda: faster)
    assert use_onednn(TrainConfig()) is faster
    assert use_onednn(TrainConfig(compile=True)) is False
    assert use_onednn(TrainConfig(onednn_linears=True)) is True
    assert use_onednn(TrainConfig(onednn_linears=False)) is False


def test_a_deep_copy_runs_on_its_own_weights():
    """A copied model (DPO's reference copy) computes with its own weights, not the original's."""
    torch.manual_seed(0)
    model = load_model("tiny-llama")
    use_onednn_linears(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in twin.named_parameters():
            if "proj" in name:
                p.mul_(-0.5)
    plain = load_model("tiny-llama")
    plain.load_state_dict(twin.state_dict())
    got, want = twin(input_ids=IDS).logits, plain(input_ids=IDS).logits
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, model(input_ids=IDS).logits, atol=1e-3)
