"""LoRA's frozen base stored in the autocast dtype: the same arithmetic, less memory, the fp32
originals back for merging."""

import copy
import json

import pytest
import torch

from tests.conftest import recording_casts
from tests.e2e.helpers import chat_rows, cli, write_jsonl
from unitune.config import Config, LoraConfig, TrainConfig
from unitune.models.load import load_model
from unitune.models.lora import frozen_base_dtype, lower_frozen_base, prepare_for_training, restore_frozen_base


def lora_model(name="tiny-llama"):
    torch.manual_seed(0)
    model = prepare_for_training(load_model(name), LoraConfig(r=4), TrainConfig())
    with torch.no_grad():  # B starts at zero; make the adapters do something
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


def step(model, ids):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_bf16_base_gives_the_same_loss_and_gradients_under_autocast():
    """Autocast casts a frozen fp32 weight to bf16 at every use; storing it in bf16 once is the same
    arithmetic: loss and every LoRA gradient bit for bit."""
    kept = lora_model()
    lowered = copy.deepcopy(kept)
    moved = lower_frozen_base(lowered, torch.bfloat16)
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(1))
    loss0, grads0 = step(kept, ids)
    loss1, grads1 = step(lowered, ids)
    assert torch.equal(loss0, loss1)
    assert grads0.keys() == grads1.keys() and all(torch.equal(grads0[n], grads1[n]) for n in grads0)
    linears = [m.base_layer.weight for n, m in lowered.named_modules() if n.endswith(("q_proj", "down_proj"))]
    assert linears and all(w.dtype == torch.bfloat16 for w in linears)
    assert moved == sum(m.base_layer.weight.numel() for _, m in lowered.named_modules() if hasattr(m, "lora_A"))


def test_what_is_trained_or_shared_stays_fp32():
    model = lora_model()
    lower_frozen_base(model, torch.bfloat16)
    for name, p in model.named_parameters():
        if "lora_" in name or "norm" in name or "embed" in name or "lm_head" in name:
            assert p.dtype == torch.float32, name
    assert model.get_input_embeddings().weight.dtype == torch.float32


def test_restore_gives_back_the_fp32_originals():
    model = lora_model()
    original = {n: p.clone() for n, p in model.named_parameters() if "base_layer" in n}
    lower_frozen_base(model, torch.bfloat16)
    restore_frozen_base(model, load_model("tiny-llama"))
    restored = {n: p for n, p in model.named_parameters() if "base_layer" in n}
    assert all(restored[n].dtype == torch.float32 and torch.equal(restored[n], original[n]) for n in original)


def mapped_rss_kib(path) -> int:
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
                inside = len(fields) >= 6 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_lowering_releases_the_mapped_pages_of_the_originals(tmp_path):
    """transformers maps the weight file; once read, the originals' pages would stay resident next to the
    bf16 copies. Lowering drops them, and leaves what is still used (embeddings, norms) intact."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    weights = (tmp_path / "model.safetensors").resolve()
    model = prepare_for_training(load_model(str(tmp_path)), LoraConfig(r=4), TrainConfig())
    embeddings = model.get_input_embeddings().weight.clone()
    touched = sum(float(p.detach().double().sum()) for p in model.parameters())
    resident = mapped_rss_kib(weights)
    lowered_kib = lower_frozen_base(model, torch.bfloat16) * 4 // 1024
    after = mapped_rss_kib(weights)
    assert resident > lowered_kib  # the originals' pages are resident once read
    assert resident - after > 0.9 * lowered_kib  # and lowering gave back those of the originals
    assert torch.equal(model.get_input_embeddings().weight, embeddings)
    assert abs(sum(float(p.detach().double().sum()) for p in model.parameters()) - touched) < 1e-2 * abs(touched) + 1


def cfg(**sections) -> Config:
    c = Config()
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(c, section), key, value)
    return c


@pytest.mark.parametrize("verb,sections,expected", [
    ("sft", {"train": {"mixed_precision": "bf16"}}, torch.bfloat16),
    ("dpo", {"train": {"mixed_precision": "fp16"}}, torch.float16),
    ("sft", {}, None),  # fp32: nothing to gain
    ("sft", {"train": {"mixed_precision": "bf16"}, "lora": {"base_dtype": "model"}}, None),
    ("sft", {"train": {"mixed_precision": "bf16"}, "lora": {"enabled": False}}, None),  # full fine-tuning
    ("sft", {"train": {"mixed_precision": "bf16"}, "lora": {"use_dora": True}}, None),  # DoRA reads the base
    ("grpo", {"train": {"mixed_precision": "bf16"}}, torch.bfloat16),
    ("grpo", {"train": {"mixed_precision": "bf16"}, "grpo": {"rollout_dtype": "float32"}}, None),  # fp32 rollouts
])
def test_when_the_base_is_lowered(verb, sections, expected):
    assert frozen_base_dtype(cfg(**sections), verb) == expected


def test_bf16_run_merges_into_the_fp32_base(tmp_path):
    """A bf16 LoRA run with --lora.merge true: final/ is the fp32 base plus a rank-r update, not its bf16
    copy plus one (whose difference from the base would be full-rank rounding noise)."""
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(16))
    out = tmp_path / "run"
    done = cli("sft", "--model.name", "tiny-llama", "--data.train", data, "--train.output_dir", out,
               "--train.max_steps", "3", "--train.batch_size", "4", "--train.lr", "1e-2", "--lora.r", "4",
               "--train.mixed_precision", "bf16", "--lora.merge", "true", "--train.plot", "false")
    assert done.returncode == 0, done.stderr
    assert "frozen base weights stored in bfloat16" in done.stdout
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    base = load_model("tiny-llama").state_dict()
    assert json.loads((out / "final" / "config.json").read_text()).get("dtype", "float32") == "float32"
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        assert merged[name].dtype == torch.float32
        singular = torch.linalg.svdvals((merged[name] - base[name]).double())
        assert singular[0] > 1e-4  # training moved it
        assert singular[4:].max() < 1e-5 * singular[0], name  # by a rank-4 update only


def test_a_lowered_model_does_not_copy_layer_inputs_to_fp32():
    """peft casts each LoRA layer's input to the adapters' fp32 and autocast casts it straight back;
    once the base is lowered the model runs under autocast only and that round trip is off. What is
    left: no fp32 copy of an MLP-wide activation in forward or backward (the same loss, above)."""
    def mlp_wide_fp32_copies(model):
        width = model.config.intermediate_size
        with recording_casts() as mode:
            step(model, torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(1)))
        return [shape for shape, dtype in mode.casts  # activations, not weights
                if dtype == torch.float32 and shape[-1] == width and len(shape) > 2]

    kept = lora_model()
    lowered = copy.deepcopy(kept)
    lower_frozen_base(lowered, torch.bfloat16)
    assert mlp_wide_fp32_copies(kept)  # the round trip the lowering removes
    assert mlp_wide_fp32_copies(lowered) == []
