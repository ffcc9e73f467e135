"""Render a conversation to token ids and a per-token loss mask.

Every template is a Jinja chat template (the tokenizer's own, or one from the
registry), rendered by `tokenizer.apply_chat_template`; so the ids are exactly
what the model's own tooling produces. Spans are found the same way for every
template, by rendering prefixes: message i occupies the text between the
rendering of messages[:i] (with the generation prompt when i is an assistant
turn, so the `<|im_start|>assistant\\n` header is not trained) and the
rendering of messages[:i+1], less trailing whitespace. An assistant span thus
includes the end-of-turn marker after the content (`<|im_end|>`, `</s>`, ...),
which is how the model learns to stop.

Templates that rewrite earlier turns when more follow (Qwen2.5 merges
consecutive tool results into one turn) break the prefix property; there the
message content is searched for in the full text instead, after the previous
span. The full text is tokenized once, with offsets; a token is trained when
its characters overlap a trained span (a token straddling a span edge, like
" Paris" after "[/INST]", is trained).
"""

from unitune.errors import UnituneError, suggest
from unitune.templates.registry import TEMPLATES, get_template

LOSS_MODES = ("assistant", "last", "all")
GREEN, RESET = "\033[32m", "\033[0m"


def resolve_chat_template(tokenizer, name: str = "auto") -> str:
    """The Jinja template for `name`: 'auto' is the tokenizer's own, else the registry's 'default'."""
    if name != "auto":
        return get_template(name).chat_template
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # named templates ("default", "tool_use", ...)
        own = own.get("default")
    return own or get_template("default").chat_template


def _label(chat_template: str) -> str:
    for t in TEMPLATES.values():
        if t.chat_template == chat_template:
            return f"'{t.name}'"
    return "(custom or the tokenizer's own)"


def _clean(messages) -> list[dict]:
    """Copies without unitune's own `loss` key, which templates must not see."""
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise UnituneError(f"message {i} must be a dict with a 'role' (got {m!r:.80})")
    return [{k: v for k, v in m.items() if k != "loss"} for m in messages]


def _render(tokenizer, messages, chat_template, tools, generation: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=tools, chat_template=chat_template, tokenize=False, add_generation_prompt=generation
    )


def _render_prefix(tokenizer, messages, chat_template, tools, generation: bool):
    """Rendering of a prefix, or None where the template refuses it (then spans fall back)."""
    if not messages:
        return ""
    try:
        return _render(tokenizer, messages, chat_template, tools, generation)
    except Exception:  # a template may insist on, say, ending with a user turn
        return None


def _locate(full: str, message: dict, after: int, chat_template: str, i: int) -> int:
    content = message.get("content")
    pos = full.find(content, after) if isinstance(content, str) and content else -1
    if pos < 0:
        raise UnituneError(
            f"chat template {_label(chat_template)}: cannot locate message {i} ({message['role']}) "
            "in the rendered text (the template rewrites earlier turns and the content is not found)"
        )
    return pos


def message_spans(tokenizer, messages, *, chat_template: str, tools=None) -> tuple[str, list[tuple[int, int]]]:
    """(full text, one (start, end) character span per message)."""
    messages = _clean(messages)
    try:
        full = _render(tokenizer, messages, chat_template, tools)
    except Exception as err:  # jinja errors, raise_exception() in templates
        raise UnituneError(f"chat template {_label(chat_template)} cannot render this conversation: {err}") from None
    spans, before_plain, prev_end = [], "", 0
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and i > 0:
            before = _render_prefix(tokenizer, messages[:i], chat_template, tools, True)
        else:
            before = before_plain
        after = _render_prefix(tokenizer, messages[: i + 1], chat_template, tools, False)
        if before is not None and full.startswith(before) and len(before) >= prev_end:
            start = len(before)
        else:
            start = _locate(full, m, prev_end, chat_template, i)
        if after is not None and full.startswith(after):
            end = len(after.rstrip())
        else:
            end = _locate(full, m, start, chat_template, i) + len(m["content"])
        end = max(end, start)
        spans.append((start, end))
        before_plain, prev_end = after, end
    return full, spans


def _trained(messages, loss: str) -> list[bool]:
    """Per message: is its span trained? The mode decides, a message's `loss` key overrides."""
    if loss not in LOSS_MODES:
        raise UnituneError(f"unknown loss mode '{loss}'{suggest(loss, LOSS_MODES)}; known: {', '.join(LOSS_MODES)}")
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    last = assistants[-1] if assistants else None
    out = []
    for i, m in enumerate(messages):
        default = loss == "all" or (m["role"] == "assistant" and (loss == "assistant" or i == last))
        out.append(bool(m.get("loss", default)))
    return out


def render_messages(tokenizer, messages, *, chat_template: str, tools=None,
                    loss: str = "assistant") -> tuple[list[int], list[int]]:
    """(ids, mask): ids as apply_chat_template gives them, mask 1 on trained tokens.

    loss: 'assistant' trains every assistant turn, 'last' the last one, 'all'
    every token; a message's own `loss: True/False` overrides for its span.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise UnituneError("rendering needs a fast tokenizer (one that reports character offsets)")
    wanted = _trained(messages, loss)
    full, spans = message_spans(tokenizer, messages, chat_template=chat_template, tools=tools)
    chars = bytearray([loss == "all"]) * len(full)
    for (start, end), on in zip(spans, wanted):
        chars[start:end] = bytes([on]) * (end - start)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(chars.find(1, a, max(b, a + 1)) >= 0) for a, b in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def render_prompt(tokenizer, messages, *, chat_template: str, tools=None) -> list[int]:
    """Ids of the conversation followed by the generation prompt, for inference."""
    text = _render(tokenizer, _clean(messages), chat_template, tools, generation=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def show(tokenizer, ids, mask, color: bool = False) -> str:
    """The decoded text with trained tokens green (color) or in [[ ]], and a count line."""
    parts, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            text = tokenizer.decode(ids[start:i])
            if mask[start]:
                text = f"{GREEN}{text}{RESET}" if color else f"[[{text}]]"
            parts.append(text)
            start = i
    return "".join(parts) + f"\n{sum(mask)} of {len(ids)} tokens trained"
