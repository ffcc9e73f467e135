"""`unitune infer --infer.input prompts.jsonl --infer.output answers.jsonl`.

Every input row gets one output line, written (and flushed) as soon as its
answer is ready, in input order:

    {"index": 3, "id": ..., "messages": [...], "response": "...", "finish_reason": "stop",
     "usage": {"prompt_tokens": 31, "completion_tokens": 12}}

Resuming: rows whose `index` is already in the output are skipped, and a last
line cut short by an interruption is removed first; each row's seed derives from
`generate.seed` and its index, so a resumed file matches an uninterrupted one.
A window of twice the engine's batch size stays submitted, so the engine's
batch stays full while answers are written in order.
"""

import collections
import dataclasses
import json
from pathlib import Path

from unitune.errors import UnituneError
from unitune.infer.rows import prompt_messages, read_jsonl, row_seed, with_system


def done_indexes(path: Path, n_rows: int) -> set[int]:
    """Indexes already answered in `path`; a trailing partial line is truncated away."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    good = data.rfind(b"\n") + 1
    if good < len(data):  # interrupted mid-line
        with open(path, "r+b") as f:
            f.truncate(good)
    done = set()
    for n, line in enumerate(data[:good].decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            index = json.loads(line)["index"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UnituneError(f"{path}:{n}: not an output row of unitune infer (no 'index'); "
                               "move the file away or pick another --infer.output") from None
        if not isinstance(index, int) or not 0 <= index < n_rows:
            raise UnituneError(f"{path}:{n}: row index {index} is not in the input ({n_rows} rows); "
                               "is this the output of another input file?")
        done.add(index)
    return done


def run_batch(cfg, params, make_engine) -> int:
    """Check every row, then load the engine (`make_engine()`) and generate what is missing."""
    if not cfg.infer.output:
        raise UnituneError("batch mode needs --infer.output FILE.jsonl as well as --infer.input")
    rows = read_jsonl(cfg.infer.input)
    out = Path(cfg.infer.output)
    done = done_indexes(out, len(rows))
    todo = [i for i in range(len(rows)) if i not in done]
    prompts = {}
    for i in todo:  # check every row before generating anything
        prompts[i] = with_system(prompt_messages(rows[i], f"{cfg.infer.input}: row {i}"), cfg.template.system)
    print(f"unitune: {len(rows)} rows; {len(done)} already in {out}, {len(todo)} to generate", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine()
    try:
        _generate(engine, rows, todo, prompts, params, out, cfg.infer.progress)
    finally:
        engine.close()
    print(f"unitune: wrote {len(todo)} rows to {out}", flush=True)
    return 0


def _generate(engine, rows, todo, prompts, params, out: Path, progress: bool) -> None:
    from tqdm import tqdm

    window = 2 * engine.max_batch_size
    pending: collections.deque = collections.deque()
    todo_iter = iter(todo)
    with open(out, "a", encoding="utf-8") as f, tqdm(total=len(rows), initial=len(rows) - len(todo), unit="row",
                                                     disable=not progress, dynamic_ncols=True) as bar:
        while True:
            while len(pending) < window and (i := next(todo_iter, None)) is not None:
                seeded = dataclasses.replace(params, seed=row_seed(params.seed, i))
                pending.append((i, engine.submit(engine.encode_chat(prompts[i]), seeded)))
            if not pending:
                break
            i, request = pending.popleft()
            c = request.result()
            if c.finish_reason == "error":
                raise UnituneError(f"row {i}: generation failed: {c.error}")
            record = {"index": i, **({"id": rows[i]["id"]} if "id" in rows[i] else {}), "messages": prompts[i],
                      "response": c.text, "finish_reason": c.finish_reason,
                      "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(1)
