"""Convert loaded rows into a task's canonical examples.

Canonical forms:

- sft: `{"messages": [{"role", "content", "loss"?: bool, ...}], "tools"?: list}`.
  Roles are system, user, assistant, tool. Assistant messages may carry
  OpenAI-style `tool_calls` (content may then be empty); tool messages may
  carry `tool_call_id` and `name`. Other message keys are dropped.
- pt: `{"text": str}`.

Accepted inputs, by format (detected by the key that names it):

| task | format | key | fields |
|---|---|---|---|
| sft | messages | messages | messages, system?, tools? |
| sft | sharegpt | conversations | conversations [{from, value}], system?, tools? |
| sft | alpaca | instruction | instruction, input?, output, system?, history? [[q, a], ...] |
| sft | query/response | query | query, response, system?, history? |
| sft | prompt/completion | prompt | prompt, completion (strings or message lists) |
| pt | text | text | text |
| pt | content | content | content |
| pt | messages | messages | exactly one assistant turn; the text is its content. |

For pt, system messages in `messages` are ignored and user or tool turns are
an error (a conversation is sft data): nothing a user wrote is dropped quietly.
String prompt/completion becomes one user turn and one assistant turn.

A row that does not convert is an error naming its source, the field path and
what is wrong; with on_bad_row="skip" it is left out and listed in the Report.
Other tasks register their formats with `@converter`: dpo, rm and kto in
preference.py. A converter may return a list of examples (one row, several
examples), e.g. a preference pair split into two unpaired kto rows.
"""

import json
from dataclasses import dataclass, field
from typing import Callable

from unitune.data.load import Row
from unitune.errors import UnituneError, suggest

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "function_call": "assistant", "observation": "tool", "tool": "tool"}
KEPT_MESSAGE_KEYS = ("loss", "tool_calls", "tool_call_id", "name")


class BadRow(Exception):
    """A row that does not convert: which field, and what is wrong with it."""

    def __init__(self, field_path: str | None, problem: str):
        super().__init__(f"field '{field_path}': {problem}" if field_path else problem)


@dataclass
class Report:
    kept: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)

    def summary(self, show: int = 5) -> str:
        total = self.kept + len(self.skipped)
        if not self.skipped:
            return f"kept all {total} rows"
        shown = ", ".join(f"{src} ({why})" for src, why in self.skipped[:show])
        more = f", and {len(self.skipped) - show} more" if len(self.skipped) > show else ""
        return f"skipped {len(self.skipped)} of {total} rows: {shown}{more}"


# task -> format name -> (the key that identifies the format, converter)
FORMATS: dict[str, dict[str, tuple[str, Callable[[dict], dict]]]] = {}


def converter(task: str, name: str, key: str):
    """Register a converter for rows of `task` that have `key` (first registered wins)."""
    def wrap(fn):
        FORMATS.setdefault(task, {})[name] = (key, fn)
        return fn
    return wrap


def convert(rows: list[Row], task: str, *, on_bad_row: str = "error") -> tuple[list[dict], Report]:
    """Canonical examples for `task`, and a Report of what was kept and skipped."""
    if task not in FORMATS:
        raise UnituneError(f"no data formats for task '{task}'{suggest(task, FORMATS)} "
                           f"(tasks: {', '.join(FORMATS)})")
    if on_bad_row not in ("error", "skip"):
        raise UnituneError(f"data.on_bad_row must be 'error' or 'skip', got '{on_bad_row}'")
    examples, report = [], Report()
    for row in rows:
        try:
            out = convert_row(row.data, task)  # a converter may split one row (a pair -> two kto rows)
            examples.extend(out if isinstance(out, list) else [out])
            report.kept += 1
        except BadRow as e:
            if on_bad_row == "error":
                raise UnituneError(f"{row.source}: {e}") from None
            report.skipped.append((row.source, str(e)))
    return examples, report


def convert_row(data: dict, task: str) -> dict:
    """One row's canonical example; raises BadRow."""
    for name, (key, fn) in FORMATS[task].items():
        if key in data:
            return fn(data)
    formats = ", ".join(f"{name} ('{key}')" for name, (key, _) in FORMATS[task].items())
    raise BadRow(None, f"no {task} format matches the row's keys {sorted(data)}; known formats: {formats}")


# --- field checks ----------------------------------------------------------

def _text(data: dict, key: str, path: str | None = None, *, optional=False, empty_ok=False) -> str | None:
    path = path or key
    value = data.get(key)
    if value is None:
        if optional:
            return None
        raise BadRow(path, "missing")
    if not isinstance(value, str):
        raise BadRow(path, f"expected a string, got {type(value).__name__}")
    if not value.strip() and not empty_ok:
        raise BadRow(path, "empty")
    return value


def _list(data: dict, key: str, *, optional=False) -> list | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if value is None:
        raise BadRow(key, "missing")
    if not isinstance(value, list):
        raise BadRow(key, f"expected a list, got {type(value).__name__}")
    if not value:
        raise BadRow(key, "empty")
    return value


def _history(data: dict) -> list[dict]:
    """[[q, a], ...] as user/assistant messages."""
    pairs = _list(data, "history", optional=True) or []
    out = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise BadRow(f"history[{i}]", "expected a [question, answer] pair")
        q, a = pair
        out.append({"role": "user", "content": _text({"q": q}, "q", f"history[{i}][0]")})
        out.append({"role": "assistant", "content": _text({"a": a}, "a", f"history[{i}][1]")})
    return out


