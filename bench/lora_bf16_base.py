"""LoRA under bf16 autocast: a frozen base kept in fp32 (recast to bf16 at every use) against one stored in bf16.

    .venv/bin/python bench/lora_bf16_base.py [LAYERS] [TOKENS] [REPEATS]      (defaults: 4 1024 5)

Autocast caches the bf16 copy of a weight only for leaf tensors that require grad; LoRA's frozen
base weights do not, so every forward (and every recomputation) casts all of them again. Storing
them in bf16 once removes those casts and halves their memory; the LoRA weights, norms and embeddings
stay fp32, so the arithmetic is what autocast does anyway. Random-initialised decoder layers of SmolLM2-135M's shape, LoRA r=8 on every
linear layer, forward + backward of one batch; the two variants timed in alternation.
"""

import copy
import statistics
import sys
import time

import torch

from lora_fused import build, step


def main(layers: int = 4, tokens: int = 1024, repeats: int = 5) -> None:
    fp32 = build(layers)
    bf16 = copy.deepcopy(fp32)
    for m in bf16.modules():  # the frozen linear weights only: what autocast would cast (norms, embeddings stay fp32)
        tied = m.weight is bf16.get_input_embeddings().weight if isinstance(m, torch.nn.Linear) else False
        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad and not tied:  # not the tied LM head
            m.weight.data = m.weight.data.to(torch.bfloat16)
    ids = torch.randint(0, 1024, (4, tokens // 4))
    times, out = {"fp32 base": [], "bf16 base": []}, {}
    for r in range(repeats + 1):
        for name, model in (("fp32 base", fp32), ("bf16 base", bf16)):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out[name] = step(model, ids)
            if r:
                times[name].append(time.perf_counter() - t)
    a, b = statistics.median(times["fp32 base"]), statistics.median(times["bf16 base"])
    (h0, g0), (h1, g1) = out["fp32 base"], out["bf16 base"]
    dg = max((g0[n] - g1[n]).abs().max().item() / max(g0[n].abs().max().item(), 1e-12) for n in g0)
    print(f"{layers} layers, {tokens} tokens, {torch.get_num_threads()} thread(s), bf16 autocast: "
          f"fp32 base {a * 1000:.0f} ms, bf16 base {b * 1000:.0f} ms per forward+backward ({a / b:.2f}x); "
          f"max |d hidden| {(h0.float() - h1.float()).abs().max().item():.1e}, max relative |d grad| {dg:.1e}")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:4]])
