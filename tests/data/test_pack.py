"""Packing: best fit never overflows a row, and packed examples never see each other."""

import torch

from tests.conftest import random_features
from unitune.data.collate import collate
from unitune.data.pack import pack
from unitune.objectives.lm import token_nll


def test_pack_fits_and_keeps_every_feature():
    feats = random_features(50, seed=3, lo=3, hi=60)
    rows = pack(feats, 64)
    assert all(sum(len(f["input_ids"]) for f in row) <= 64 for row in rows)
    assert sorted(id(f) for row in rows for f in row) == sorted(id(f) for f in feats)
    assert len(rows) <= sum(len(f["input_ids"]) for f in feats) // 64 + 3  # nearly full rows


def test_packed_equals_unpacked_per_example_losses(tiny_model):
    """Each example's loss inside a packed row equals its loss alone (1e-5)."""
    feats = random_features(9, seed=4, lo=3, hi=30)
    rows = pack(feats, 64)
    assert any(len(r) > 1 for r in rows)
    batch = collate(rows, pad_id=2)
    tiny_model.eval()
    with torch.no_grad():
        packed = token_nll(tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      position_ids=batch["position_ids"]).logits, batch["targets"])
        for r, row in enumerate(rows):
            at = 0
            for f in row:
                n = len(f["input_ids"])
                alone = collate([[f]], pad_id=2)
                ref = token_nll(tiny_model(input_ids=alone["input_ids"], attention_mask=alone["attention_mask"],
                                           position_ids=alone["position_ids"]).logits, alone["targets"])
                torch.testing.assert_close(packed[r, at:at + n], ref[0], atol=1e-5, rtol=1e-5)
                at += n


def test_targets_never_cross_a_feature_boundary():
    a = {"input_ids": [10, 11, 12], "mask": [1, 1, 1]}
    b = {"input_ids": [20, 21], "mask": [1, 1]}
    batch = collate([[a, b]], pad_id=2)
    assert batch["targets"].tolist() == [[11, 12, -100, 21, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    mask = batch["attention_mask"][0, 0]
    assert not mask[3, :3].any() and mask[4, 3] and mask[2, 0]
