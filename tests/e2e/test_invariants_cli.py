"""Invariants through the real CLI: resumed == uninterrupted, DDP over 2 gloo processes == 1 process
with the same global batch."""

import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.e2e.helpers import chat_rows, cli, metrics, write_jsonl


def common(data, out, *extra):
    return ["sft", "--model", "tiny-llama", "--data.train", data, "--data.max_length", "64",
            "--data.group_by_length", "false", "--lora.enabled", "false", "--train.lr", "2e-3",
            "--train.output_dir", out, "--train.progress", "false", "--train.tensorboard", "false", *extra]


def assert_same_weights(a, b, atol=1e-6, rtol=1e-5):
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=rtol, msg=name)


# glibc's malloc, whose knobs train.cpu_allocator turns (the command otherwise runs on mimalloc where installed)
GLIBC = {"UNITUNE_MALLOC": "system"}


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_resumed_run_equals_uninterrupted(tmp_path, optimizer):
    """Also across mallocs: the uninterrupted run on glibc's, with train.cpu_allocator keeping what it
    frees, the resumed one on the command's own."""
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(40))
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    proc = cli(*common(data, full, "--train.max_steps", "6", "--train.save_every", "3", "--train.batch_size", "4",
                       "--train.optimizer", optimizer), env=GLIBC)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CPU allocator keeps freed memory" in proc.stdout  # full fine-tuning on CPU: train.cpu_allocator auto
    state = torch.load(full / "checkpoints" / "step-3" / "optim.pt", weights_only=False)["optimizer"]["state"]
    assert ("exp_avg_sq_row" if optimizer == "adafactor" else "exp_avg") in state[0]  # the optimizer asked for
    # the run that "crashed" after step 3: only its checkpoint survives
    shutil.copytree(full / "checkpoints" / "step-3", resumed / "checkpoints" / "step-3")
    proc = cli(*common(data, resumed, "--train.max_steps", "6", "--train.batch_size", "4", "--train.resume", "latest",
                       "--train.optimizer", optimizer))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout
    assert_same_weights(full, resumed, atol=0)
    assert [r["loss"] for r in metrics(full)][3:] == [r["loss"] for r in metrics(resumed)]


