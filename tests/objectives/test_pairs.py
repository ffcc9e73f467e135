"""DPO's shared-prefix rows: [common prefix | rest of chosen | rest of rejected] give every side the
same log-prob sums, counts and gradients as two separate rows, on a real (tiny) transformer."""

import pytest
import torch

from tests.conftest import random_features
from unitune.config import build
from unitune.data.collate import collate
from unitune.objectives.dpo import DPOObjective
from unitune.objectives.pairs import common_prefix, sequence_logps, shared_prefix_collate


def make_pairs(n: int, seed: int) -> list[tuple[dict, dict]]:
    """Pairs that share a prompt (mask 0) and, for some, the first completion tokens too; one pair
    shares nothing, one has a rejected side that is the chosen side's start."""
    feats = random_features(3 * n, seed=seed, lo=3, hi=20)
    pairs = []
    for k in range(n):
        prompt, a, b = feats[3 * k]["input_ids"], feats[3 * k + 1], feats[3 * k + 2]
        lead = a["input_ids"][:2] if k % 2 else []  # both completions open with the same tokens
        c = {"input_ids": prompt + lead + a["input_ids"], "mask": [0] * len(prompt) + [1] * (len(lead) + len(a["input_ids"]))}
        r = {"input_ids": prompt + lead + b["input_ids"], "mask": [0] * len(prompt) + [1] * (len(lead) + len(b["input_ids"]))}
        pairs.append((c, r))
    pairs.append((feats[0], feats[1]))  # no common prefix at all
    c = pairs[1][0]
    pairs.append((c, {"input_ids": c["input_ids"][:-2], "mask": c["mask"][:-2]}))  # rejected = chosen's start
    return pairs


def rel_error(a, b) -> float:
    return float((a - b).norm() / b.norm())


def two_rows(pairs):
    return collate([[c] for c, _ in pairs] + [[r] for _, r in pairs], pad_id=2)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_rows_equal_two_rows_in_sums_counts_and_gradients(attn):
    from unitune.models.load import load_model

    torch.manual_seed(0)
    model = load_model("tiny-llama", attn_implementation=attn).double()
    pairs = make_pairs(4, seed=7)
    shared, plain = shared_prefix_collate(pairs, pad_id=2), two_rows(pairs)
    assert shared["input_ids"].shape[0] == len(pairs) and plain["input_ids"].shape[0] == 2 * len(pairs)
    assert int(shared["num_tokens"]) == int(plain["num_tokens"])  # tokens trained on, as two rows count them
    assert shared["input_ids"].numel() < plain["input_ids"].numel()

    results = []
    for batch in (shared, plain):
        model.zero_grad()
        sums, counts = sequence_logps(model, batch)
        weights = torch.linspace(0.5, 1.5, len(sums), dtype=sums.dtype)  # any loss of the sums
        (sums * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((sums.detach(), counts, grads))
    (s1, c1, g1), (s2, c2, g2) = results
    # float64 throughout, but transformers' attention takes its softmax in float32: agreement to ~1e-8
    torch.testing.assert_close(s1, s2, rtol=1e-8, atol=1e-8)
    assert c1.tolist() == c2.tolist()
    assert g1.keys() == g2.keys() and g1
    for name in g1:
        assert rel_error(g1[name], g2[name]) < 1e-6, name


def test_layout_positions_and_mask():
    c = {"input_ids": [5, 6, 7, 8], "mask": [0, 0, 1, 1]}
    r = {"input_ids": [5, 6, 9], "mask": [0, 0, 1]}
    assert common_prefix(c["input_ids"], r["input_ids"]) == 2
    batch = shared_prefix_collate([(c, r)], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2]]
    mask = batch["attention_mask"][0, 0]
    assert mask[4].tolist() == [True, True, False, False, True]  # rejected sees the prompt and itself
    assert mask[3].tolist() == [True, True, True, True, False]
    # token 7 and token 9 are both predicted from the prompt's last state (position 1)
    assert batch["score_at"].tolist() == [1, 2, 1] and batch["score_targets"].tolist() == [7, 8, 9]
    assert batch["score_slot"].tolist() == [0, 0, 1]
    # identical sides still keep one token each of their own
    assert common_prefix([1, 2, 3], [1, 2, 3]) == 2


def test_dpo_loss_and_reference_are_the_same_with_and_without_shared_rows():
    """The objective end to end (LoRA, adapter reference): loss, metrics and LoRA gradients."""
    from unitune.models.load import load_model
    from unitune.models.lora import add_lora

    pairs = make_pairs(3, seed=11)
    rows = [{"chosen": c, "rejected": r} for c, r in pairs]

    class Tok:
        pad_token_id = 2

    out = []
    for shared in (True, False):
        torch.manual_seed(0)
        cfg = build([("", {"dpo.shared_prompt": shared})])
        model = add_lora(load_model("tiny-llama").double(), cfg.lora)
        generator = torch.Generator().manual_seed(1)
        for n, p in model.named_parameters():  # a trained-looking adapter, so policy != reference
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.05, generator=generator)
        objective = DPOObjective(cfg, Tok())
        batch = objective.collate(rows)
        assert objective.count(batch) == len(rows)
        loss, metrics = objective.loss(model, batch)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        out.append((loss.detach(), metrics, grads))
    (l1, m1, g1), (l2, m2, g2) = out
    torch.testing.assert_close(l1, l2, rtol=1e-8, atol=1e-10)
    for k in m1:
        torch.testing.assert_close(m1[k].double(), m2[k].double(), rtol=1e-8, atol=1e-10, msg=k)
    assert g1.keys() == g2.keys() and all("lora" in n for n in g1)
    for n in g1:
        assert rel_error(g1[n], g2[n]) < 1e-6, n
