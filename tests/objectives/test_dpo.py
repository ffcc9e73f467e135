"""OBJECTIVES.md §6, DPO vectors (beta 0.1): TRL 1.16's numbers to 1e-6, metrics included, both from the
per-pair tensors and through the objective's real forward path on a stub model."""

import pytest
import torch

from tests.objectives.stub import FixedLogProbs, chain
from unitune.config import build
from unitune.errors import UnituneError
from unitune.objectives.dpo import DPOObjective, Pairs, dpo_loss

T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
POLICY_W, POLICY_L, REF_W, REF_L = T(-1.8, -0.9), T(-2.0, -2.4), T(-2.0, -1.0), T(-1.5, -2.6)
N_W, N_L = torch.tensor([3, 2]), torch.tensor([2, 3])


def mean_loss(losses, weights=None, ref=True, eps=0.0, gamma=0.0):
    zero = torch.zeros(2, dtype=torch.float64)
    pairs = Pairs(POLICY_W, POLICY_L, REF_W if ref else zero, REF_L if ref else zero, N_W, N_L, 0.1, eps, gamma)
    total, metrics = dpo_loss(pairs, losses, weights or [1.0] * len(losses))
    return float(total) / 2, {k: float(v) / 2 for k, v in metrics.items()}


@pytest.mark.parametrize("losses,eps,ref,expected", [
    (["sigmoid"], 0.0, True, 0.6784596180),
    (["hinge"], 0.0, True, 0.9700000000),
    (["ipo"], 0.0, True, 23.5502777778),
    (["robust"], 0.1, True, 0.6747096180),
    (["sigmoid", "sft"], 0.0, True, 1.2184596180),  # RPO, alpha 1
    (["sigmoid"], 0.0, False, 0.6520771138),  # reference-free
])
def test_trl_vectors(losses, eps, ref, expected):
    assert mean_loss(losses, eps=eps, ref=ref)[0] == pytest.approx(expected, abs=1e-6)


def test_sigmoid_metrics():
    _, m = mean_loss(["sigmoid"])
    assert m["rewards/chosen"] == pytest.approx(0.015, abs=1e-9)
    assert m["rewards/rejected"] == pytest.approx(-0.015, abs=1e-9)
    assert m["rewards/accuracies"] == pytest.approx(0.5)
    assert m["rewards/margins"] == pytest.approx(0.03, abs=1e-9)
    assert m["logps/chosen"] == pytest.approx(-1.35, abs=1e-9)
    assert m["logps/rejected"] == pytest.approx(-2.2, abs=1e-9)


def test_weighted_combination_and_reference_free_relatives():
    sig, _ = mean_loss(["sigmoid"])
    assert mean_loss(["sigmoid", "sft"], [1.0, 0.5])[0] == pytest.approx(sig + 0.5 * 0.54, abs=1e-9)
    # CPO: reference-free sigmoid + NLL (the chosen tokens' mean: 2.7 / 5)
    assert mean_loss(["cpo"])[0] == pytest.approx(0.6520771138 + 0.54, abs=1e-6)
    # SimPO: -log sig(beta (a_w - a_l) - gamma), a = per-token means
    a_w, a_l = POLICY_W / N_W, POLICY_L / N_L
    simpo = -torch.nn.functional.logsigmoid(0.1 * (a_w - a_l) - 0.5).mean()
    loss, m = mean_loss(["simpo"], gamma=0.5)
    assert loss == pytest.approx(float(simpo), abs=1e-9)
    assert m["rewards/chosen"] == pytest.approx(float(0.1 * a_w.mean()), abs=1e-9)
    # ORPO: NLL - beta * mean log sig(log-odds)
    odds = (a_w - a_l) - (torch.log1p(-a_w.exp()) - torch.log1p(-a_l.exp()))
    orpo = 0.54 - 0.1 * torch.nn.functional.logsigmoid(odds).mean()
    assert mean_loss(["orpo"])[0] == pytest.approx(float(orpo), abs=1e-9)


