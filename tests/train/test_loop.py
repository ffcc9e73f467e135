"""Loop invariants on a tiny model: gradient accumulation equivalence, loss normalisation."""

import math

import pytest
import torch
from accelerate import Accelerator

from tests.conftest import random_features
from unitune.config import TrainConfig
from unitune.objectives.lm import LMObjective
from unitune.train.loop import Schedule, Trainer, epoch_batches, split_by_tokens


def one_step(model, rows, batch_size, grad_accum, tmp_path, objective=None, **cfg):
    cfg = TrainConfig(batch_size=batch_size, grad_accum=grad_accum, max_steps=1, lr=1e-3, progress=False,
                      tensorboard=False, max_grad_norm=0.0, **{"max_tokens_per_forward": 0, **cfg})
    objective = objective or LMObjective("sft", pad_id=2)
    trainer = Trainer(model=model, objective=objective, rows=rows, val_rows=[], cfg=cfg,
                      accelerator=Accelerator(cpu=True), output_dir=tmp_path,
                      row_lengths=[objective.length(r) for r in rows])
    grads = {}

    def capture():
        grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    trainer.optimizer.step = capture
    row = trainer.train_step()
    return row, grads


def test_accumulation_equivalence(tiny_model, tmp_path):
    """batch 8 x accumulation 1 == batch 1 x accumulation 8: same loss, same gradients. In float64, so
    that what is compared is the normalisation, not float32 summation order."""
    tiny_model.double()
    rows = [[f] for f in random_features(8, seed=1)]  # lengths vary, so mean-of-means would differ
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    big, g_big = one_step(tiny_model, rows, 8, 1, tmp_path / "a")
    tiny_model.load_state_dict(state)
    small, g_small = one_step(tiny_model, rows, 1, 8, tmp_path / "b")
    assert big["loss"] == pytest.approx(small["loss"], abs=1e-10)
    assert big["tokens"] == small["tokens"]
    for name in g_big:
        torch.testing.assert_close(g_big[name], g_small[name], atol=1e-10, rtol=1e-8, msg=name)


def test_a_token_budget_per_forward_trains_the_same_step(tiny_model, tmp_path):
    """train.max_tokens_per_forward runs a micro-batch of 8 as several forward/backward passes: the same loss
    and gradients (float64, as above), from more, smaller forwards."""
    tiny_model.double()
    rows = [[f] for f in random_features(8, seed=1)]
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    whole, g_whole = one_step(tiny_model, rows, 8, 1, tmp_path / "a")
    tiny_model.load_state_dict(state)
    objective = LMObjective("sft", pad_id=2)
    shapes = []
    loss = objective.loss
    objective.loss = lambda model, batch: shapes.append(tuple(batch["input_ids"].shape)) or loss(model, batch)
    parts, g_parts = one_step(tiny_model, rows, 8, 1, tmp_path / "b", objective, max_tokens_per_forward=80)
    assert len(shapes) > 2 and all(n * length <= 80 or n == 1 for n, length in shapes)
    assert sum(n for n, _ in shapes) == 8
    assert whole["loss"] == pytest.approx(parts["loss"], abs=1e-10) and whole["tokens"] == parts["tokens"]
    for name in g_whole:
        torch.testing.assert_close(g_whole[name], g_parts[name], atol=1e-10, rtol=1e-8, msg=name)


def test_split_by_tokens_keeps_order_and_whole_rows():
    lengths = [50, 40, 40, 30, 200, 10]
    assert split_by_tokens([0, 1, 2, 3, 4, 5], lengths, 100) == [[0, 1], [2, 3], [4], [5]]
    assert split_by_tokens([3, 5, 1], lengths, 100) == [[3, 5], [1]]
    assert split_by_tokens([0, 1, 2, 3], lengths, 10_000) == [[0, 1, 2, 3]]


def test_a_token_budget_is_refused_where_the_loss_couples_rows(tiny_model, tmp_path):
    from unitune.errors import UnituneError

    with pytest.raises(UnituneError, match="max_tokens_per_forward must be 0 .off. or positive, got -5"):
        one_step(tiny_model, [[f] for f in random_features(2)], 2, 1, tmp_path, max_tokens_per_forward=-5)

    class Coupled(LMObjective):  # e.g. KTO: its KL reference point is estimated over the micro-batch
        rows_independent = False
    with pytest.raises(UnituneError, match="max_tokens_per_forward.*grad_accum"):
        one_step(tiny_model, [[f] for f in random_features(2)], 2, 1, tmp_path, Coupled("kto", pad_id=2),
                 max_tokens_per_forward=64)


def test_loss_is_token_mean_over_the_step(tiny_model, tmp_path):
    """The step loss is total NLL over all target tokens of the step, not a mean of micro-batch means."""
    rows = [[f] for f in random_features(4, seed=2)]
    objective = LMObjective("sft", pad_id=2)
    with torch.no_grad():
        total, count = 0.0, 0
        for r in rows:
            batch = objective.collate([r])
            loss, _ = objective.loss(tiny_model, batch)
            total, count = total + float(loss), count + objective.count(batch)
    row, _ = one_step(tiny_model, rows, 1, 4, tmp_path)
    assert row["loss"] == pytest.approx(total / count, rel=1e-5)


def test_schedule_covers_every_row_once_per_epoch():
    lengths = list(range(1, 23))
    sched = Schedule(lengths, batch_size=3, grad_accum=2, world=2, seed=0, group_by_length=True)
    seen = [i for step in range(sched.steps_per_epoch) for rank in range(2)
            for mb in sched.micro_batches(step, rank) for i in mb]
    assert set(seen) == set(range(22))
    assert sched.steps_per_epoch == math.ceil(math.ceil(22 / 3) / 4)
    # a different epoch is a different order, the same epoch always the same
    assert epoch_batches(lengths, 0, 3, 0, False) == epoch_batches(lengths, 0, 3, 0, False)
    assert epoch_batches(lengths, 0, 3, 0, False) != epoch_batches(lengths, 1, 3, 0, False)


def test_nan_loss_stops_with_the_step(tiny_model, tmp_path):
    from unitune.errors import UnituneError

    with torch.no_grad():
        tiny_model.get_input_embeddings().weight[10:2000] = float("nan")
    with pytest.raises(UnituneError, match="at step 1"):
        one_step(tiny_model, [[f] for f in random_features(2)], 2, 1, tmp_path)


def test_nan_loss_skip_mode_leaves_weights_alone(tiny_model, tmp_path):
    with torch.no_grad():
        tiny_model.get_input_embeddings().weight[10:2000] = float("nan")
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    cfg = TrainConfig(batch_size=2, max_steps=1, progress=False, tensorboard=False, on_nan="skip",
                      max_tokens_per_forward=0)
    trainer = Trainer(model=tiny_model, objective=LMObjective("sft", pad_id=2), rows=[[f] for f in random_features(2)],
                      val_rows=[], cfg=cfg, accelerator=Accelerator(cpu=True), output_dir=tmp_path)
    assert trainer.train_step() == {"skipped_nan": 1} and trainer.step == 1
    for name, value in tiny_model.state_dict().items():
        assert torch.equal(value.nan_to_num(), before[name].nan_to_num()), name
