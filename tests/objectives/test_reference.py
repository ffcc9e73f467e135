"""The reference-model strategies give the same numbers: with LoRA (adapter off, frozen copy, precomputed
log-probs) and with full fine-tuning (copy, precomputed), over the first steps of a tiny-model run -- not
only step 0, where every mode trivially has policy == reference, but after the policy has moved."""

import json

import pytest

from unitune.api import train

PAIRS = [{"prompt": f"Greet guest {i}.", "chosen": "Welcome aboard, friend!", "rejected": "Go away."}
         for i in range(8)]


def run(tmp_path, verb: str, mode: str, lora: bool = True) -> list[dict]:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    out = tmp_path / f"{verb}-{mode}-{lora}"
    train(verb, model="tiny-llama", data={"train": [str(data)], "max_length": 64},
          lora={"enabled": lora}, ref={"mode": mode},
          train={"output_dir": str(out), "max_steps": 2, "batch_size": 4, "lr": 5e-3 if lora else 1e-3,
                 "progress": False, "plot": False, "tensorboard": False})
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


KEYS = ["loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "grad_norm"]


def assert_same(a: list[dict], b: list[dict]) -> None:
    for row_a, row_b in zip(a, b, strict=True):
        for key in KEYS:
            if key in row_a:
                assert row_a[key] == pytest.approx(row_b[key], rel=1e-4, abs=1e-5), (row_a["step"], key)


def test_dpo_modes_agree_with_lora(tmp_path):
    adapter = run(tmp_path, "dpo", "adapter")
    assert adapter[0]["loss"] == pytest.approx(0.693147, abs=1e-5)  # step 0: policy == reference
    assert adapter[-1]["rewards/margins"] > 0.01  # the policy moved, so later steps test the reference
    assert_same(adapter, run(tmp_path, "dpo", "copy"))
    assert_same(adapter, run(tmp_path, "dpo", "precompute"))
    assert (tmp_path / "dpo-precompute-True" / "ref_logps.pt").exists()


def test_dpo_modes_agree_with_full_fine_tuning(tmp_path):
    copy = run(tmp_path, "dpo", "copy", lora=False)
    assert copy[-1]["rewards/margins"] > 0.01
    assert_same(copy, run(tmp_path, "dpo", "precompute", lora=False))


def test_kto_adapter_and_precompute_agree(tmp_path):
    adapter = run(tmp_path, "kto", "adapter")
    precompute = run(tmp_path, "kto", "precompute")
    assert_same(adapter, precompute)
    assert all(a["kl"] == pytest.approx(b["kl"], abs=1e-5) for a, b in zip(adapter, precompute))
