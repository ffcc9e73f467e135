"""transformers' `sdpa` (key/value heads copied once per query head under a mask) against unitune's
(`enable_gqa`, unitune/models/attention.py) in a training forward + backward of SmolLM2-135M on a padded
batch shaped like the suite's longest (4 rows of 300, 270, 230 and 190 tokens) passed with its mask, full
fine-tuning or LoRA. A pass with a mask is what packed rows, DPO's and GRPO's shared-prefix rows and
left-padded prefills are; right-padded SFT batches run unmasked in unitune (objectives/head.py::model_mask),
where transformers already passes `enable_gqa`, so they do not change.

    .venv/bin/python bench/attention_gqa.py [--lora] [--rounds 3] [--repeats 3]

Per attention function: milliseconds per forward + backward (the best round's mean; the two alternate
within each round), and what the forward keeps for backward (malloc's bytes in use after it minus
before, less its output; glibc's malloc, whose counters psutil reads). fp32, torch's default threads.
"""

import argparse
import statistics
import time

LENGTHS = (300, 270, 230, 190)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lora", action="store_true")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    import psutil
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from unitune.config import LoraConfig, TrainConfig
    from unitune.models.attention import grouped_sdpa
    from unitune.models.load import load_model
    from unitune.models.lora import prepare_for_training

    torch.manual_seed(0)
    model = prepare_for_training(load_model("smollm2-135m-instruct"), LoraConfig(enabled=args.lora, r=8, alpha=16),
                                 TrainConfig())
    model.train()
    ids = torch.randint(5, 40000, (len(LENGTHS), max(LENGTHS)))
    mask = (torch.arange(max(LENGTHS))[None] < torch.tensor(LENGTHS)[:, None]).long()
    body = model.get_base_model().model if hasattr(model, "get_base_model") else model.model

    def in_use() -> int:
        heap = psutil.heap_info()
        return heap.heap_used + heap.mmap_used

    def step() -> int:
        before = in_use()
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        kept = in_use() - before - hidden.nbytes
        (hidden * mask[..., None]).square().mean().backward()
        model.zero_grad(set_to_none=True)
        return kept

    functions = {"transformers sdpa": sdpa_attention_forward, "unitune grouped_sdpa": grouped_sdpa}
    ms = {name: [] for name in functions}
    kept = {name: [] for name in functions}
    for name, fn in functions.items():  # warm-up
        AttentionInterface.register("sdpa", fn)
        step()
    for _ in range(args.rounds):
        for name, fn in functions.items():
            AttentionInterface.register("sdpa", fn)
            t = time.perf_counter()
            kept[name] += [step() for _ in range(args.repeats)]
            ms[name].append((time.perf_counter() - t) / args.repeats * 1e3)
    print(f"SmolLM2-135M, {'LoRA r=8' if args.lora else 'full fine-tuning'}, fp32, rows of {LENGTHS} tokens, "
          f"{torch.get_num_threads()} threads")
    print("| attention | ms per forward + backward (best round; all) | kept for backward, MiB |")
    print("|---|---|---:|")
    for name in functions:
        rounds = ", ".join(f"{m:.0f}" for m in ms[name])
        print(f"| {name} | {min(ms[name]):.0f} ({rounds}) | {statistics.median(kept[name]) / 2**20:.0f} |")


if __name__ == "__main__":
    main()
