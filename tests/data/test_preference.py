"""Preference formats: TRL's prompt/chosen/rejected (strings, messages, repeated or implicit prompts),
ms-swift's messages + rejected_response, unpaired kto rows and pairs split into them; errors name the
source, the field and what is wrong; the built-in pirate-prefs pairs."""

import pytest

from unitune.data.convert import convert
from unitune.data.load import Row, load_source
from unitune.errors import UnituneError

USER = {"role": "user", "content": "hi"}
GOOD, BAD = {"role": "assistant", "content": "hello"}, {"role": "assistant", "content": "go away"}
PAIR = {"prompt": [USER], "chosen": GOOD, "rejected": BAD}


def one(data, task="dpo"):
    examples, report = convert([Row(data, "prefs.jsonl:3")], task)
    assert report.kept == 1 and not report.skipped
    return examples if task == "kto" and len(examples) > 1 else examples[0]


def bad(data, task="dpo"):
    with pytest.raises(UnituneError) as err:
        convert([Row(data, "prefs.jsonl:3")], task)
    assert "prefs.jsonl:3" in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("data", [
    {"prompt": "hi", "chosen": "hello", "rejected": "go away"},  # strings
    {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},  # messages
    {"prompt": [USER], "chosen": [USER, GOOD], "rejected": [USER, BAD]},  # chosen/rejected repeat the prompt
    {"chosen": [USER, GOOD], "rejected": [USER, BAD]},  # implicit prompt: the shared first turns
    {"prompt": "hi", "chosen": "hi hello", "rejected": "hi go away"},  # strings repeating the prompt
    {"messages": [USER, GOOD], "rejected_response": "go away"},  # ms-swift
])
def test_dpo_formats(data):
    assert one(data) == PAIR
    assert one(data, "rm") == PAIR


def test_system_margin_and_loss_keys():
    ex = one({"system": "be kind", "prompt": "hi", "chosen": "hello", "rejected": "go away", "margin": 2})
    assert ex["prompt"][0] == {"role": "system", "content": "be kind"} and ex["margin"] == 2.0
    ex = one({"prompt": [{**USER, "loss": True}], "chosen": [{**GOOD, "loss": False}], "rejected": [BAD]})
    assert ex == PAIR  # per-message loss keys mean nothing here


def test_kto_formats_and_split_pairs():
    expected = {"prompt": [USER], "completion": GOOD, "label": True}
    assert one({"prompt": "hi", "completion": "hello", "label": True}, "kto") == expected
    assert one({"messages": [USER, GOOD], "label": 1}, "kto") == expected
    assert one({"prompt": "hi", "completion": "hello", "label": "false"}, "kto")["label"] is False
    split = one({"prompt": "hi", "chosen": "hello", "rejected": "go away"}, "kto")
    assert split == [expected, {"prompt": [USER], "completion": BAD, "label": False}]
    examples, report = convert([Row({"messages": [USER, GOOD], "rejected_response": "no"}, "a:1")] * 3, "kto")
    assert len(examples) == 6 and report.kept == 3 and "kept all 3 rows" in report.summary()


@pytest.mark.parametrize("data,task,field", [
    ({"prompt": "hi", "chosen": "hello"}, "dpo", "rejected"),
    ({"chosen": "hello", "rejected": "go away"}, "dpo", "prompt"),
    ({"prompt": "hi", "chosen": [GOOD], "rejected": "no"}, "dpo", "rejected"),
    ({"prompt": [USER], "chosen": [GOOD, USER], "rejected": [BAD]}, "dpo", "chosen"),
    ({"prompt": [GOOD], "chosen": [GOOD], "rejected": [BAD]}, "dpo", "prompt"),
    ({"prompt": "hi", "chosen": "hello", "rejected": "", }, "dpo", "rejected"),
    ({"prompt": "hi", "chosen": "a", "rejected": "b", "margin": "big"}, "dpo", "margin"),
    ({"messages": [USER], "rejected_response": "no"}, "dpo", "messages[0].role"),
    ({"messages": [USER, GOOD]}, "dpo", "rejected_response"),
    ({"prompt": "hi", "completion": "hello", "label": "maybe"}, "kto", "label"),
    ({"prompt": "hi", "label": True}, "kto", "completion"),
])
def test_bad_rows_name_the_field(data, task, field):
    assert f"'{field}'" in bad(data, task)


def test_skip_mode_counts_bad_pairs():
    rows = [Row({"prompt": "hi", "chosen": "a", "rejected": "b"}, "p.jsonl:1"), Row({"prompt": "hi"}, "p.jsonl:2")]
    examples, report = convert(rows, "dpo", on_bad_row="skip")
    assert len(examples) == 1 and report.skipped[0][0] == "p.jsonl:2"


def test_builtin_pirate_prefs():
    train, val = load_source("pirate-prefs", seed=0, columns={}), load_source("pirate-prefs-val", seed=0, columns={})
    pairs, report = convert(train, "dpo")
    assert len(pairs) == 425 and not report.skipped
    for p in pairs:
        assert p["chosen"]["content"].startswith("Arr, matey! ") and p["chosen"]["content"].endswith("Yo-ho-ho!")
        plain = p["rejected"]["content"]
        assert "Arr" not in plain and " o' " not in plain and " be " not in plain and " yer " not in plain
    held_out, _ = convert(val, "rm")
    asked = {p["prompt"][-1]["content"] for p in pairs}
    assert len(held_out) == 50 and not asked & {p["prompt"][-1]["content"] for p in held_out}
    kto, _ = convert(train, "kto")
    assert len(kto) == 850 and sum(e["label"] for e in kto) == 425
