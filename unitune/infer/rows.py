"""Prompts from JSONL rows, for `infer --infer.input` and `sample`.

A row asks for one answer. Accepted, by key:
- `messages`: a conversation; a trailing assistant turn is dropped (it is the
  answer being replaced);
- `prompt`: a string (one user turn) or a message list (TRL's DPO/GRPO form);
- `question` / `problem` / `query` / `instruction` (+ `input`): one user turn.

A row's place is its `index` (0-based line number among non-empty lines); its
`id`, when present, is carried to the output as well.
"""

import json
from pathlib import Path

from unitune.errors import UnituneError

TEXT_KEYS = ("question", "problem", "query", "instruction")


def read_jsonl(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise UnituneError(f"input file {path} does not exist")
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UnituneError(f"{path}:{n}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UnituneError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def prompt_messages(row: dict, where: str) -> list[dict]:
    """The conversation to answer for one row (see the module docstring)."""
    if "messages" in row:
        messages = _messages(row["messages"], f"{where}: field 'messages'")
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
    elif "prompt" in row:
        p = row["prompt"]
        messages = ([{"role": "user", "content": p}] if isinstance(p, str)
                    else _messages(p, f"{where}: field 'prompt'"))
    else:
        key = next((k for k in TEXT_KEYS if isinstance(row.get(k), str)), None)
        if key is None:
            raise UnituneError(f"{where}: a row needs 'messages', 'prompt' or one of {', '.join(TEXT_KEYS)}; "
                               f"got keys {', '.join(row) or 'none'}")
        content = row[key] + (f"\n\n{row['input']}" if key == "instruction" and row.get("input") else "")
        messages = [{"role": "user", "content": content}]
    if not messages:
        raise UnituneError(f"{where}: the prompt is empty")
    return messages


def _messages(value, where: str) -> list[dict]:
    if not isinstance(value, list):
        raise UnituneError(f"{where} must be a list of messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise UnituneError(f"{where}[{i}] must be {{'role': ..., 'content': ...}}")
    return [dict(m) for m in value]


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """Prepend the configured system prompt to a conversation that has none."""
    if not system or (messages and messages[0].get("role") == "system"):
        return messages
    return [{"role": "system", "content": system}, *messages]


def row_seed(seed: int | None, index: int, j: int = 0) -> int | None:
    """One reproducible seed per (row, candidate), so a resumed run draws what an uninterrupted one would."""
    return None if seed is None else seed * 1_000_003 + index * 1009 + j
