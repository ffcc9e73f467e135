"""`unitune sft` and `unitune pt` through the real CLI on a tiny model: the loss falls, every output is
written, final/ loads with transformers, and the saved config repeats the run."""

import pytest
import torch
from safetensors.torch import load_file

from tests.e2e.helpers import chat_rows, cli, metrics, write_jsonl
from unitune.malloc import library


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft")
    data = write_jsonl(tmp / "chat.jsonl", chat_rows())
    (tmp / "run.yaml").write_text(f"""
model: tiny-llama
data: {{train: [{data}], val_ratio: 0.1, max_length: 64}}
lora: {{enabled: false}}
train: {{output_dir: {tmp / 'out'}, max_steps: 12, batch_size: 4, lr: 3.0e-3, eval_every: 6, warmup_steps: 1}}
""")
    proc = cli("sft", "--config", tmp / "run.yaml", "--train.seed", "7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, proc


def test_sft_loss_falls_and_outputs_exist(sft_run):
    tmp, proc = sft_run
    out = tmp / "out"
    rows = [r for r in metrics(out) if "loss" in r]
    assert rows[-1]["loss"] < rows[0]["loss"] * 0.8
    assert [r["step"] for r in rows] == list(range(1, 13))
    for key in ("epoch", "lr", "grad_norm", "tokens", "tokens_per_s", "mean_token_accuracy"):
        assert key in rows[0]
    evals = [(r["step"], r["eval_loss"]) for r in metrics(out) if "eval_loss" in r]
    assert [s for s, _ in evals] == [0, 6, 12] and evals[2][1] < evals[1][1] < evals[0][1]
    for name in ("config.yaml", "loss.png", "README.md", "final/config.json", "final/chat_template.jinja"):
        assert (out / name).exists(), name
    assert list((out / "tb").iterdir())
    assert "train fingerprint" in (out / "README.md").read_text()


@pytest.mark.skipif(library("mimalloc") is None, reason="cmeel-mimalloc is installed on Linux x86-64/arm64 only")
def test_the_command_trains_on_mimalloc(sft_run):
    assert "unitune: malloc: mimalloc" in sft_run[1].stdout


def test_sft_final_loads_with_transformers(sft_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = sft_run[0] / "out" / "final"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.use_cache  # off while training, not in what training leaves
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "Greet guest number 3."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert "Welcome" in tok.decode(gen[0, ids["input_ids"].shape[1]:])


def test_saved_config_repeats_the_run(sft_run, tmp_path):
    """config.yaml fed back in reproduces the same weights."""
    tmp, _ = sft_run
    proc = cli("sft", "--config", tmp / "out" / "config.yaml", "--train.output_dir", tmp_path / "again")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = load_file(tmp / "out" / "final" / "model.safetensors")
    again = load_file(tmp_path / "again" / "final" / "model.safetensors")
    for name in first:
        torch.testing.assert_close(first[name], again[name], msg=name)


def test_pt_on_builtin_text_with_lora(tmp_path):
    out = tmp_path / "pt"
    proc = cli("pt", "--model", "tiny-qwen2", "--data.train", "tiny-stories#64", "--data.max_length", "128",
               "--lora.r", "16", "--train.lr", "1e-2", "--train.max_steps", "10", "--train.output_dir", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "packed 64 examples into" in proc.stdout
    rows = metrics(out)
    assert rows[-1]["loss"] < rows[0]["loss"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "final")  # base + adapter through peft
    assert any("lora" in n for n, _ in model.named_parameters())


def test_config_show_prints_effective_yaml(tmp_path):
    proc = cli("config", "show", "pt", "--lora.r", "32", "--model", "tiny-llama")
    assert proc.returncode == 0, proc.stderr
    assert "r: 32" in proc.stdout and "name: tiny-llama" in proc.stdout and "packing: true" in proc.stdout


def test_config_show_for_inference_verbs():
    proc = cli("config", "show", "serve", "--serve.port", "9", "--generate.temperature", "0.2")
    assert proc.returncode == 0, proc.stderr
    assert "port: 9" in proc.stdout and "temperature: 0.2" in proc.stdout
