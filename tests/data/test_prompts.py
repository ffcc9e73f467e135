"""grpo prompt data: every accepted format to {"prompt": messages, **columns}, bad rows named, and the
built-in arithmetic task with a held-out split that shares no question with training."""

import pytest

from unitune.data.convert import convert
from unitune.data.load import Row
from unitune.data.registry import DATASETS
from unitune.errors import UnituneError

USER = [{"role": "user", "content": "2+2?"}]


def one(data):
    examples, report = convert([Row(data, "p.jsonl:3")], "grpo")
    assert report.kept == 1
    return examples[0]


@pytest.mark.parametrize("data,expected", [
    ({"prompt": "2+2?", "answer": "4"}, {"prompt": USER, "answer": "4"}),
    ({"prompt": USER, "target": "z", "id": 7}, {"prompt": USER, "target": "z", "id": 7}),
    ({"question": "2+2?", "answer": "4", "system": "Be brief."},
     {"prompt": [{"role": "system", "content": "Be brief."}] + USER, "answer": "4"}),
    ({"problem": "2+2?", "solution": "It is \\boxed{4}"}, {"prompt": USER, "solution": "It is \\boxed{4}"}),
    ({"messages": USER + [{"role": "assistant", "content": "4"}], "answer": "4"}, {"prompt": USER, "answer": "4"}),
])
def test_formats(data, expected):
    assert one(data) == expected


def test_bad_rows_name_the_field():
    with pytest.raises(UnituneError, match=r"p.jsonl:3: field 'question': empty"):
        convert([Row({"question": " "}, "p.jsonl:3")], "grpo")
    with pytest.raises(UnituneError, match=r"field 'messages': no user turn"):
        convert([Row({"messages": [{"role": "system", "content": "x"}]}, "p.jsonl:3")], "grpo")


def test_arithmetic_task():
    train, val = DATASETS["arithmetic"](), DATASETS["arithmetic-val"]()
    assert len(train) == 1000 and len(val) == 100 and train == DATASETS["arithmetic"]()  # fixed seed
    assert not {r["question"] for r in train} & {r["question"] for r in val}
    for row in train[:50] + val:
        assert int(row["answer"]) >= 0 and row["question"].endswith("as a number.")
