"""The Python API takes the same fields as YAML and flags, and returns paths and final metrics."""

import pytest

import unitune
from tests.e2e.helpers import chat_rows, cli, write_jsonl
from unitune.api import make_config
from unitune.errors import UnituneError


def test_sft_from_python_returns_paths_and_metrics(tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(16))
    result = unitune.sft(model="tiny-llama", data={"train": [str(data)], "max_length": 64},
                         train={"max_steps": 3, "output_dir": str(tmp_path / "out"), "progress": False,
                                "tensorboard": False, "mixed_precision": "bf16"},
                         **{"lora.r": 4, "lora.merge": True})
    assert result.final_dir == tmp_path / "out" / "final"
    assert (result.final_dir / "model.safetensors").exists()  # merged, not an adapter
    assert result.metrics["step"] == 3 and result.metrics["loss"] > 0


def test_keywords_yaml_and_flags_are_one_config(tmp_path):
    (tmp_path / "c.yaml").write_text("lora: {r: 4}\ntrain: {lr: 1.0e-3}\n")
    from_kwargs = make_config("sft", None, {"lora": {"r": 4}, "train.lr": 1e-3})
    from_yaml = make_config("sft", str(tmp_path / "c.yaml"))
    from_flags = make_config("sft", None, {"lora.r": "4", "train.lr": "1e-3"})
    assert from_kwargs == from_yaml == from_flags
    with pytest.raises(UnituneError, match="did you mean 'lora.alpha'"):
        make_config("sft", None, {"lora": {"alpah": 3}})


def test_template_show_marks_trained_tokens():
    proc = cli("template", "show", "--model", "tiny-llama")  # the tokenizer's own (ChatML-like) template
    assert proc.returncode == 0, proc.stderr
    assert "assistant\n[[Paris.<|im_end|>]]\n<|im_start|>user" in proc.stdout
    assert "[[Rome.<|im_end|>]]" in proc.stdout and "6 of 49 tokens trained" in proc.stdout
    proc = cli("template", "list")
    assert proc.returncode == 0 and "qwen2.5" in proc.stdout and "gemma" in proc.stdout
