"""Rendering canonical examples: pt trains every token plus EOS; truncation right/left/drop is applied
and counted; examples with no trained token left are dropped and counted."""

import pytest

from unitune.data.render import render_all
from unitune.errors import UnituneError

CHAT = {"messages": [{"role": "user", "content": "Tell me a long story about the sea. " * 6},
                     {"role": "assistant", "content": "Once upon a time there was a ship."}]}


def render(tokenizer, examples, task="sft", **kw):
    opts = dict(chat_template=tokenizer.chat_template, loss="assistant", max_length=512, truncation="right")
    return render_all(examples, task, tokenizer, **{**opts, **kw})


def test_pt_trains_every_token_and_appends_eos(tokenizer):
    feats, report = render(tokenizer, [{"text": "hello world"}], task="pt")
    ids = feats[0]["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.decode(ids[:-1]) == "hello world"
    assert all(feats[0]["mask"]) and report.target_tokens == len(ids) - 1


def test_truncation_modes_are_applied_and_counted(tokenizer):
    full, _ = render(tokenizer, [CHAT])
    n = len(full[0]["input_ids"])
    left, report = render(tokenizer, [CHAT], max_length=n - 10, truncation="left")
    assert left[0]["input_ids"] == full[0]["input_ids"][10:] and report.truncated == 1
    assert "1 examples truncated" in " ".join(report.lines("train"))
    short = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    kept, report = render(tokenizer, [CHAT, short], max_length=n - 10, truncation="drop")
    assert report.dropped_too_long == 1 and len(kept) == 1 and len(kept[0]["input_ids"]) < n - 10
    # right truncation cuts the answer off entirely: nothing left to train, dropped and counted
    right, report = render(tokenizer, [CHAT], max_length=20, truncation="right")
    assert right == [] and report.dropped_no_target == 1
    assert "no trained token left" in " ".join(report.lines("train"))


def test_system_prompt_is_added_when_missing(tokenizer):
    feats, _ = render(tokenizer, [CHAT], system="Speak like a pirate.")
    assert "Speak like a pirate." in tokenizer.decode(feats[0]["input_ids"])


def test_max_length_too_small_is_an_error(tokenizer):
    with pytest.raises(UnituneError, match="max_length"):
        render(tokenizer, [CHAT], max_length=1)