def _system(data: dict) -> list[dict]:
    text = _text(data, "system", optional=True, empty_ok=True)
    return [{"role": "system", "content": text}] if text and text.strip() else []


def _tools(data: dict) -> dict:
    tools = data.get("tools")
    if tools is None or tools == "":
        return {}
    if isinstance(tools, str):  # ms-swift and LLaMA-Factory store tools as a JSON string
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as e:
            raise BadRow("tools", f"invalid JSON: {e.msg}") from None
    if not isinstance(tools, list):
        raise BadRow("tools", f"expected a list, got {type(tools).__name__}")
    return {"tools": tools}


def _message(msg, path: str) -> dict:
    if not isinstance(msg, dict):
        raise BadRow(path, f"expected an object with role and content, got {type(msg).__name__}")
    role = _text(msg, "role", f"{path}.role")
    if role not in ROLES:
        raise BadRow(f"{path}.role", f"unknown role '{role}' (expected {', '.join(ROLES)})")
    calls = msg.get("tool_calls")
    if calls is not None and role != "assistant":
        raise BadRow(f"{path}.tool_calls", f"only assistant messages make tool calls, not {role}")
    if calls is not None and not isinstance(calls, list):
        raise BadRow(f"{path}.tool_calls", f"expected a list, got {type(calls).__name__}")
    content = _text(msg, "content", f"{path}.content", optional=bool(calls), empty_ok=bool(calls))
    out = {"role": role, "content": content or ""}
    if "loss" in msg and msg["loss"] is not None and not isinstance(msg["loss"], bool):
        raise BadRow(f"{path}.loss", f"expected true or false, got {msg['loss']!r}")
    out.update({k: msg[k] for k in KEPT_MESSAGE_KEYS if msg.get(k) is not None})
    return out


def _messages(data: dict, key: str = "messages") -> list[dict]:
    return [_message(m, f"{key}[{i}]") for i, m in enumerate(_list(data, key))]


def _needs_assistant(messages: list[dict], key: str) -> list[dict]:
    if not any(m["role"] == "assistant" for m in messages):
        raise BadRow(key, "no assistant turn (nothing to train on)")
    return messages


# --- sft ---------------------------------------------------------------------

@converter("sft", "messages", key="messages")
def _sft_messages(data: dict) -> dict:
    messages = _messages(data)
    if messages[0]["role"] != "system":
        messages = _system(data) + messages
    return {"messages": _needs_assistant(messages, "messages"), **_tools(data)}


@converter("sft", "sharegpt", key="conversations")
def _sft_sharegpt(data: dict) -> dict:
    messages = []
    for i, turn in enumerate(_list(data, "conversations")):
        path = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise BadRow(path, f"expected an object with from and value, got {type(turn).__name__}")
        who = _text(turn, "from", f"{path}.from")
        if who not in SHAREGPT_ROLES:
            raise BadRow(f"{path}.from", f"unknown role '{who}' (expected {', '.join(SHAREGPT_ROLES)})")
        messages.append({"role": SHAREGPT_ROLES[who], "content": _text(turn, "value", f"{path}.value")})
    if messages[0]["role"] != "system":
        messages = _system(data) + messages
    return {"messages": _needs_assistant(messages, "conversations"), **_tools(data)}


@converter("sft", "alpaca", key="instruction")
def _sft_alpaca(data: dict) -> dict:
    prompt = _text(data, "instruction")
    extra = _text(data, "input", optional=True, empty_ok=True)
    if extra and extra.strip():
        prompt = f"{prompt}\n{extra}"
    return {"messages": _system(data) + _history(data) + [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": _text(data, "output")}]}


@converter("sft", "query/response", key="query")
def _sft_query(data: dict) -> dict:
    return {"messages": _system(data) + _history(data) + [
        {"role": "user", "content": _text(data, "query")},
        {"role": "assistant", "content": _text(data, "response")}]}


@converter("sft", "prompt/completion", key="prompt")
def _sft_prompt_completion(data: dict) -> dict:
    def part(key: str, role: str) -> list[dict]:
        if isinstance(data.get(key), list):
            return _messages(data, key)
        return [{"role": role, "content": _text(data, key)}]

    completion = _needs_assistant(part("completion", "assistant"), "completion")
    return {"messages": part("prompt", "user") + completion, **_tools(data)}


# --- pt ------------------------------------------------------------------------

@converter("pt", "text", key="text")
def _pt_text(data: dict) -> dict:
    return {"text": _text(data, "text")}


@converter("pt", "content", key="content")
def _pt_content(data: dict) -> dict:
    return {"text": _text(data, "content")}


@converter("pt", "messages", key="messages")
def _pt_messages(data: dict) -> dict:
    messages = _messages(data)
    for i, m in enumerate(messages):
        if m["role"] in ("user", "tool"):
            raise BadRow(f"messages[{i}].role", f"a {m['role']} turn in pt data; pt takes one "
                         "assistant turn of text (train conversations with sft)")
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if len(answers) != 1:
        raise BadRow("messages", f"expected exactly one assistant turn, got {len(answers)}")
    return {"text": _text(messages[answers[0]], "content", f"messages[{answers[0]}].content")}


from unitune.data import preference  # noqa: E402,F401  (registers the dpo, rm and kto formats)
from unitune.data import prompts  # noqa: E402,F401  (registers the grpo formats)
