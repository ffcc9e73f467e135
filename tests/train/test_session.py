"""A training run's start: what it tells the user about the machine before the first step."""

import pytest

import unitune
import unitune.train.session as session
from tests.e2e.helpers import chat_rows, write_jsonl


@pytest.mark.parametrize("precision, slow, warned", [
    ("bf16", True, True),  # autocast in bf16 on a CPU that emulates it
    ("bf16", False, False),  # AVX-512 BF16 / AMX: bf16 pays
    ("no", True, False),  # fp32 never asks
])
def test_mixed_precision_on_a_cpu_that_emulates_it_is_warned_about(tmp_path, monkeypatch, capsys, precision, slow,
                                                                  warned):
    asked = []
    monkeypatch.setattr(session, "slow_on_this_cpu", lambda dtype: asked.append(dtype) or slow)
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    result = unitune.sft(model="tiny-llama", data={"train": [str(data)], "max_length": 64},
                         train={"max_steps": 1, "output_dir": str(tmp_path / "out"), "progress": False,
                                "tensorboard": False, "plot": False, "mixed_precision": precision},
                         **{"lora.r": 4})
    assert result.metrics["step"] == 1  # the run goes on either way
    err = capsys.readouterr().err
    assert ("train.mixed_precision bf16 on a CPU without bf16 arithmetic" in err) == warned
    assert ("use --train.mixed_precision no" in err) == warned
    assert asked == (["bfloat16"] if precision == "bf16" else [])