def test_ddp_two_processes_equal_one(tmp_path):
    """Bit for bit, with one thread in every process: a product's rounding may depend on how many threads
    share it (on an Intel CPU with AVX-512, 2 threads against 1 left one up_proj element of 8192 1.2e-5
    apart after three AdamW steps, which turn a gradient's last bits near zero into a whole update)."""
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(32))
    one, two = tmp_path / "one", tmp_path / "two"
    env = {"OMP_NUM_THREADS": "1"}
    proc = cli(*common(data, one, "--train.max_steps", "3", "--train.batch_size", "2", "--train.grad_accum", "2"),
               env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = cli(*common(data, two, "--train.max_steps", "3", "--train.batch_size", "2", "--train.nproc", "2"),
               env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    assert_same_weights(one, two, atol=0, rtol=0)
    for a, b in zip(metrics(one), metrics(two)):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["tokens"] == b["tokens"]


def test_checkpointed_lora_run_equals_the_plain_one(tmp_path):
    """Gradient checkpointing recomputes activations, and with LoRA on CPU glibc's allocator then hands
    memory back after every step (train.cpu_allocator auto): neither changes what is trained, nor does the
    malloc (the plain run on the command's own)."""
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(24))
    plain, checkpointed = tmp_path / "plain", tmp_path / "checkpointed"
    args = ["--lora.enabled", "true", "--lora.r", "4", "--train.max_steps", "4", "--train.batch_size", "4"]
    proc = cli(*common(data, plain, *args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hands freed memory back" not in proc.stdout
    if "malloc: mimalloc" in proc.stdout:  # there LoRA keeps freed pages a few seconds (train.cpu_allocator auto)
        assert "CPU allocator keeps freed memory" in proc.stdout
    proc = cli(*common(data, checkpointed, *args, "--train.gradient_checkpointing", "true"), env=GLIBC)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hands freed memory back after every step" in proc.stdout
    for a, b in zip(metrics(plain), metrics(checkpointed), strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5
    wa = load_file(plain / "final" / "adapter_model.safetensors")
    wb = load_file(checkpointed / "final" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_lora_on_cpu_trains_a_long_batch_as_passes_with_the_same_result(tmp_path):
    """train.max_tokens_per_forward auto (the default): on CPU a LoRA batch of 4 rows of ~300 tokens
    (over 768 padded tokens, auto's budget in fp32) trains as several passes, to the losses and adapter of one pass a batch;
    full fine-tuning keeps one pass, and config.yaml records what auto chose."""
    long = [{"messages": [{"role": "user", "content": f"Count for guest {i}."},
                          {"role": "assistant", "content": " ".join(["one two three"] * 95)}]} for i in range(8)]
    data = write_jsonl(tmp_path / "long.jsonl", long)
    args = ["--data.max_length", "512", "--lora.enabled", "true", "--lora.r", "4", "--train.max_steps", "2",
            "--train.batch_size", "4"]
    auto, whole = tmp_path / "auto", tmp_path / "whole"
    proc = cli(*common(data, auto, *args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train.max_tokens_per_forward auto: 768" in proc.stdout
    assert "step 1 runs its 1 micro-batch(es) as 2 forward/backward passes" in proc.stdout
    assert "max_tokens_per_forward: 768" in (auto / "config.yaml").read_text()
    proc = cli(*common(data, whole, *args, "--train.max_tokens_per_forward", "0"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "forward/backward passes" not in proc.stdout
    for a, b in zip(metrics(auto), metrics(whole), strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["tokens"] == b["tokens"]
    wa = load_file(auto / "final" / "adapter_model.safetensors")
    wb = load_file(whole / "final" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)

    proc = cli(*common(data, tmp_path / "full", *args[:2], "--train.max_steps", "1", "--train.batch_size", "4"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max_tokens_per_forward auto" not in proc.stdout and "forward/backward passes" not in proc.stdout
    assert "max_tokens_per_forward: 0" in (tmp_path / "full" / "config.yaml").read_text()


def test_full_finetuning_with_long_passes_partly_checkpointed_trains_the_same(tmp_path):
    """train.checkpoint_above_tokens: passes over the budget run some decoder layers checkpointed, to the
    losses and weights of the run without it."""
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(16))
    args = ["--train.max_steps", "3", "--train.batch_size", "4"]
    plain, budgeted = tmp_path / "plain", tmp_path / "budgeted"
    proc = cli(*common(data, plain, *args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = cli(*common(data, budgeted, *args, "--train.checkpoint_above_tokens", "64"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train.checkpoint_above_tokens 64: a pass of T > 64 padded tokens" in proc.stdout
    for a, b in zip(metrics(plain), metrics(budgeted), strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["tokens"] == b["tokens"]
    assert_same_weights(plain, budgeted, atol=1e-6)


def test_a_compiled_full_finetuning_run_trains_like_the_eager_one(tmp_path):
    """train.compile: decoder layers compiled by torch.compile (their own fusion and recomputation) reach the
    eager run's losses and weights up to the compiler's fp32 rounding, over batches of several lengths."""
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(16) + [
        {"messages": [{"role": "user", "content": "Tell me about guest number 7, at length, please."},
                      {"role": "assistant", "content": "Guest number seven is welcome aboard. " * 3}]}])
    args = ["--train.max_steps", "4", "--train.batch_size", "4"]
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    proc = cli(*common(data, eager, *args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = cli(*common(data, compiled, *args, "--train.compile", "true", "--train.compile_memory_budget", "0.3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train.compile: decoder layers compiled for training" in proc.stdout
    assert re.search(r"train.compile: [1-9]\d* graph\(s\) compiled", proc.stdout), proc.stdout[-2000:]
    for a, b in zip(metrics(eager), metrics(compiled), strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-4 and a["tokens"] == b["tokens"]
    assert_same_weights(eager, compiled, atol=1e-4)
