"""What `train.recompute_elementwise` costs one training pass: forward + backward of SmolLM2-135M with LoRA
(r=8, all linear layers) or in full (--full), fp32, with the recipes and without, two models in one
process, alternating. --norms-only: both with the recipes, one without its trained norms checkpointed
(full fine-tuning's part of it).

    .venv/bin/python bench/recompute_ab.py [--tokens 120] [--rows 16] [--allocator release|keep] [--repeats 8]
    .venv/bin/python bench/recompute_ab.py --full --norms-only --rows 4 --tokens 250

The default shape is a GRPO step's training pass (16 rows of prompt + 64 completion tokens). Medians
after the first two passes of each (first-call costs); every time is printed.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=120)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--allocator", default="release", choices=["release", "keep"])
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument("--norms-only", action="store_true", help="A/B only the trained norms' checkpointing")
    args = p.parse_args()

    import torch

    from unitune.config import LoraConfig, TrainConfig
    from unitune.models.load import load_model
    from unitune.models.lora import prepare_for_training
    from unitune.train.allocator import cpu_allocator

    def make(recompute: bool):
        torch.manual_seed(0)
        model = prepare_for_training(load_model("smollm2-135m-instruct"),
                                     LoraConfig(enabled=not args.full, r=8, alpha=16),
                                     TrainConfig(recompute_elementwise=recompute or args.norms_only))
        if args.norms_only and not recompute:  # the norms' own forward back: recipes, no checkpoint
            for module in model.modules():
                if "_unitune_forward" in vars(module) and type(module).__name__.endswith("RMSNorm"):
                    module.forward = module._unitune_forward
        return model.train()

    models = {True: make(True), False: make(False)}
    ids = torch.randint(0, 40000, (args.rows, args.tokens))
    times = {True: [], False: []}
    body = {k: m.get_base_model().model if hasattr(m, "get_base_model") else m.model for k, m in models.items()}
    with cpu_allocator(args.allocator, device_type="cpu", full_finetune=False):
        for i in range(args.repeats):
            for recompute in ((True, False) if i % 2 else (False, True)):
                model = models[recompute]
                began = time.perf_counter()
                hidden = body[recompute](ids).last_hidden_state
                hidden.pow(2).mean().backward()
                times[recompute].append(time.perf_counter() - began)
                del hidden
                model.zero_grad(set_to_none=True)
    kind = "full" if args.full else "LoRA"
    print(f"{args.rows} rows x {args.tokens} tokens, fp32 {kind}, allocator {args.allocator}:")
    for recompute in (True, False):
        if args.norms_only:
            label = "trained norms checkpointed    " if recompute else "trained norms not checkpointed"
        else:
            label = "recompute_elementwise true " if recompute else "recompute_elementwise false"
        print(f"  {label}: median {statistics.median(times[recompute][2:]):.3f} s  "
              f"({', '.join(f'{t:.2f}' for t in times[recompute])})")


if __name__ == "__main__":
    main()