def stub_batch():
    """§6's rows [c0, c1, r0, r1] (prompt length 2) as token chains the stub scores."""
    sides, table = [], {}
    for start, logps in [(2, [-0.5, -1.0, -0.3]), (12, [-0.7, -0.2]), (22, [-1.2, -0.8]), (32, [-0.4, -0.9, -1.1])]:
        feat, entries = chain(start, logps, prompt_len=2)
        sides.append(feat)
        table.update(entries)
    rows = [{"chosen": sides[0], "rejected": sides[2], "ref": [-2.0, -1.5]},
            {"chosen": sides[1], "rejected": sides[3], "ref": [-1.0, -2.6]}]
    return rows, FixedLogProbs(table)


class PadTokenizer:
    pad_token_id = 0


@pytest.mark.parametrize("shared,shape", [(True, (2, 9)), (False, (4, 5))])
@pytest.mark.parametrize("losses,expected", [(["sigmoid"], 0.6784596180), (["ipo"], 23.5502777778),
                                             (["sigmoid", "sft"], 1.2184596180)])
def test_objective_forward_path_matches(losses, expected, shared, shape):
    """Both layouts: one row per pair (these sides share no prefix: [chosen | rejected]), or two."""
    cfg = build([("", {"dpo.loss": losses, "ref.mode": "precompute", "dpo.shared_prompt": shared})])
    objective = DPOObjective(cfg, PadTokenizer())
    rows, model = stub_batch()
    batch = objective.collate(rows)
    assert objective.count(batch) == 2 and batch["input_ids"].shape == shape
    loss, metrics = objective.loss(model, batch)
    assert float(loss.detach()) / 2 == pytest.approx(expected, abs=1e-6)
    assert float(metrics["logps/chosen"]) / 2 == pytest.approx(-1.35, abs=1e-6)


def test_reference_free_through_ref_mode_none():
    objective = DPOObjective(build([("", {"ref.mode": "none"})]), PadTokenizer())
    rows, model = stub_batch()
    loss, _ = objective.loss(model, objective.collate(rows))
    assert float(loss.detach()) / 2 == pytest.approx(0.6520771138, abs=1e-6)


def test_config_errors_name_the_key():
    with pytest.raises(UnituneError, match="sigmoid"):
        DPOObjective(build([("", {"dpo.loss": ["sigmod"]})]), PadTokenizer())
    with pytest.raises(UnituneError, match="loss_weights"):
        DPOObjective(build([("", {"dpo.loss": ["sigmoid", "sft"], "dpo.loss_weights": [1.0]})]), PadTokenizer())
    with pytest.raises(UnituneError, match="adapter needs LoRA"):
        DPOObjective(build([("", {"ref.mode": "adapter", "lora.enabled": False})]), PadTokenizer())
    assert DPOObjective(build([("", {"dpo.loss": ["simpo"]})]), PadTokenizer()).reference.mode == "none"


def test_rows_count_truncation_and_prompts_that_leave_no_completion(tokenizer):
    def pair(prompt, answer="Yes, gladly."):
        return {"prompt": [{"role": "user", "content": prompt}], "chosen": {"role": "assistant", "content": answer},
                "rejected": {"role": "assistant", "content": "No."}}

    cfg = build([("", {"data.max_length": 48, "ref.mode": "none"})])
    rows, notes = DPOObjective(cfg, tokenizer).rows([pair("hi"), pair("word " * 80), pair("hi", "ok " * 20)], "train")
    assert len(rows) == 2
    assert "train: 2 of 3 pairs kept" in notes and "train: 1 pairs truncated to max_length" in notes
    assert any("1 pairs dropped: the prompt leaves no completion token" in n for n in notes)
    chosen = rows[0]["chosen"]
    completion = tokenizer.decode([t for t, m in zip(chosen["input_ids"], chosen["mask"]) if m])
    assert completion == "Yes, gladly.<|im_end|>"  # the answer and its end-of-turn marker, nothing else
    assert all(len(r["chosen"]["input_ids"]) <= 48 for r in rows)
    cfg = build([("", {"data.max_length": 48, "data.truncation": "drop", "ref.mode": "none"})])
    _, notes = DPOObjective(cfg, tokenizer).rows([pair("hi"), pair("hi", "ok " * 20)], "train")
    assert "train: 1 pairs longer than max_length dropped" in notes
