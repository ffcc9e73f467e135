"""AdamW's three torch implementations on SmolLM2-135M's parameter shapes (full fine-tuning): seconds per step.

    .venv/bin/python bench/adamw_impl.py [REPEATS]

unitune builds `torch.optim.AdamW(groups, lr, betas)`, which on CPU tensors runs the per-tensor loop
(foreach and fused both default to off on CPU); transformers' Trainer (TRL, ms-swift,
LLaMA-Factory) defaults to `adamw_torch_fused`. The three are timed in alternation on the real
shapes (random values) and the updated parameters compared, and a fourth: the fused one stepped
one parameter at a time, as `train.optimizer_in_backward` steps it (one `step()` per parameter, the
others' gradients None).
"""

import json
import statistics
import sys
import time
from pathlib import Path

import torch


def shapes() -> list[tuple]:
    from unitune.models.registry import ensure_builtin

    path = Path(ensure_builtin("smollm2-135m-instruct")) / "model.safetensors"
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return [tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"]


def main(repeats: int = 3) -> None:
    torch.manual_seed(0)
    base = [torch.randn(s) * 0.02 for s in shapes()]
    grads = [torch.randn(s) * 1e-3 for s in shapes()]
    runs = {}
    for kind in ("for-loop", "foreach", "fused", "fused, per parameter"):
        params = [torch.nn.Parameter(p.clone()) for p in base]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt = torch.optim.AdamW(params, lr=1e-4, foreach=kind == "foreach", fused=kind.startswith("fused"))
        runs[kind] = (params, opt, [])
    for r in range(repeats + 1):
        for kind, (params, opt, times) in runs.items():
            t = time.perf_counter()
            if kind == "fused, per parameter":
                held = [p.grad for p in params]
                for p in params:
                    p.grad = None
                for p, g in zip(params, held):
                    p.grad = g
                    opt.step()
                    p.grad = None
                for p, g in zip(params, held):
                    p.grad = g
            else:
                opt.step()
            if r:
                times.append(time.perf_counter() - t)
    ref = runs["for-loop"][0]
    n = sum(p.numel() for p in ref)
    for kind, (params, _, times) in runs.items():
        diff = max((a - b).abs().max().item() for a, b in zip(params, ref))
        print(f"AdamW {kind:20s}: {statistics.median(times):.3f} s/step over {n / 1e6:.0f}M parameters "
              f"({torch.get_num_threads()} thread(s)); max |param - for-loop's| {diff:.1e}")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:2]])
