"""unitune's eager decoder layers against `train.compile` (unitune/models/compile.py) in a training forward +
backward of SmolLM2-135M, on a batch shaped like the suite's longest (4 rows of 300, 270, 230 and 190 tokens,
right-padded, so unmasked as unitune's SFT passes run: objectives/head.py::model_mask), full fine-tuning
or LoRA.

    .venv/bin/python bench/compile_ab.py [--budget 0.5] [--lora] [--rounds 5]

Prints the compilation time (two warm-up batches of other lengths, so the dynamic graph is the one timed),
then per round milliseconds per forward + backward and what the forward keeps for backward (malloc's
bytes in use after it minus before, less its output: glibc's malloc, whose counters psutil reads), the
two alternating; and the largest relative gradient difference between them. fp32, torch's threads.
"""

import argparse
import copy
import statistics
import time

LENGTHS = (300, 270, 230, 190)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=float, default=0.5, help="train.compile_memory_budget")
    p.add_argument("--lora", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    import psutil
    import torch

    from unitune.config import LoraConfig, TrainConfig
    from unitune.models.load import load_model
    from unitune.models.lora import prepare_for_training

    torch.manual_seed(0)
    base = load_model("smollm2-135m-instruct")
    lora = LoraConfig(enabled=args.lora, r=8, alpha=16)
    models = {"eager": prepare_for_training(copy.deepcopy(base), lora, TrainConfig()),
              "compiled": prepare_for_training(base, lora, TrainConfig(compile=True,
                                                                       compile_memory_budget=args.budget))}
    for model in models.values():
        model.train()

    def in_use() -> int:
        heap = psutil.heap_info()
        return heap.heap_used + heap.mmap_used

    def step(model, lengths) -> tuple[int, dict]:
        ids = torch.randint(5, 40000, (len(lengths), max(lengths)), generator=torch.Generator().manual_seed(0))
        mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
        body = model.get_base_model().model if hasattr(model, "get_base_model") else model.model
        before = in_use()
        hidden = body(input_ids=ids).last_hidden_state  # right padding: no mask, as unitune's SFT passes
        kept = in_use() - before - hidden.nbytes
        (hidden * mask[..., None]).square().mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return kept, grads

    t = time.perf_counter()
    for lengths in [(200, 150, 120, 100), (260, 240, 200, 180)]:
        step(models["compiled"], lengths)
    print(f"compilation and two warm-up batches: {time.perf_counter() - t:.0f} s")
    step(models["eager"], (200, 150, 120, 100))
    ms = {name: [] for name in models}
    kept = {name: [] for name in models}
    grads = {}
    for _ in range(args.rounds):
        for name, model in models.items():
            t = time.perf_counter()
            k, grads[name] = step(model, LENGTHS)
            ms[name].append((time.perf_counter() - t) * 1e3)
            kept[name].append(k)
    diff = max(((grads["eager"][n] - grads["compiled"][n]).abs().max() / grads["eager"][n].abs().max()).item()
               for n in grads["eager"])
    print(f"SmolLM2-135M, {'LoRA r=8' if args.lora else 'full fine-tuning'}, fp32, rows of {LENGTHS} tokens, "
          f"compile_memory_budget {args.budget}, {torch.get_num_threads()} threads")
    print("| layers | ms per forward + backward: median (all rounds) | kept for backward, MiB |")
    print("|---|---|---:|")
    for name in models:
        rounds = ", ".join(f"{m:.0f}" for m in ms[name])
        print(f"| {name} | {statistics.median(ms[name]):.0f} ({rounds}) | {statistics.median(kept[name]) / 2**20:.0f} |")
    print(f"largest gradient difference, relative to the tensor's largest gradient: {diff:.1e}")


if __name__ == "__main__":
    main()
