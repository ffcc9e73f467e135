"""What one training forward keeps for backward: memory malloc has handed out after the forward
minus before it (the activations, including what autograd saves), for SmolLM2-135M on one row of
800 tokens, fp32 or bf16 autocast, LoRA or full fine-tuning, with the training switches as flags.

    .venv/bin/python bench/saved_tensors.py [--bf16] [--full] [--train.recompute_elementwise false]

Each setting runs in a fresh process (this script re-runs itself), three forwards, the median reported.
"""

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 800


def measure(bf16: bool, full: bool, recompute: bool) -> float:
    import psutil
    import torch

    from unitune.config import LoraConfig, TrainConfig
    from unitune.models.load import load_model
    from unitune.models.lora import lower_frozen_base, prepare_for_training

    def in_use() -> int:
        heap = psutil.heap_info()
        return heap.heap_used + heap.mmap_used

    torch.manual_seed(0)
    model = load_model("smollm2-135m-instruct")
    model = prepare_for_training(model, LoraConfig(enabled=not full, r=8, alpha=16),
                                 TrainConfig(recompute_elementwise=recompute))
    if bf16 and not full:
        lower_frozen_base(model, torch.bfloat16)
    model.train()
    ids = torch.randint(0, 40000, (1, TOKENS))
    body = model.get_base_model().model if hasattr(model, "get_base_model") else model.model
    kept = []
    for _ in range(3):
        before = in_use()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = body(ids).last_hidden_state
        kept.append(in_use() - before - hidden.nbytes)
        hidden.sum().backward()
        del hidden
        model.zero_grad(set_to_none=True)
    return statistics.median(kept) / 2**20


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        bf16, full, recompute = (a == "1" for a in argv[1:4])
        print(f"{measure(bf16, full, recompute):.1f}")
        return
    bf16, full = "--bf16" in argv, "--full" in argv
    print(f"{'bf16 autocast' if bf16 else 'fp32'}, {'full fine-tuning' if full else 'LoRA r=8, all linear layers'}, "
          f"{TOKENS} tokens, the decoder layers' activations kept for backward:")
    for recompute in (False, True):
        out = subprocess.run([sys.executable, __file__, "--child", str(int(bf16)), str(int(full)), str(int(recompute))],
                             capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()[-1]
        print(f"  train.recompute_elementwise {str(recompute).lower():5s}: {float(out):7.1f} MiB "
              f"({float(out) * 2**20 / TOKENS / 1024:.0f} KiB a token)")


if __name__ == "__main__":
    main(sys.argv[1:])
