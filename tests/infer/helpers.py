"""Shared by tests/infer and tests/serve: adapters made once per session, and a
reference sampler (a full forward pass per token, no cache, no batching)."""

import contextlib
import functools
import json
import tempfile
from pathlib import Path

PIRATE_ROWS = [{"messages": [{"role": "user", "content": f"Say hello to guest {i}."},
                             {"role": "assistant", "content": "Arr, ahoy matey! Arr!"}]} for i in range(8)]


@functools.lru_cache(maxsize=None)
def adapters() -> dict[str, str]:
    """{'pirate': a LoRA run's final/ folder (unitune.sft on tiny-llama), 'noise': a random peft adapter}."""
    import unitune

    root = Path(tempfile.mkdtemp(prefix="unitune-adapters-"))
    data = root / "pirate.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PIRATE_ROWS))
    result = unitune.sft(model="tiny-llama", data={"train": [str(data)]}, lora={"r": 4},
                         train={"max_steps": 2, "lr": 0.05, "batch_size": 4, "output_dir": str(root / "run"),
                                "plot": False, "tensorboard": False, "progress": False})
    return {"pirate": str(result.final_dir), "noise": str(_random_adapter(root / "noise"))}


def _random_adapter(dest: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from unitune.models.load import load_model, load_tokenizer

    torch.manual_seed(1)
    model = get_peft_model(load_model("tiny-llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                init_lora_weights=False))
    model.save_pretrained(dest)
    load_tokenizer("tiny-llama").save_pretrained(dest)
    return dest


def reference_sample(model, prompt_ids, seed: int, n: int, temperature: float = 1.0, eos=(2,)) -> list[int]:
    """What the engine promises: per token, softmax(logits / T) and one uniform from the
    request's generator, inverse-CDF; here with a plain full forward pass every step."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids, out = list(prompt_ids), []
    with torch.inference_mode():
        for _ in range(n):
            logits = model(torch.tensor([ids])).logits[0, -1].float()
            cdf = torch.softmax(logits / temperature, -1).cumsum(-1)
            u = torch.rand(1, generator=g)
            token = int(torch.searchsorted(cdf, u * cdf[-1], right=True).clamp(max=len(cdf) - 1))
            ids.append(token)
            out.append(token)
            if token in eos:
                break
    return out


@contextlib.contextmanager
def one_thread():
    """torch on one CPU thread, restored after: on a 2-core machine shared with other jobs,
    two OpenMP threads waiting on each other make each small decode step many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
