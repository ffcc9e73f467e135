"""Prompt data for online RL (task `grpo`): canonical `{"prompt": messages, **extra columns}`.

| format | key | prompt from | kept as columns |
|---|---|---|---|
| prompt | prompt | a string (one user turn) or a message list | every other field |
| messages | messages | the conversation up to its last user turn | every other field |
| question | question | one user turn | every other field (answer, solution, ...) |
| problem | problem | one user turn | every other field |

The extra columns reach every reward function by name (`answer` for the accuracy reward).
A system field (string) is put in front of the prompt.
"""

from unitune.data.convert import BadRow, _message, _system, _text, converter


def _with_columns(data: dict, key: str, prompt: list[dict]) -> dict:
    extra = {k: v for k, v in data.items() if k not in (key, "system")}
    if "prompt" in extra:
        raise BadRow("prompt", f"both '{key}' and 'prompt' are given; rename one (data.columns)")
    if prompt[0]["role"] != "system":
        prompt = _system(data) + prompt
    return {"prompt": prompt, **extra}


def _turns(data: dict, key: str) -> list[dict]:
    value = data.get(key)
    if isinstance(value, list):
        if not value:
            raise BadRow(key, "empty")
        return [_message(m, f"{key}[{i}]") for i, m in enumerate(value)]
    return [{"role": "user", "content": _text(data, key)}]


@converter("grpo", "prompt", key="prompt")
def _grpo_prompt(data: dict) -> dict:
    return _with_columns(data, "prompt", _turns(data, "prompt"))


@converter("grpo", "messages", key="messages")
def _grpo_messages(data: dict) -> dict:
    messages = _turns(data, "messages")
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise BadRow("messages", "no user turn to prompt with")
    return _with_columns(data, "messages", messages[:users[-1] + 1])


@converter("grpo", "question", key="question")
def _grpo_question(data: dict) -> dict:
    return _with_columns(data, "question", [{"role": "user", "content": _text(data, "question")}])


@converter("grpo", "problem", key="problem")
def _grpo_problem(data: dict) -> dict:
    return _with_columns(data, "problem", [{"role": "user", "content": _text(data, "problem")}])
