"""The grpo objective on the one loop: the step's completions are the same whatever the micro-batching,
and the token-normalised losses give the same gradient for batch 4 x accumulation 1 and 2 x 2, and for
a micro-batch trained as parts (train.max_tokens_per_forward)."""

import pytest
import torch
from accelerate import Accelerator

from tests.rl.tiny import build_char_model
from unitune.api import make_config
from unitune.errors import UnituneError
from unitune.models.load import load_model, load_tokenizer
from unitune.objectives.grpo import GRPOObjective
from unitune.train.loop import Trainer


@pytest.fixture(scope="module")
def char_model(tmp_path_factory):
    return build_char_model(tmp_path_factory.mktemp("char") / "model")


def one_step(path, tmp, batch_size, grad_accum, loss_type, shared_prefix=True, max_tokens_per_forward=0):
    cfg = make_config("grpo", None, {
        "model.name": str(path), "lora.enabled": False, "data.group_by_length": False,
        "grpo": {"reward": ["format:[a-m]"], "num_generations": 4, "max_completion_length": 5, "beta": 0.0,
                 "loss_type": loss_type, "log_completions_every": 0, "shared_prefix": shared_prefix},
        "train": {"batch_size": batch_size, "grad_accum": grad_accum, "max_steps": 1, "max_grad_norm": 0.0,
                  "output_dir": str(tmp), "progress": False, "tensorboard": False,
                  "max_tokens_per_forward": max_tokens_per_forward}})
    tokenizer = load_tokenizer(str(path))
    objective = GRPOObjective(cfg, tokenizer)
    rows, _ = objective.rows([{"prompt": [{"role": "user", "content": w}]} for w in ["ab", "cd", "ef", "gh"]],
                             "train")
    model = load_model(str(path))
    acc = Accelerator(cpu=True)
    objective.prepare(model, acc, rows, [])
    trainer = Trainer(model=model, objective=objective, rows=rows, val_rows=[], cfg=cfg.train, accelerator=acc,
                      output_dir=tmp)
    grads = {}
    trainer.optimizer.step = lambda: grads.update({n: p.grad.clone() for n, p in model.named_parameters()})
    return trainer.train_step(), grads


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_accumulation_equivalence(char_model, tmp_path, loss_type):
    big, g_big = one_step(char_model, tmp_path / "a", 4, 1, loss_type)
    small, g_small = one_step(char_model, tmp_path / "b", 2, 2, loss_type)
    assert big["reward"] == small["reward"] and big["reward_std"] > 0  # the same samples, with some signal
    assert big["loss"] == pytest.approx(small["loss"], abs=1e-6)
    assert any(g.abs().sum() > 0 for g in g_big.values())
    for name in g_big:
        torch.testing.assert_close(g_big[name], g_small[name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("loss_type,shared_prefix", [("dapo", True), ("grpo", True), ("dr_grpo", False)])
def test_parts_of_a_micro_batch_train_the_same_step(char_model, tmp_path, capsys, loss_type, shared_prefix):
    """train.max_tokens_per_forward cuts the generated micro-batch into passes within the budget: the same
    samples, loss and gradients as one pass."""
    whole, g_whole = one_step(char_model, tmp_path / "a", 4, 1, loss_type, shared_prefix)
    capsys.readouterr()
    parts, g_parts = one_step(char_model, tmp_path / "b", 4, 1, loss_type, shared_prefix, max_tokens_per_forward=40)
    passes = int(capsys.readouterr().out.split("micro-batch(es) as ")[1].split()[0])
    assert passes > 2
    assert whole["reward"] == parts["reward"] and whole["reward_std"] > 0
    assert whole["loss"] == pytest.approx(parts["loss"], abs=1e-6)
    for name in g_whole:
        torch.testing.assert_close(g_whole[name], g_parts[name], atol=1e-6, rtol=1e-4, msg=name)


def test_bnpo_refuses_parts(char_model, tmp_path):
    """bnpo normalises by each micro-batch's own token count: parts would change its loss."""
    with pytest.raises(UnituneError, match="grpo loss is not a sum of per-row terms"):
        one_step(char_model, tmp_path, 4, 1, "bnpo", max_tokens_per_forward=40)


@pytest.mark.parametrize("prepack", [True, False])
def test_rollouts_decode_from_the_packed_copy_unless_turned_off(char_model, tmp_path, prepack):
    """grpo.rollout_prepack (default on, CPU): the objective's rollouts run on a packed copy of the policy;
    turned off, on the fp32 policy itself."""
    from unitune.models.prepack import can_prepack

    if prepack and not can_prepack(torch.float32, torch.device("cpu")):
        pytest.skip("this torch has no oneDNN packed linears")
    cfg = make_config("grpo", None, {"model.name": str(char_model), "lora.enabled": False,
                                     "grpo": {"reward": ["format:[a-m]"], "rollout_prepack": prepack},
                                     "train": {"output_dir": str(tmp_path), "tensorboard": False}})
    objective = GRPOObjective(cfg, load_tokenizer(str(char_model)))
    rows, _ = objective.rows([{"prompt": [{"role": "user", "content": "ab"}]}], "train")
    objective.prepare(load_model(str(char_model)), Accelerator(cpu=True), rows, [])
    copy = objective.phase.rollout.copy
    assert (copy is not None and len(copy.packed.linears) > 0) if prepack else copy is None
