"""The benchmark workload: deterministic synthetic data that every framework reads.

    sft.jsonl    512 chats {"messages": [system, user, assistant]}, 150-300 tokens each when
                 rendered with the model's own chat template (so no framework truncates at 512)
    dpo.jsonl    256 pairs {"prompt": [system, user], "chosen": [assistant], "rejected": [assistant]}
                 (TRL's conversational format; each side 150-300 tokens with the prompt)
    grpo.jsonl   64 prompts {"prompt": [system, user], "answer": "123"} asking for a worked sum;
                 the model talks past 64 new tokens, so rollouts are (nearly) all full length
    stats.json   token counts (for the FLOP estimate) and the seed

The tasks are word games (sort, reverse, deduplicate a list of words) so that the loss
falls visibly within 30 steps. Everything is a function of the seed and the tokenizer.
Run with unitune's own Python: `python bench/workload.py OUT_DIR MODEL_DIR`.
"""

import json
import random
import sys
from pathlib import Path

SEED = 1234
SYSTEM = "You are a careful assistant that follows instructions exactly."
WORDS = """apple river stone cloud garden window pencil basket candle forest rabbit silver
orange market ladder bottle thunder meadow harbor lantern violin copper pepper saddle
mirror anchor feather button castle desert engine falcon glacier hammer island jungle
kettle lemon magnet needle ocean parrot quartz rocket shadow tiger umbrella valley walnut
yellow zebra bridge carpet dragon eagle fabric gravel helmet insect jacket kitten lizard
marble napkin oyster puzzle quiver ribbon saucer tunnel velvet wagon yogurt blanket
cactus dolphin ember fossil goblet hazel iceberg jigsaw kernel lobster mango nectar
orchid pillow quilt raven spider timber urchin vessel willow yarn badge cobalt dune
falcon granite harvest ivory juniper kayak lagoon meteor nickel onion pebble radar
sapphire tulip uranium vapor whistle anvil beacon cedar drizzle fjord geyser""".split()

TASKS = {
    "sort": ("Sort these words alphabetically and list them separated by spaces:",
             lambda ws: sorted(ws), "Here are the words in alphabetical order:"),
    "reverse": ("Write these words in reverse order, separated by spaces:",
                lambda ws: ws[::-1], "Here are the words in reverse order:"),
    "dedupe": ("Remove repeated words from this list, keeping the first occurrence of each:",
               lambda ws: list(dict.fromkeys(ws)), "Here is the list without repeats:"),
}


def n_tokens(tok, messages) -> int:
    return len(tok.apply_chat_template(messages, tokenize=True, return_dict=False))


def chat(task: str, words: list[str], wrong: bool = False, rng=None) -> tuple[list, list]:
    ask, solve, lead = TASKS[task]
    answer = solve(words)
    if wrong:  # a plausible rejected answer: the right words in a wrong order, one dropped
        answer = list(answer)
        rng.shuffle(answer)
        answer = answer[:-1]
    prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{ask} {' '.join(words)}"}]
    reply = [{"role": "assistant", "content": f"{lead} {' '.join(answer)}. That makes {len(answer)} words."}]
    return prompt, reply


def sized(tok, rng, lo: int, hi: int):
    """(task, words) whose rendered chat has between lo and hi tokens (aimed at a random target):
    grow the word list by the estimated shortfall (about 3 tokens per word, each word appears
    in the question and the answer), then trim."""
    target = rng.randint(lo, hi)
    task = rng.choice(sorted(TASKS))
    words, trimmed = [rng.choice(WORDS) for _ in range(8)], False
    while True:
        n = n_tokens(tok, sum(chat(task, words), []))
        if n > hi:
            words.pop()
            trimmed = True
        elif n < target and not trimmed:
            words += [rng.choice(WORDS) for _ in range(max(1, (target - n) // 5))]
        else:
            assert n >= lo, (n, lo, target)
            return task, words


def generate(out: Path, model_dir: str, n_sft: int = 512, n_pairs: int = 256, n_prompts: int = 64) -> dict:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(SEED)
    out.mkdir(parents=True, exist_ok=True)
    sft, lengths = [], []
    for _ in range(n_sft):
        task, words = sized(tok, rng, 150, 300)
        prompt, reply = chat(task, words)
        sft.append({"messages": prompt + reply})
        lengths.append(n_tokens(tok, prompt + reply))
    pairs, pair_lengths = [], []
    for _ in range(n_pairs):
        task, words = sized(tok, rng, 150, 290)
        prompt, chosen = chat(task, words)
        _, rejected = chat(task, words, wrong=True, rng=rng)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        pair_lengths += [n_tokens(tok, prompt + chosen), n_tokens(tok, prompt + rejected)]
    prompts = []
    for _ in range(n_prompts):
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        user = f"Explain step by step, digit by digit with carries, how to add {a} and {b}. Then give the total."
        prompts.append({"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                        "answer": str(a + b)})
    for name, rows in (("sft", sft), ("dpo", pairs), ("grpo", prompts)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = {"seed": SEED, "model": model_dir,
             "sft": _stats(lengths), "dpo": _stats(pair_lengths),
             "grpo_prompt_tokens": _stats([n_tokens(tok, p["prompt"]) + 3 for p in prompts])}
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats


def _stats(lengths: list[int]) -> dict:
    """min/mean/max, and the token-weighted mean sequence length E_tok[T] = sum T^2 / sum T
    (what the attention FLOPs of an average trained token see)."""
    return {"n": len(lengths), "min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths),
            "tokens": sum(lengths), "attn_len": sum(n * n for n in lengths) / sum(lengths)}


if __name__ == "__main__":
    print(json.dumps(generate(Path(sys.argv[1]), sys.argv[2]), indent=1))
