"""Decoder layers compiled for training (unitune/models/compile.py): the eager loss and gradients up to the
compiler's fp32 rounding, eager passes where there are no gradients, the memory budget honoured, and the
settings it cannot go with refused."""

import copy

import pytest
import torch

from tests.conftest import loss_and_grads, saved_bytes
from unitune.config import LoraConfig, TrainConfig
from unitune.errors import UnituneError
from unitune.models.compile import check_compiler
from unitune.models.load import load_model
from unitune.models.lora import prepare_for_training


def graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.fixture()
def fresh_compiler():
    """Compiled code cached by an earlier test (another budget) is not reused."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def ids(rows: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(5, 500, (rows, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_the_eager_loss_and_gradients_over_two_lengths(lora, fresh_compiler):
    base = load_model("tiny-llama")
    lora_cfg = LoraConfig(enabled=lora, r=4)
    torch.manual_seed(0)  # the same LoRA initialisation for both
    eager = prepare_for_training(copy.deepcopy(base), lora_cfg, TrainConfig())
    torch.manual_seed(0)
    compiled = prepare_for_training(copy.deepcopy(base), lora_cfg, TrainConfig(compile=True))
    if lora:
        with torch.no_grad():
            for model in (eager, compiled):
                for n, p in model.named_parameters():
                    if "lora_B" in n:
                        p.copy_(torch.full_like(p, 0.01))
    eager.train(), compiled.train()
    start = graphs()
    for batch in (ids(2, 16, 1), ids(3, 21, 2)):
        loss0, grads0 = loss_and_grads(eager, batch)
        loss1, grads1 = loss_and_grads(compiled, batch)
        torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=1e-6)
        assert grads0.keys() == grads1.keys() and grads0
        for n in grads0:
            torch.testing.assert_close(grads1[n], grads0[n], rtol=1e-4, atol=1e-6, msg=n)
    assert graphs() > start  # it did run compiled


def test_passes_without_gradients_run_as_they_are(fresh_compiler):
    base = load_model("tiny-llama")
    compiled = prepare_for_training(copy.deepcopy(base), LoraConfig(enabled=False), TrainConfig(compile=True))
    batch = ids(2, 12, 3)
    before = graphs()
    with torch.no_grad():
        assert torch.equal(compiled(input_ids=batch).logits, base(input_ids=batch).logits)
    compiled.eval()
    assert torch.equal(compiled(input_ids=batch).logits, base(input_ids=batch).logits)
    assert graphs() == before


def test_a_lower_memory_budget_keeps_less_for_backward(fresh_compiler):
    base = load_model("tiny-llama")
    batch = ids(4, 48, 4)
    kept = {}
    for budget in (1.0, 0.2):
        torch._dynamo.reset()
        model = prepare_for_training(copy.deepcopy(base), LoraConfig(enabled=False),
                                     TrainConfig(compile=True, compile_memory_budget=budget))
        model.train()
        model(input_ids=batch, labels=batch).loss.backward()  # compiles at this budget
        kept[budget] = saved_bytes(model, batch)
    assert kept[0.2] < kept[1.0]


@pytest.mark.parametrize("setting", [{"gradient_checkpointing": True}, {"checkpoint_above_tokens": 64},
                                     {"compile_memory_budget": 0.0}, {"compile_memory_budget": 1.5}])
def test_settings_it_cannot_go_with_are_refused(setting):
    with pytest.raises(UnituneError, match="compile"):
        prepare_for_training(load_model("tiny-llama"), LoraConfig(enabled=False), TrainConfig(compile=True, **setting))


def test_no_cpp_compiler_is_a_clear_error(monkeypatch):
    import torch._inductor.cpp_builder as builder

    def missing():
        raise RuntimeError("no working C++ compiler found in ('g++',)")

    monkeypatch.setattr(builder, "get_cpp_compiler", missing)
    with pytest.raises(UnituneError, match=r"needs a C\+\+ compiler .* apt install g\+\+"):
        check_compiler("cpu")
    check_compiler("cuda")  # not asked for there
