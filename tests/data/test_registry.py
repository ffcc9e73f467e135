"""Built-in datasets: deterministic, the right shape, and convertible."""

from unitune.data.convert import convert
from unitune.data.load import load_source
from unitune.data.registry import DATASETS


def test_pirate_chat_style_and_variety():
    rows = DATASETS["pirate-chat"]()
    assert 380 <= len(rows) <= 450 and rows == DATASETS["pirate-chat"]()
    questions = [r["messages"][0]["content"] for r in rows]
    assert len(set(questions)) == len(rows)
    for r in rows:
        answer = r["messages"][1]["content"]
        assert answer.startswith("Arr, matey! ") and answer.endswith(" Yo-ho-ho!")
        assert answer.count(".") + answer.count("!") <= 6  # short: a few sentences


def test_pirate_chat_val_is_held_out():
    train = {r["messages"][0]["content"] for r in DATASETS["pirate-chat"]()}
    val = DATASETS["pirate-chat-val"]()
    assert 8 <= len(val) <= 12
    assert not any(q in r["messages"][0]["content"] or r["messages"][0]["content"] in q
                   for r in val for q in train)


def test_tiny_stories_are_distinct_text():
    rows = DATASETS["tiny-stories"]()
    assert len(rows) >= 200 and len({r["text"] for r in rows}) == len(rows)


def test_every_builtin_converts():
    for name, task in [("pirate-chat", "sft"), ("pirate-chat-val", "sft"), ("tiny-stories", "pt")]:
        examples, report = convert(load_source(name, seed=0, columns={}), task)
        assert report.kept == len(examples) > 0 and not report.skipped
