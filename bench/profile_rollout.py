"""Where a GRPO rollout spends its time: torch.profiler over one group generation on SmolLM2-135M with LoRA.

    .venv/bin/python bench/profile_rollout.py [--prompts 4] [--generations 4] [--tokens 64] [--dtype bfloat16] [--prepack]

The benchmark's GRPO shape by default (4 prompts x 4 completions x 64 new tokens, temperature 1,
LoRA r=8 on all linear layers, fp32). `--dtype bfloat16`: generate from the bf16 copy with LoRA merged
(what `grpo.rollout_dtype` auto does under bf16 mixed precision); `--prepack`: from a copy whose linear weights
are pre-packed for oneDNN (`grpo.rollout_prepack`). Prints tokens/s and the top operators.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from unitune.models.load import load_model, load_tokenizer  # noqa: E402
from unitune.rl.rollout import DTYPES, HFRollout, SamplingParams  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--dtype", default="", choices=["", "bfloat16", "float16"])
    ap.add_argument("--prepack", action="store_true")
    args = ap.parse_args()
    tok = load_tokenizer("smollm2-135m-instruct")
    model = get_peft_model(load_model("smollm2-135m-instruct"),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0))
    rollout = HFRollout(model, tok, chat_template=tok.chat_template, dtype=DTYPES.get(args.dtype),
                        prepack=args.prepack)
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"What is {i + 17} plus {3 * i + 5}?"}],
                                       add_generation_prompt=True, tokenize=True, return_dict=False)
               for i in range(args.prompts)]
    params = SamplingParams(max_new_tokens=args.tokens, temperature=1.0)
    rollout.generate(prompts, args.generations, params, seed=0)  # warm-up
    t = time.perf_counter()
    out = rollout.generate(prompts, args.generations, params, seed=1)
    wall = time.perf_counter() - t
    n = sum(len(c.token_ids) for c in out)
    print(f"{n} tokens in {wall:.2f}s: {n / wall:.0f} tok/s ({torch.get_num_threads()} threads)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rollout.generate(prompts, args.generations, params, seed=2)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
