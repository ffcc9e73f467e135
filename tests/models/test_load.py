"""Model resolution: built-in, GGUF, folders, hub ids offline; LoRA variants, freezing, checkpointing."""

import pytest
import torch

from unitune.config import LoraConfig, TrainConfig
from unitune.errors import UnituneError
from unitune.models.load import load_model, load_tokenizer, resolve
from unitune.models.lora import count_parameters, prepare_for_training
from unitune.models.registry import ensure_builtin, smollm2_gguf_path


def test_gguf_file_loads_with_the_same_logits_as_the_builtin_folder(tmp_path):
    """The built-in folder is the GGUF converted once: both give bit-identical logits, and the GGUF-loaded
    model saves normally (transformers alone refuses to save a model loaded from GGUF)."""
    ids = torch.tensor([[1, 504, 3458, 314, 260, 1345]])
    from_gguf = load_model(str(smollm2_gguf_path())).eval()
    from_folder = load_model("smollm2-135m-instruct").eval()
    with torch.no_grad():
        assert torch.equal(from_gguf(ids).logits, from_folder(ids).logits)
    assert resolve("smollm2-135m-instruct")[0] == str(ensure_builtin("smollm2-135m-instruct"))
    from_gguf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()


def test_hub_id_offline_is_one_clear_error():
    with pytest.raises(UnituneError, match="not in the local Hugging Face cache"):
        load_tokenizer("nobody-here/no-such-model-xyz")


def test_unknown_name_suggests_a_builtin():
    with pytest.raises(UnituneError, match="did you mean 'tiny-qwen2'"):
        resolve("tiny-qwen")


def test_folder_without_config_is_an_error(tmp_path):
    with pytest.raises(UnituneError, match="no config.json"):
        resolve(str(tmp_path))


@pytest.mark.parametrize("variant", [{}, {"use_dora": True}, {"use_rslora": True}])
def test_lora_variants_train_only_adapters(variant):
    model = prepare_for_training(load_model("tiny-llama"), LoraConfig(r=4, **variant), TrainConfig())
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora" in n for n in names)
    if variant.get("use_dora"):
        assert any("magnitude" in n for n in names)
    assert model.peft_config["default"].use_rslora == variant.get("use_rslora", False)
    out = model(input_ids=torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6, 7]]))
    out.loss.backward()


def test_freeze_layers_and_gradient_checkpointing():
    model = prepare_for_training(load_model("tiny-llama"), LoraConfig(enabled=False),
                                 TrainConfig(freeze_layers=1, gradient_checkpointing=True))
    trainable, total = count_parameters(model)
    assert 0 < trainable < total
    assert not model.get_input_embeddings().weight.requires_grad
    assert not any(p.requires_grad for p in model.model.layers[0].parameters())
    assert all(p.requires_grad for p in model.model.layers[1].parameters())
    assert model.is_gradient_checkpointing
    model.train()
    model(input_ids=torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6, 7]])).loss.backward()
    assert model.model.layers[1].mlp.up_proj.weight.grad is not None


def test_freeze_layers_with_lora_is_an_error():
    with pytest.raises(UnituneError, match="freeze_layers"):
        prepare_for_training(load_model("tiny-llama"), LoraConfig(), TrainConfig(freeze_layers=1))


def test_slow_on_this_cpu_follows_the_cpu_flags():
    """bf16 is emulated unless the CPU has AVX-512 BF16 or AMX; float32 never counts as slow."""
    import pathlib
    import platform

    from unitune.models.load import X86, slow_on_this_cpu

    assert slow_on_this_cpu("float32") is False
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if not cpuinfo.exists() or platform.machine().lower() not in X86:
        pytest.skip("an x86 CPU's /proc/cpuinfo to compare with")
    flags = cpuinfo.read_text()
    assert slow_on_this_cpu("bfloat16") == (not any(f in flags for f in ("avx512_bf16", "amx_tile")))


@pytest.mark.parametrize("slow", [True, False])
def test_a_bf16_model_on_a_cpu_without_bf16_is_warned_about(monkeypatch, capsys, slow):
    import unitune.models.load as load

    monkeypatch.setattr(load, "slow_on_this_cpu", lambda dtype: slow)
    model = load.load_model("tiny-llama", dtype="bfloat16")
    assert model.dtype == torch.bfloat16  # warned, not overridden: the user asked for it
    err = capsys.readouterr().err
    assert ("model.dtype bfloat16 on a CPU without bf16 arithmetic" in err) == slow
    assert ("use --model.dtype float32" in err) == slow
    load.load_model("tiny-llama", dtype="float32")
    assert "warning" not in capsys.readouterr().err
