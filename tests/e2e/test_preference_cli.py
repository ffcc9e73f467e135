"""`unitune dpo`, `unitune kto` and `unitune rm` through the real CLI on a tiny model: the loss falls and
held-out preference accuracy rises from its value before training; final/ loads with transformers (the RM
as AutoModelForSequenceClassification) and the RM scores pairs from the CLI and Python; DPO starts from an
SFT LoRA run's final/ with that SFT model as its reference; a bad pair is a one-line error."""

import json
import math

import pytest

from tests.e2e.helpers import cli, metrics, write_jsonl


def pairs(numbers):
    return [{"prompt": f"Greet guest number {i}.", "chosen": "Welcome aboard, friend! Welcome aboard!",
             "rejected": "Go away. We are closed."} for i in numbers]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefs")
    return (tmp, write_jsonl(tmp / "train.jsonl", pairs(range(32))),
            write_jsonl(tmp / "val.jsonl", pairs(range(100, 108))))


def train(verb, data, out, *flags):
    tmp, train_file, val_file = data
    proc = cli(verb, "--model", "tiny-llama", "--data.train", train_file, "--data.val", val_file,
               "--data.max_length", "64", "--train.batch_size", "4", "--train.eval_every", "4",
               "--train.output_dir", out, "--train.progress", "false", "--train.tensorboard", "false", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = metrics(out)
    assert rows[0]["step"] == 0 and "eval_loss" in rows[0]  # evaluated before the first step
    return proc, rows[0], [r for r in rows if "loss" in r], [r for r in rows if "eval_loss" in r]


def test_dpo_loss_falls_and_held_out_accuracy_rises(data, tmp_path):
    proc, start, rows, evals = train("dpo", data, tmp_path / "dpo", "--train.max_steps", "8", "--train.lr", "3e-3")
    assert "train: 32 of 32 pairs kept" in proc.stdout and "reference: adapter" in proc.stdout
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # step 1: policy == reference
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.05
    assert start["eval_rewards/accuracies"] == 0 and evals[-1]["eval_rewards/accuracies"] >= 0.9
    assert evals[-1]["eval_rewards/margins"] > evals[1]["eval_rewards/margins"] > 0
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert key in rows[-1] and f"eval_{key}" in evals[-1]
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(tmp_path / "dpo" / "final")
    assert any("lora" in n for n, _ in final.named_parameters())


def test_kto_loss_falls_and_held_out_margin_rises(data, tmp_path):
    _, start, rows, evals = train("kto", data, tmp_path / "kto", "--train.max_steps", "8", "--train.lr", "3e-3")
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.02
    assert start["eval_rewards/margins"] == pytest.approx(0, abs=1e-6) and evals[-1]["eval_rewards/margins"] > 0.05
    assert all("kl" in r for r in rows) and all(r["kl"] >= 0 for r in rows)


def test_rm_accuracy_rises_loads_and_scores(data, tmp_path, capsys):
    out = tmp_path / "rm"
    _, start, rows, evals = train("rm", data, out, "--train.max_steps", "8", "--train.lr", "3e-3")
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert evals[-1]["eval_accuracy"] >= 0.9 and evals[-1]["eval_margin"] > start["eval_margin"] + 0.5
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from unitune import rm_score

    model = AutoModelForSequenceClassification.from_pretrained(out / "final").eval()
    tok = AutoTokenizer.from_pretrained(out / "final")
    assert model.config.num_labels == 1 and tok.pad_token_id != tok.eos_token_id
    p = pairs([200])[0]
    good, bad = rm_score(out / "final", [p["prompt"]] * 2, [p["chosen"], p["rejected"]])
    assert good > bad
    text = tok.apply_chat_template([{"role": "user", "content": p["prompt"]},
                                    {"role": "assistant", "content": p["chosen"]}], tokenize=False).rstrip()
    with torch.no_grad():  # transformers' own pooling on the saved model gives the same score
        plain = model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0]
    assert float(plain) == pytest.approx(good, abs=1e-4)
    _, _, val_file = data
    proc = cli("rm", "score", "--model", out / "final", "--data", val_file, "--output", tmp_path / "scored.jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accuracy" in proc.stderr
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(scored) == 8 and all("reward_chosen" in r and "reward_rejected" in r for r in scored)
    from unitune.reward_model import cli_score

    assert cli_score(["--model", str(out / "final"), "--prompt", p["prompt"], "--response", p["rejected"]]) == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(bad, abs=1e-4)


def test_dpo_from_sft_lora_final_refers_to_the_sft_model(data, tmp_path):
    tmp, train_file, _ = data
    chats = [{"messages": [{"role": "user", "content": f"Greet guest number {i}."},
                           {"role": "assistant", "content": "Welcome aboard, friend!"}]} for i in range(16)]
    proc = cli("sft", "--model", "tiny-llama", "--data.train", write_jsonl(tmp_path / "chat.jsonl", chats),
               "--train.max_steps", "3", "--train.lr", "1e-2", "--train.output_dir", tmp_path / "sft",
               "--train.progress", "false", "--train.tensorboard", "false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "dpo"
    proc = cli("dpo", "--model", tmp_path / "sft" / "final", "--data.train", train_file, "--data.max_length", "64",
               "--train.max_steps", "1", "--train.output_dir", out, "--train.progress", "false",
               "--train.tensorboard", "false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = metrics(out)[0]  # the reference is the SFT model, not its base: no reward at step 1
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5) and first["rewards/margins"] == 0


def test_bad_pair_is_a_one_line_error(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", pairs([1]) + [{"prompt": "hi", "chosen": "yes"}])
    proc = cli("dpo", "--model", "tiny-llama", "--data.train", bad, "--train.output_dir", tmp_path / "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "bad.jsonl:2" in proc.stderr and "'rejected'" in proc.stderr


def test_dpo_with_a_token_budget_per_forward_trains_the_same(data, tmp_path):
    """train.max_tokens_per_forward runs each batch of 4 pairs as forwards of one pair: same losses and
    metrics (up to float32 summation order); KTO, whose KL estimate couples a batch's rows, refuses it."""
    steps = ("--train.max_steps", "3", "--train.lr", "3e-3")
    _, _, whole, _ = train("dpo", data, tmp_path / "whole", *steps)
    proc, _, parts, _ = train("dpo", data, tmp_path / "parts", *steps, "--train.max_tokens_per_forward", "40")
    assert "step 1 runs its 1 micro-batch(es) as 4 forward/backward passes" in proc.stdout
    for a, b in zip(whole, parts, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["tokens"] == b["tokens"]
        assert a["rewards/margins"] == pytest.approx(b["rewards/margins"], abs=1e-5)
    tmp, train_file, _ = data
    proc = cli("kto", "--model", "tiny-llama", "--data.train", train_file, "--train.max_tokens_per_forward", "40",
               "--train.output_dir", tmp_path / "kto", "--train.progress", "false")
    assert proc.returncode != 0 and "max_tokens_per_forward: the kto loss is not a sum" in proc.stderr
