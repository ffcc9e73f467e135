"""Preference formats: canonical rows for dpo (also used by rm) and kto.

Canonical forms:

- dpo / rm: `{"prompt": [messages], "chosen": {assistant message},
  "rejected": {assistant message}, "margin"?: float}`
- kto: `{"prompt": [messages], "completion": {assistant message}, "label": bool}`

Accepted inputs, by format (detected by the key that names it):

| task | format | key | fields |
|---|---|---|---|
| dpo, rm | TRL | chosen | prompt?, chosen, rejected (strings or messages), system?, margin? |
| dpo, rm | ms-swift | rejected_response | messages (last turn = chosen), rejected_response, system?, margin? |
| kto | unpaired | label | prompt + completion, or messages (last turn = completion); label |
| kto | pairs, split | chosen / rejected_response | as for dpo; each pair gives a desirable and an undesirable row |

TRL's forms are all taken: chosen/rejected that repeat the prompt (the prompt
is stripped off the front: an exact message prefix, or a string prefix of
both), and conversations without a prompt, whose shared leading messages are
the prompt ("implicit prompt"). Plain-text pairs need a `prompt`. What is left
of chosen and rejected must be one assistant message each. A message's own
`loss` key is dropped: the objectives decide which tokens count.
"""

from unitune.data.convert import FORMATS, BadRow, _message, _messages, _system, _text, converter


def _clean(message: dict) -> dict:
    return {k: v for k, v in message.items() if k != "loss"}


def _side(data: dict, key: str) -> list[dict] | str:
    value = data.get(key)
    if isinstance(value, list):
        return _messages(data, key)
    if isinstance(value, dict):
        return [_message(value, key)]
    return _text(data, key)


def _answer(messages: list[dict], key: str) -> dict:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = [m["role"] for m in messages]
        raise BadRow(key, f"expected one assistant message after the prompt, got roles {roles}")
    return _clean(messages[0])


def _prompt_ok(prompt: list[dict], key: str) -> list[dict]:
    if not prompt or all(m["role"] == "system" for m in prompt):
        raise BadRow(key, "no prompt: give a 'prompt' field, or conversations that share their first turns")
    if prompt[-1]["role"] == "assistant":
        raise BadRow(key, "the prompt ends with an assistant turn; it should end with the user's turn")
    return [_clean(m) for m in prompt]


def _margin(data: dict) -> dict:
    value = data.get("margin")
    if value is None:
        return {}
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRow("margin", f"expected a number, got {value!r}")
    return {"margin": float(value)}


@converter("dpo", "prompt/chosen/rejected", key="chosen")
def _dpo_trl(data: dict) -> dict:
    chosen, rejected = _side(data, "chosen"), _side(data, "rejected")
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise BadRow("rejected", "chosen and rejected must both be strings or both be message lists")
    raw = data.get("prompt")
    if isinstance(chosen, str):
        prompt = _text(data, "prompt", optional=True)
        if prompt is None:
            raise BadRow("prompt", "missing: plain-text pairs need a prompt (or give chosen/rejected as messages)")
        if chosen.startswith(prompt) and rejected.startswith(prompt) and len(prompt) < min(len(chosen), len(rejected)):
            chosen, rejected = chosen[len(prompt):].lstrip(), rejected[len(prompt):].lstrip()
        prompt = [{"role": "user", "content": prompt}]
        chosen, rejected = [{"role": "assistant", "content": chosen}], [{"role": "assistant", "content": rejected}]
    elif raw is None:  # implicit prompt: the shared leading messages
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    else:
        prompt = _side(data, "prompt")
        prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        k = len(prompt)
        if chosen[:k] == prompt and rejected[:k] == prompt:  # chosen/rejected repeat the prompt
            chosen, rejected = chosen[k:], rejected[k:]
    if prompt and prompt[0]["role"] != "system":
        prompt = _system(data) + prompt
    return {"prompt": _prompt_ok(prompt, "prompt"), "chosen": _answer(chosen, "chosen"),
            "rejected": _answer(rejected, "rejected"), **_margin(data)}


@converter("dpo", "messages + rejected_response", key="rejected_response")
def _dpo_swift(data: dict) -> dict:
    messages = _messages(data)
    if messages[-1]["role"] != "assistant":
        raise BadRow(f"messages[{len(messages) - 1}].role", "the last turn must be the assistant's (the chosen answer)")
    if messages[0]["role"] != "system":
        messages = _system(data) + messages
    rejected = {"role": "assistant", "content": _text(data, "rejected_response")}
    return {"prompt": _prompt_ok(messages[:-1], "messages"), "chosen": _clean(messages[-1]),
            "rejected": rejected, **_margin(data)}


def _label(data: dict) -> bool:
    value = data.get("label")
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise BadRow("label", f"expected true (desirable) or false (undesirable), got {value!r}")


@converter("kto", "unpaired", key="label")
def _kto_unpaired(data: dict) -> dict:
    if "messages" in data:
        messages = _messages(data)
        if messages[0]["role"] != "system":
            messages = _system(data) + messages
        prompt, completion = messages[:-1], messages[-1:]
        where = "messages"
    else:
        prompt = _side(data, "prompt")
        prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if prompt[0]["role"] != "system":
            prompt = _system(data) + prompt
        completion = _side(data, "completion")
        completion = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else completion
        where = "completion"
    return {"prompt": _prompt_ok(prompt, "prompt"), "completion": _answer(completion, where), "label": _label(data)}


def _split(pair: dict) -> list[dict]:
    return [{"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
            {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False}]


@converter("kto", "pairs (split)", key="chosen")
def _kto_from_trl_pairs(data: dict) -> list[dict]:
    return _split(_dpo_trl(data))


@converter("kto", "messages + rejected_response (split)", key="rejected_response")
def _kto_from_swift_pairs(data: dict) -> list[dict]:
    return _split(_dpo_swift(data))


FORMATS["rm"] = FORMATS["dpo"]  # the reward model reads the same pairs (the same dict: later dpo formats too)
