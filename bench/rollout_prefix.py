"""Shared-prefix rollouts against independent ones: the same completions, how much faster.

    python bench/rollout_prefix.py [MODEL] [PROMPTS] [G] [NEW_TOKENS]    (defaults: smollm2-135m-instruct 4 8 32)

Greedy decoding, so both paths must produce identical token ids; prints the wall time of each and
the speed-up. The saving is the prefill of G-1 copies of each prompt (and a smaller cache to carry
through the first decode step), so it grows with the prompt length and G.
"""

import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # not bench/ (its profile.py shadows the stdlib)

from unitune.data.registry import DATASETS  # noqa: E402
from unitune.models.load import load_model, load_tokenizer  # noqa: E402
from unitune.rl.rollout import HFRollout, SamplingParams  # noqa: E402


def main(model_name="smollm2-135m-instruct", n_prompts="4", g="8", new_tokens="32") -> None:
    n_prompts, g, new_tokens = int(n_prompts), int(g), int(new_tokens)
    tokenizer, model = load_tokenizer(model_name), load_model(model_name)
    rollout = HFRollout(model, tokenizer, chat_template=tokenizer.chat_template)
    prompts = [rollout.engine.encode_chat([{"role": "user", "content": row["question"]}])
               for row in DATASETS["arithmetic"]()[:n_prompts]]
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0)
    rollout.generate(prompts[:1], 2, SamplingParams(max_new_tokens=2, temperature=0))  # warm-up
    times, outs = {}, {}
    for shared in (True, False):
        started = time.perf_counter()
        outs[shared] = [c.token_ids for c in rollout.generate(prompts, g, params, shared_prefix=shared)]
        times[shared] = time.perf_counter() - started
    same = outs[True] == outs[False]
    tokens = sum(len(ids) for ids in outs[True])
    print(f"{n_prompts} prompts x G={g}, {new_tokens} new tokens, prompt ~{sum(map(len, prompts)) // n_prompts} "
          f"tokens: shared prefix {times[True]:.2f}s ({tokens / times[True]:.0f} tok/s), independent "
          f"{times[False]:.2f}s ({tokens / times[False]:.0f} tok/s), speed-up x{times[False] / times[True]:.2f}, "
          f"identical completions: {same}")


if __name__ == "__main__":
    main(*sys.argv[1:])
