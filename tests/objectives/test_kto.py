"""OBJECTIVES.md §6, KTO vectors (beta 0.1, lambda_D 1, lambda_U 1.5, labels [T, F, T, F]): TRL 1.16's
numbers to 1e-6 with metrics, and the rows: a fixed mismatched partner per example, the balance warning."""

import pytest
import torch

from unitune.config import build
from unitune.objectives.kto import KTOObjective, kto_loss

T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
LABELS = torch.tensor([True, False, True, False])
POLICY, REF = T(-1.0, -2.2, -0.3, -1.9), T(-1.3, -2.0, -0.5, -1.5)
KL_POLICY, KL_REF = T(-3.5, -3.4, -5.5, -2.6), T(-3.6, -3.7, -5.4, -2.9)


def means(metrics):
    return {k: float(v[0]) / v[1] for k, v in metrics.items()}


def test_kto_vector():
    total, metrics = kto_loss(POLICY, REF, KL_POLICY, KL_REF, LABELS, 0.1, 1.0, 1.5)
    assert float(total) / 4 == pytest.approx(0.6153141526, abs=1e-6)
    m = means(metrics)
    assert m["kl"] == pytest.approx(0.15, abs=1e-9)
    assert m["rewards/chosen"] == pytest.approx(0.025, abs=1e-9)
    assert m["rewards/rejected"] == pytest.approx(-0.030, abs=1e-9)
    assert m["rewards/margins"] == pytest.approx(0.055, abs=1e-9)
    assert m["logps/chosen"] == pytest.approx(-0.65, abs=1e-9)


def test_kto_vector_z0_clamped_at_zero():
    total, metrics = kto_loss(POLICY, REF, KL_POLICY, T(-3.0, -3.0, -5.0, -2.0), LABELS, 0.1, 1.0, 1.5)
    assert float(total) / 4 == pytest.approx(0.6162507447, abs=1e-6)
    assert means(metrics)["kl"] == 0


def test_z0_is_detached_and_one_class_batches_skip_the_margin():
    policy = POLICY.clone().requires_grad_()
    kl_policy = KL_POLICY.clone().requires_grad_()
    total, metrics = kto_loss(policy, REF, kl_policy, KL_REF, torch.tensor([True] * 4), 0.1, 1.0, 1.0)
    total.backward()
    assert kl_policy.grad is None and policy.grad is not None
    assert metrics["rewards/margins"][1] == 0 and metrics["rewards/rejected"][1] == 0  # counted nowhere


def test_apo_zero_unpaired_has_no_reference_point():
    total, metrics = kto_loss(POLICY, REF, KL_POLICY, KL_REF, LABELS, 0.1, 1.0, 1.0, "apo_zero_unpaired")
    r = POLICY - REF
    expected = torch.where(LABELS, 1 - torch.sigmoid(0.1 * r), torch.sigmoid(0.1 * r)).sum()
    assert float(total) == pytest.approx(float(expected), abs=1e-12) and means(metrics)["kl"] == 0


def kto_rows(tokenizer, labels, **cfg):
    examples = [{"prompt": [{"role": "user", "content": f"question {i}"}],
                 "completion": {"role": "assistant", "content": f"answer {i}"}, "label": label}
                for i, label in enumerate(labels)]
    objective = KTOObjective(build([("", {"ref.mode": "none", **cfg})]), tokenizer)
    return objective, *objective.rows(examples, "train")


def test_rows_pair_each_example_with_another_completion(tokenizer):
    objective, rows, notes = kto_rows(tokenizer, [True, False] * 4)
    answers = []
    for row in rows:
        seq, kl = row["seq"], row["kl"]
        prompt = [t for t, m in zip(seq["input_ids"], seq["mask"]) if not m]
        assert [t for t, m in zip(kl["input_ids"], kl["mask"]) if not m] == prompt  # same prompt
        answers.append(tokenizer.decode([t for t, m in zip(kl["input_ids"], kl["mask"]) if m]))
        assert answers[-1] != tokenizer.decode([t for t, m in zip(seq["input_ids"], seq["mask"]) if m])
    assert len(set(answers)) == len(rows)  # a permutation: every completion used once
    assert not any("warning" in n for n in notes)
    batch = objective.collate(rows[:3])
    assert batch["label"].tolist() == [True, False, True] and batch["kl_input_ids"].shape[0] == 3


def test_class_balance_warning(tokenizer):
    _, _, notes = kto_rows(tokenizer, [True] + [False] * 5)
    assert any("warning: kto" in n and "[1, 4/3]" in n for n in notes)
    _, _, notes = kto_rows(tokenizer, [True] + [False] * 5, **{"kto.desirable_weight": 5.0})
    assert not any("warning" in n for n in notes)
