"""load_splits: train/val from a DataConfig, with report lines."""

import json

import pytest

from unitune.config.schema import DataConfig
from unitune.data import load_splits
from unitune.errors import UnituneError


def write(path, n, start=0):
    path.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n"
                            for i in range(start, start + n)))
    return str(path)


def test_val_files(tmp_path):
    cfg = DataConfig(train=[write(tmp_path / "t.jsonl", 5)], val=[write(tmp_path / "v.jsonl", 2, 10)])
    train, val, lines = load_splits(cfg, "sft")
    assert len(train) == 5 and len(val) == 2
    assert val[0]["messages"][0]["content"] == "q10"
    assert any("t.jsonl: 5 rows" in line for line in lines)


def test_val_ratio_is_seeded_and_at_least_one(tmp_path):
    cfg = DataConfig(train=[write(tmp_path / "t.jsonl", 20)], val_ratio=0.01, seed=3)
    train, val, lines = load_splits(cfg, "sft")
    assert len(val) == 1 and len(train) == 19 and val not in train
    assert load_splits(cfg, "sft")[1] == val
    assert any("held out" in line for line in lines)
    cfg.val_ratio = 0.0
    assert load_splits(cfg, "sft")[1] == []


def test_skip_mode_counts_in_report(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q"}\n')
    train, _, lines = load_splits(DataConfig(train=[str(path)], on_bad_row="skip"), "sft")
    assert len(train) == 1
    assert f"train: skipped 1 of 2 rows: {path}:2 (field 'output': missing)" in lines
    with pytest.raises(UnituneError, match=rf"{path}:2: field 'output': missing"):
        load_splits(DataConfig(train=[str(path)]), "sft")


def test_builtins_and_weights(tmp_path):
    cfg = DataConfig(train=["pirate-chat#20", write(tmp_path / "t.jsonl", 5)], weights=[1, 1])
    train, _, lines = load_splits(cfg, "sft")
    assert len(train) == 25 and len(lines) == 3


def test_empty_train_is_an_error():
    with pytest.raises(UnituneError, match=r"data.train is empty: pass --data.train FILE"):
        load_splits(DataConfig(), "sft")
