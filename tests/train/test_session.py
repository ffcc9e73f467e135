"""A training run's start: what it tells the user about the machine before the first step."""

import platform

import pytest
import yaml

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


@pytest.mark.parametrize("slow, chosen", [(True, "no"), (False, "bf16")])
def test_auto_mixed_precision_is_bf16_only_where_the_cpu_computes_it(tmp_path, monkeypatch, capsys, slow, chosen):
    """`train.mixed_precision auto` (the examples' setting): bf16 autocast on a CPU with bf16 arithmetic,
    fp32 on one that emulates it; the run's config.yaml records the choice, and nothing is warned."""
    monkeypatch.setattr(session, "slow_on_this_cpu", lambda dtype: slow)
    monkeypatch.setattr(session, "X86", (platform.machine().lower(),))  # what the probe answers, on any CPU
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(8))
    unitune.sft(model="tiny-llama", data={"train": [str(data)], "max_length": 64},
                train={"max_steps": 1, "output_dir": str(tmp_path / "out"), "progress": False, "tensorboard": False,
                       "plot": False, "mixed_precision": "auto"}, **{"lora.r": 4})
    out, err = capsys.readouterr()
    assert f"train.mixed_precision auto: {chosen}" in out and "warning" not in err
    assert ("frozen base weights stored in bfloat16" in out) == (chosen == "bf16")  # the bf16 path really ran
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["train"]["mixed_precision"] == chosen
