"""`unitune sample`: N candidates per prompt, scored, written as raw candidates, DPO pairs or KTO rows.

Scores come from the reward functions GRPO uses (unitune/rl/rewards.py), so one spec
language serves both: `--sample.reward SPEC ...` with `--sample.reward_weights`, where a
SPEC is a built-in (`accuracy`, `format:REGEX`, `contains:TEXT`, `length:N`, ...), a reward
model trained with `unitune rm` (`rm:runs/rm/final`), or `FILE.py:FUNCTION`, called TRL-style
once per chunk of prompts:

    FUNCTION(completions=[str], prompts=[messages], completion_ids=[[int]], **columns) -> [float | None]

where `columns` are the rows' other fields (one value per completion: a prompt's N
candidates repeat its row's values); accept `**kwargs` for what you don't use. The score
of a candidate is the weighted sum; a candidate every function scored None has no score
and is left out of pairs and KTO rows.

Formats (`--sample.format`):
- raw: `{"index", "id"?, "prompt": messages, "candidates": [{"text", "finish_reason", "score"?}]}`
- dpo: per prompt, best vs worst candidate by score; prompts whose gap is below
  `sample.min_gap` (or whose candidates all tie) are dropped and counted:
  `{"prompt": messages, "chosen": {"role": "assistant", "content"}, "rejected": {...}}`
- kto: every scored candidate: `{"prompt": messages, "completion": {"role": "assistant", "content"},
  "label": score >= sample.threshold}`

Candidate j of row i uses seed f(generate.seed, i, j), so a rerun draws the same candidates.
"""

import dataclasses
import json
import math
from pathlib import Path

from unitune.errors import UnituneError
from unitune.infer.rows import prompt_messages, read_jsonl, row_seed, with_system

PROMPT_KEYS = ("messages", "prompt", "question", "problem", "query", "instruction", "input", "id")


def build_scorer(specs: list[str], weights: list[float], max_new_tokens: int):
    """A function (completions, prompts, completion_ids, columns) -> [float | nan], or None without specs."""
    if not specs:
        return None
    from unitune.rl import rewards

    built = rewards.build_rewards(specs, weights, {"max_completion_length": max_new_tokens})

    def scorer(completions, prompts, completion_ids, columns) -> list[float]:
        per_function = rewards.score(built, completions, prompts, completion_ids, columns)
        return rewards.combine(per_function, built).tolist()

    return scorer


def run_sample(cfg, params, make_engine) -> int:
    """Check the config, rows and scorers, then load the engine (`make_engine()`) and sample."""
    s = cfg.sample
    if not s.input or not s.output:
        raise UnituneError("unitune sample needs --sample.input PROMPTS.jsonl and --sample.output OUT.jsonl")
    if s.n < 1 or (s.format == "dpo" and s.n < 2):
        raise UnituneError(f"sample.n={s.n}: need at least {2 if s.format == 'dpo' else 1} candidates per prompt")
    scorer = build_scorer(s.reward, s.reward_weights, cfg.generate.max_new_tokens)
    if s.format != "raw" and scorer is None:
        raise UnituneError(f"sample.format={s.format} needs scores: pass --sample.reward FILE.py:FUNCTION")
    rows = read_jsonl(s.input)
    prompts = [with_system(prompt_messages(r, f"{s.input}: row {i}"), cfg.template.system)
               for i, r in enumerate(rows)]
    Path(s.output).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine()
    try:
        counts = _generate(engine, s, rows, prompts, scorer, params)
    finally:
        engine.close()
    kind = {"raw": "prompt rows", "dpo": "DPO pairs", "kto": "KTO rows"}[s.format]
    dropped = f"; {counts['dropped']} prompts dropped (score gap < {s.min_gap})" if s.format == "dpo" else ""
    print(f"unitune: wrote {counts['rows']} {kind} to {s.output}{dropped}", flush=True)
    return 0


def _generate(engine, s, rows, prompts, scorer, params) -> dict:
    from tqdm import tqdm

    chunk = max(1, 2 * engine.max_batch_size // s.n)
    counts = {"rows": 0, "dropped": 0}
    with open(s.output, "w", encoding="utf-8") as f, tqdm(total=len(rows), unit="prompt",
                                                          disable=not s.progress, dynamic_ncols=True) as bar:
        for start in range(0, len(rows), chunk):
            index = range(start, min(start + chunk, len(rows)))
            requests = [[engine.submit(engine.encode_chat(prompts[i]),
                                       dataclasses.replace(params, seed=row_seed(params.seed, i, j)))
                         for j in range(s.n)] for i in index]
            done = [[r.result() for r in group] for group in requests]
            for group in done:
                for c in group:
                    if c.finish_reason == "error":
                        raise UnituneError(f"generation failed: {c.error}")
            texts = [c.text for group in done for c in group]
            scores = None
            if scorer is not None:
                keys = {k for i in index for k in rows[i] if k not in PROMPT_KEYS}
                columns = {k: [rows[i].get(k) for i in index for _ in range(s.n)] for k in sorted(keys)}
                flat = scorer(texts, [prompts[i] for i in index for _ in range(s.n)],
                              [c.token_ids for group in done for c in group], columns)
                scores = [flat[k * s.n:(k + 1) * s.n] for k in range(len(index))]
            for k, i in enumerate(index):
                out = _records(s, rows[i], i, prompts[i], done[k], scores[k] if scores else None)
                counts["rows"] += len(out)
                counts["dropped"] += not out
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
            f.flush()
            bar.update(len(index))
    return counts


def _records(s, row: dict, index: int, prompt: list[dict], candidates, scores) -> list[dict]:
    assistant = lambda text: {"role": "assistant", "content": text}  # noqa: E731
    if s.format == "raw":
        cands = [{"text": c.text, "finish_reason": c.finish_reason,
                  **({"score": None if math.isnan(scores[j]) else scores[j]} if scores else {})}
                 for j, c in enumerate(candidates)]
        return [{"index": index, **({"id": row["id"]} if "id" in row else {}), "prompt": prompt, "candidates": cands}]
    scored = [j for j in range(len(candidates)) if not math.isnan(scores[j])]
    if s.format == "kto":
        return [{"prompt": prompt, "completion": assistant(candidates[j].text), "label": scores[j] >= s.threshold}
                for j in scored]
    if len(scored) < 2:
        return []
    best = max(scored, key=lambda j: scores[j])
    worst = min(scored, key=lambda j: scores[j])
    if scores[best] - scores[worst] < max(s.min_gap, 1e-12):
        return []
    return [{"prompt": prompt, "chosen": assistant(candidates[best].text),
             "rejected": assistant(candidates[worst].text)}]
