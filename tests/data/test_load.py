"""Loaders: every file type, folders, saved datasets, built-ins, the hub offline,
'#N' sampling, weights and column renames; and the errors for bad sources."""

import json

import pytest

from unitune.data import load
from unitune.data.load import load_mixture, load_source
from unitune.errors import UnituneError

ROWS = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def texts(rows):
    return [r.data["instruction"] for r in rows]


def test_jsonl_keeps_line_numbers(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "x"}\n\n{"text": "y"}\n')
    rows = load_source(str(path), seed=0, columns={})
    assert [r.data for r in rows] == [{"text": "x"}, {"text": "y"}]
    assert [r.source for r in rows] == [f"{path}:1", f"{path}:3"]


def test_json_array_object_and_jsonl_fallback(tmp_path):
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps(ROWS[:3], indent=2))
    rows = load_source(str(arr), seed=0, columns={})
    assert texts(rows) == ["q0", "q1", "q2"] and rows[2].source == f"{arr}:row 3"
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": ROWS[:2]}))
    assert texts(load_source(str(wrapped), seed=0, columns={})) == ["q0", "q1"]
    lines = write_jsonl(tmp_path / "lines.json", ROWS[:2])
    rows = load_source(str(lines), seed=0, columns={})
    assert texts(rows) == ["q0", "q1"] and rows[1].source == f"{lines}:2"


def test_csv_rows_are_strings(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('instruction,input,output\nq0,,a0\n"multi\nline",x,1\n')
    rows = load_source(str(path), seed=0, columns={})
    assert rows[0].data == {"instruction": "q0", "input": "", "output": "a0"}
    assert rows[1].data["instruction"] == "multi\nline" and rows[1].data["output"] == "1"
    assert rows[1].source == f"{path}:row 2"


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    msgs = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    pq.write_table(pa.Table.from_pylist(msgs * 2), path)
    rows = load_source(str(path), seed=0, columns={})
    assert rows[0].data == msgs[0] and rows[1].source == f"{path}:row 2"


def test_txt_one_row_per_nonempty_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first line\n\n  second line  \n")
    rows = load_source(str(path), seed=0, columns={})
    assert [r.data for r in rows] == [{"text": "first line"}, {"text": "second line"}]
    assert rows[1].source == f"{path}:3"


def test_folder_loads_supported_files_in_order(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", ROWS[2:4])
    write_jsonl(tmp_path / "a.jsonl", ROWS[:2])
    (tmp_path / "notes.md").write_text("ignored")
    assert texts(load_source(str(tmp_path), seed=0, columns={})) == ["q0", "q1", "q2", "q3"]


def test_saved_datasets_folder(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS[:4]).save_to_disk(str(tmp_path / "ds"))
    rows = load_source(str(tmp_path / "ds"), seed=0, columns={})
    assert texts(rows) == ["q0", "q1", "q2", "q3"] and rows[0].source == f"{tmp_path / 'ds'}:row 1"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:2])}).save_to_disk(str(tmp_path / "dd"))
    assert texts(load_source(str(tmp_path / "dd"), seed=0, columns={})) == ["q0", "q1"]


def test_builtin_name():
    rows = load_source("pirate-chat", seed=0, columns={})
    assert rows[0].source == "builtin:pirate-chat:row 1" and "messages" in rows[0].data


def test_sample_is_seeded_and_without_replacement(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    a = load_source(f"{path}#4", seed=1, columns={})
    assert texts(a) == texts(load_source(f"{path}#4", seed=1, columns={}))
    assert len(set(texts(a))) == 4
    assert any(texts(load_source(f"{path}#4", seed=s, columns={})) != texts(a) for s in range(2, 6))
    with pytest.raises(UnituneError, match=r"cannot sample 11 rows from 10"):
        load_source(f"{path}#11", seed=1, columns={})


def test_columns_rename(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"q": "x", "a": "y"}])
    rows = load_source(str(path), seed=0, columns={"q": "prompt", "a": "completion"})
    assert rows[0].data == {"prompt": "x", "completion": "y"}
    with pytest.raises(UnituneError, match=r"no column 'qq' .*did you mean 'q'"):
        load_source(str(path), seed=0, columns={"qq": "prompt"})


def test_mixture_concatenates_and_weights(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", ROWS[:6])
    b = write_jsonl(tmp_path / "b.jsonl", ROWS[6:8])
    lines = []
    assert len(load_mixture([str(a), str(b)], [], seed=0, columns={}, log=lines.append)) == 8
    assert len(lines) == 2
    lines = []
    mixed = load_mixture([str(a), str(b)], [1, 3], seed=0, columns={}, log=lines.append)
    from_a = [t for t in texts(mixed) if t in {f"q{i}" for i in range(6)}]
    assert len(mixed) == 8 and len(from_a) == 2 and len(set(from_a)) == 2  # round(0.25 * 8)
    assert sorted(texts(mixed)[2:]) == ["q6"] * 3 + ["q7"] * 3  # all of b, then cycling
    assert "-> 6 rows (repeated)" in lines[1]
    with pytest.raises(UnituneError, match="one weight per source"):
        load_mixture([str(a), str(b)], [1.0], seed=0, columns={})


def test_mixture_renames_across_sources(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"q": "x", "output": "y"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "x", "output": "y"}])
    rows = load_mixture([str(a), str(b)], [], seed=0, columns={"q": "instruction"}, log=lambda s: None)
    assert all("instruction" in r.data for r in rows)


# --- bad sources ---------------------------------------------------------------

def test_invalid_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "oops"\n')
    with pytest.raises(UnituneError, match=rf"^{path}:2: invalid JSON: "):
        load_source(str(path), seed=0, columns={})


def test_non_object_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(UnituneError, match=rf"{path}:2: expected a JSON object, got list"):
        load_source(str(path), seed=0, columns={})


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(UnituneError, match=rf"{path}: empty file"):
        load_source(str(path), seed=0, columns={})


def test_missing_file_suggests_close_name(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS[:1])
    with pytest.raises(UnituneError, match=r"file not found: .*trian.jsonl \(did you mean 'train.jsonl'\?\)"):
        load_source(str(tmp_path / "trian.jsonl"), seed=0, columns={})


def test_unknown_dataset_name():
    with pytest.raises(UnituneError, match=r"unknown dataset 'pirate-chatt'.*did you mean 'pirate-chat'"):
        load_source("pirate-chatt", seed=0, columns={})


def test_hub_id_offline_is_one_clean_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(load, "hub_reachable", lambda: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UnituneError) as err:
        load_source("someone/no-such-dataset", seed=0, columns={})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("hf:someone/no-such-dataset:") and "not in the local cache" in msg


def test_hub_id_unreachable_without_mocks_is_clean(tmp_path, monkeypatch):
    """No mocks of the probe: offline here (no internet), or a real 'not found' online."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UnituneError) as err:
        load_source("someone/no-such-dataset-unitune", seed=0, columns={})
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("hf:someone/no-such-dataset-unitune:")


def test_hub_id_offline_uses_cached_snapshot(tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "datasets--me--toy"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    write_jsonl((repo / "snapshots" / "abc123").mkdir(parents=True) or repo / "snapshots" / "abc123" / "train.jsonl",
                ROWS[:3])
    monkeypatch.setattr(load, "hub_reachable", lambda: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "ds-cache")
    rows = load_source("me/toy#2", seed=0, columns={})
    assert len(rows) == 2 and rows[0].source.startswith("hf:me/toy:row ")
