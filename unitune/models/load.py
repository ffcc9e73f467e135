"""Resolve a model name to weights and a tokenizer.

A name is, in order: an existing folder (Hugging Face layout), a `.gguf` file,
a built-in name (see registry.py), or a hub id. Hub ids work online; offline a
model missing from the local cache is a one-line error, not a stack of
connection retries.
"""

import os
import sys
from pathlib import Path

from unitune.errors import UnituneError, suggest
from unitune.hub import hub_reachable
from unitune.models.registry import BUILTINS, ensure_builtin

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
X86 = ("x86_64", "amd64", "i686", "i386")


def resolve(name: str) -> tuple[str, dict]:
    """(path or hub id, extra from_pretrained kwargs) for a model name."""
    if os.path.isdir(name):
        if not (Path(name) / "config.json").exists() and not (Path(name) / "adapter_config.json").exists():
            raise UnituneError(f"model folder {name} has no config.json (is it a Hugging Face model folder?)")
        return name, {}
    if name.endswith(".gguf"):
        if not os.path.isfile(name):
            raise UnituneError(f"model file {name} does not exist")
        path = Path(name).resolve()
        return str(path.parent), {"gguf_file": path.name}
    if name in BUILTINS:
        return str(ensure_builtin(name)), {}
    if name.count("/") == 1 and not name.startswith((".", "/")):  # a hub id: offline, only the local cache
        return name, {} if hub_reachable() else {"local_files_only": True}
    raise UnituneError(
        f"model '{name}' is not a folder, a .gguf file, a built-in name or a hub id"
        f"{suggest(name, BUILTINS)}; built-in: {', '.join(BUILTINS)}"
    )


def _hub_error(name: str, err: Exception, extra: dict) -> UnituneError:
    if extra.get("local_files_only"):
        return UnituneError(f"model '{name}' is not in the local Hugging Face cache and the hub cannot be "
                            "reached; download it once online, or pass a local folder")
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return UnituneError(f"model '{name}' could not be loaded from the hub: {first}")


def load_tokenizer(name: str):
    """The tokenizer of a model, with a pad token (eos when it has none)."""
    from transformers import AutoTokenizer

    path, extra = resolve(name)
    try:
        tok = AutoTokenizer.from_pretrained(path, **extra)
    except OSError as err:
        if os.path.exists(path):
            raise UnituneError(f"cannot load a tokenizer from {path}: {err}") from None
        raise _hub_error(name, err, extra) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def slow_on_this_cpu(dtype: str) -> bool:
    """True where this CPU has no arithmetic for `dtype` ("bfloat16": AVX-512 BF16 or AMX; "float16":
    AVX-512 FP16 or AMX-FP16), so PyTorch emulates it: on an AVX2 CPU (AMD Zen 3, torch 2.13) a 512^2 matmul
    took ~70x as long in either as in float32, and an SFT LoRA step under bf16 autocast 24x (BENCHMARKS.md).
    False for float32, off x86 (these probes know x86's units only) and where this torch cannot ask the CPU."""
    import platform

    import torch

    if platform.machine().lower() not in X86:
        return False
    try:
        if dtype == "bfloat16":
            return not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        if dtype == "float16":
            flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
            return not (torch.cpu._is_amx_fp16_supported() or "avx512_fp16" in flags)
    except AttributeError:  # these probes are private to torch: without them, do not guess
        return False
    return False


def slow_dtype_warning(setting: str, dtype: str, instead: str) -> str:
    """The warning for a setting that makes a CPU run compute in an emulated dtype; `instead` is the fix."""
    name = {"bfloat16": "bf16", "float16": "fp16"}[dtype]
    units = "AVX-512 BF16 or AMX" if dtype == "bfloat16" else "AVX-512 FP16 or AMX-FP16"
    return (f"unitune: warning: {setting} on a CPU without {name} arithmetic (no {units}): PyTorch emulates it, "
            f"~70x slower than float32 per matmul on such a CPU (an SFT step under bf16 autocast: 24x; "
            f"BENCHMARKS.md); use {instead}")


def pick_dtype(dtype: str, device_type: str):
    import torch

    if dtype == "auto":
        if device_type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, DTYPES[dtype])


def load_model(name: str, *, dtype: str = "auto", device_type: str = "cpu", attn_implementation=None,
               trust_remote_code: bool = False):
    """A causal LM ready for training (plain, saveable weights even when read from GGUF)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from unitune.models.attention import use_grouped_sdpa

    use_grouped_sdpa()  # on CPU: a prefill's key/value heads not copied once per query head
    hf_logging.disable_progress_bar()  # a bar per weight file is noise; unitune prints its own summary
    path, extra = resolve(name)
    if (Path(path) / "adapter_config.json").exists() and not (Path(path) / "config.json").exists():
        return _merged_adapter(path, dtype=dtype, device_type=device_type, attn_implementation=attn_implementation,
                               trust_remote_code=trust_remote_code)
    if device_type == "cpu" and dtype in ("bfloat16", "float16") and slow_on_this_cpu(dtype):
        print(slow_dtype_warning(f"model.dtype {dtype}", dtype, "--model.dtype float32"), file=sys.stderr)
    kwargs = dict(dtype=pick_dtype(dtype, device_type), trust_remote_code=trust_remote_code, **extra)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        if os.path.exists(path):
            raise UnituneError(f"cannot load a model from {path}: {err}") from None
        raise _hub_error(name, err, extra) from None
    if "gguf_file" in extra:
        model = _plain_copy(model)
    return model


def _merged_adapter(path: str, **kwargs):
    """A LoRA run's final/ (adapter + base name): the base with the adapter merged in, a plain model.
    So training on top of it (DPO after SFT) starts from, and refers to, the SFT model."""
    import json

    from peft import PeftModel

    base = json.loads((Path(path) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise UnituneError(f"{path}/adapter_config.json names no base model (base_model_name_or_path)")
    return PeftModel.from_pretrained(load_model(base, **kwargs), path).merge_and_unload()


def _plain_copy(gguf_model):
    """GGUF-loaded models refuse save_pretrained: copy weights into a plain model."""
    from transformers import AutoModelForCausalLM

    config = gguf_model.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=gguf_model.dtype)
    model.load_state_dict(gguf_model.state_dict())
    return model


def file_mappings() -> list[tuple[int, int]]:
    """(start, end) addresses of this process's file-backed memory mappings (Linux; elsewhere none)."""
    import sys

    if not sys.platform.startswith("linux"):
        return []
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5].startswith("/") and fields[4] != "0":  # a file, with an inode
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                found.append((lo, hi))
    return found


def release_mapped(tensor, files: list[tuple[int, int]]) -> int:
    """Drop the resident pages of a memory-mapped weight that has been replaced (e.g. cast to another
    dtype); the number of bytes released. `files`: `file_mappings()`.

    transformers maps safetensors files into memory, and the mapping outlives the tensors read from
    it, so once touched their pages would count in the process's memory until it exits. Only whole
    pages inside the tensor's bytes, and only in a file-backed mapping, are dropped: they are clean
    copies of the file (a later read would fault them in again, unchanged)."""
    import ctypes
    import mmap

    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    lo, hi = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, end // mmap.PAGESIZE * mmap.PAGESIZE
    if hi <= lo or not any(a <= start and end <= b for a, b in files):
        return 0
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return hi - lo if madvise(lo, hi - lo, mmap.MADV_DONTNEED) == 0 else 0
