"""Checkpointing only the layers a long pass needs (unitune/models/partial_checkpoint.py,
`train.checkpoint_above_tokens`): how many layers, the same gradients, less kept for backward, and
short passes untouched."""


import gc
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from unitune.config import LoraConfig, TrainConfig
from unitune.errors import UnituneError
from unitune.models.lora import prepare_for_training
from unitune.models.partial_checkpoint import layers_to_checkpoint


def test_layers_to_checkpoint():
    assert layers_to_checkpoint(500, 0, 30) == 0  # off
    assert layers_to_checkpoint(800, 800, 30) == 0  # at the budget: as without
    assert layers_to_checkpoint(1000, 800, 30) == 6  # 24 layers x 1000 tokens <= 30 x 800
    assert layers_to_checkpoint(1600, 800, 30) == 15
    assert layers_to_checkpoint(801, 800, 30) == 1
    assert layers_to_checkpoint(10**6, 1, 30) == 30


def _model(budget: int, lora: bool = False, layers: int = 4, recompute: bool = True):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).to(torch.float64)
    lora_cfg = LoraConfig(enabled=lora, r=4, alpha=8)
    train_cfg = TrainConfig(checkpoint_above_tokens=budget, recompute_elementwise=recompute)
    model = prepare_for_training(model, lora_cfg, train_cfg)
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; make the adapters' gradients non-trivial
            p.data.normal_(0, 0.02)
    return model.train()


def _layers(model):
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(lm.model.layers)


def _grads(model, ids) -> dict:
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("recompute", [True, False], ids=["recompute", "keep"])
def test_the_same_gradients_with_some_layers_checkpointed(lora, recompute):
    ids = torch.randint(0, 96, (2, 24))  # 48 tokens over a budget of 20: 3 of 4 layers checkpointed
    want = _grads(_model(0, lora, recompute=recompute), ids)
    model = _model(20, lora, recompute=recompute)
    got = _grads(model, ids)
    assert [layer.gradient_checkpointing for layer in _layers(model)] == [True, True, True, False]
    assert want.keys() == got.keys() and want
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-12, msg=name)


def _kept(model, ids) -> int:
    """Bytes allocated in forward and not freed when it ends (the profiler's memory events): what backward
    will use, and the loss. Garbage is collected first: an earlier test's tensors freed inside the profile
    would count against it."""
    gc.collect()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return sum(event.self_cpu_memory_usage for event in prof.key_averages())


def test_a_long_pass_keeps_about_what_a_budget_sized_pass_would():
    ids = torch.randint(0, 96, (4, 32))  # 128 tokens
    plain, budgeted = _model(0), _model(64)
    full = _kept(plain, ids)
    halved = _kept(budgeted, ids)  # 2 of 4 layers checkpointed
    assert [layer.gradient_checkpointing for layer in _layers(budgeted)] == [True, True, False, False]
    short = _kept(budgeted, ids[:2])  # 64 tokens: within the budget, nothing checkpointed
    assert [layer.gradient_checkpointing for layer in _layers(budgeted)] == [False] * 4
    assert short == _kept(plain, ids[:2]) > 0
    # 1.37 MB, 0.85 and 0.71 when written: the checkpointed layers still keep their inputs
    assert halved < 0.7 * full, (halved, full)
    assert halved < 1.25 * short, (halved, short)


def test_passes_without_gradients_leave_the_layers_as_they_are():
    model = _model(20)
    ids = torch.randint(0, 96, (2, 24))
    model(input_ids=ids, labels=ids).loss.backward()
    with torch.no_grad():
        model(input_ids=ids[:, :4])  # a reference model's or a rollout's pass
    assert [layer.gradient_checkpointing for layer in _layers(model)] == [True, True, True, False]


def test_bad_settings_are_refused():
    with pytest.raises(UnituneError, match="checkpoint_above_tokens must be 0"):
        _model(-5)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    lora_cfg = LoraConfig(enabled=False)
    train_cfg = TrainConfig(gradient_checkpointing=True, checkpoint_above_tokens=100)
    with pytest.raises(UnituneError, match="set one"):
        prepare_for_training(model, lora_cfg, train_cfg)
