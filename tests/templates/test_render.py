"""Rendering conversations to (ids, mask) with every registered template and the tokenizer's own.

Uses the real SmolLM2 tokenizer. Its own template is ChatML; for the other
formats a second copy knows their markers as special tokens, as the real
Llama 3 / Mistral / Gemma / Phi-3 tokenizers do, so token edges fall on the
markers and the trained text can be compared exactly.
"""

import types

import pytest

from unitune.errors import UnituneError
from unitune.models.load import load_tokenizer
from unitune.templates import TEMPLATES, get_template, render_messages, render_prompt, resolve_chat_template, show

MARKERS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "[INST]", "[/INST]",
           "<start_of_turn>", "<end_of_turn>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
NAMES = [*TEMPLATES, "own"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def tok_marked():
    t = load_tokenizer("smollm2-135m-instruct")
    t.add_tokens(MARKERS, special_tokens=True)
    return t


def template(tok, name):
    return tok.chat_template if name == "own" else get_template(name).chat_template


def end_marker(tok, name):
    """What follows an answer (with any lead before it) in each format."""
    return {"llama3": "<|eot_id|>", "mistral": tok.eos_token, "gemma": "<end_of_turn>", "phi3": "<|end|>",
            "default": tok.eos_token}.get(name, "<|im_end|>")


def lead(name):
    return " " if name in ("mistral", "default") else ""


def reference_ids(tok, messages, chat_template, tools=None, **kw):
    out = tok.apply_chat_template(messages, tools=tools, chat_template=chat_template, tokenize=True, **kw)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def runs(tok, ids, mask, value=1):
    """Decoded text of each contiguous run of tokens whose mask is `value`."""
    out, cur = [], []
    for i, m in zip(ids, mask + [None]):
        if m == value:
            cur.append(i)
        elif cur:
            out.append(tok.decode(cur))
            cur = []
    return out + ([tok.decode(cur)] if cur else [])


def chat(system=True):
    msgs = [{"role": "system", "content": "Be brief."}] if system else []
    return msgs + [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome, since 1871."},
    ]


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def tool_chat():
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "20C"},
        {"role": "assistant", "content": "Sunny and 20C."},
    ]


# --- every template ---------------------------------------------------------------------------

@pytest.mark.parametrize("system", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_ids_match_apply_chat_template(tok, tok_marked, name, system):
    for t in (tok, tok_marked):
        ct = template(t, name)
        ids, mask = render_messages(t, chat(system), chat_template=ct)
        assert ids == reference_ids(t, chat(system), ct)
        assert len(mask) == len(ids) and set(mask) == {0, 1}


@pytest.mark.parametrize("system", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_trained_tokens_are_answers_and_end_markers(tok_marked, name, system):
    ct = template(tok_marked, name)
    ids, mask = render_messages(tok_marked, chat(system), chat_template=ct)
    end = end_marker(tok_marked, name)
    assert runs(tok_marked, ids, mask) == [lead(name) + "Paris." + end, lead(name) + "Rome, since 1871." + end]


@pytest.mark.parametrize("name", NAMES)
def test_generation_prompt(tok, name):
    ct = template(tok, name)
    msgs = chat()[:2]
    ids = render_prompt(tok, msgs, chat_template=ct)
    assert ids == reference_ids(tok, msgs, ct, add_generation_prompt=True)
    header = {"llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n", "mistral": "[/INST]",
              "gemma": "<start_of_turn>model\n", "phi3": "<|assistant|>\n", "default": "Assistant:"}
    assert tok.decode(ids).endswith(header.get(name, "<|im_start|>assistant\n"))


def test_formats(tok):
    """The exact text of one exchange in each registered format."""
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"}, {"role": "tool", "content": "T"}]
    bos, eos = tok.bos_token, tok.eos_token
    expected = {
        "chatml": "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
                  "<|im_start|>user\n<tool_response>\nT\n</tool_response><|im_end|>\n",
        "llama3": f"{bos}<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"
                  "<|start_header_id|>ipython<|end_header_id|>\n\nT<|eot_id|>",
        "mistral": f"{bos}[INST] S\n\nU [/INST] A{eos}[TOOL_RESULTS] T[/TOOL_RESULTS]",
        "gemma": f"{bos}<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
                 "<start_of_turn>user\n<tool_response>\nT\n</tool_response><end_of_turn>\n",
        "phi3": "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\nA<|end|>\n"
                "<|user|>\n<tool_response>\nT\n</tool_response><|end|>\n",
        "default": f"System: S\n\nUser: U\n\nAssistant: A{eos}\n\nTool: T\n\n",
    }
    for name, text in expected.items():
        assert tok.apply_chat_template(msgs, chat_template=template(tok, name), tokenize=False) == text, name
    qwen = tok.apply_chat_template(msgs[1:3], chat_template=template(tok, "qwen2.5"), tokenize=False)
    assert qwen.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. "
                           "You are a helpful assistant.<|im_end|>\n<|im_start|>user\nU")


# --- loss modes and per-message overrides ----------------------------------------------------

def test_loss_last(tok):
    ids, mask = render_messages(tok, chat(), chat_template=tok.chat_template, loss="last")
    assert runs(tok, ids, mask) == ["Rome, since 1871.<|im_end|>"]


def test_loss_all(tok):
    ids, mask = render_messages(tok, chat(), chat_template=tok.chat_template, loss="all")
    assert mask == [1] * len(ids)
    msgs = chat()
    msgs[1]["loss"] = False
    ids, mask = render_messages(tok, msgs, chat_template=tok.chat_template, loss="all")
    assert runs(tok, ids, mask, value=0) == ["<|im_start|>user\nWhat is the capital of France?<|im_end|>"]


def test_per_message_overrides(tok):
    msgs = chat()
    msgs[2]["loss"] = False  # first answer
    msgs[3]["loss"] = True  # second question
    ids, mask = render_messages(tok, msgs, chat_template=tok.chat_template)
    assert runs(tok, ids, mask) == ["<|im_start|>user\nAnd of Italy?<|im_end|>", "Rome, since 1871.<|im_end|>"]
    assert "loss" in msgs[3]  # the caller's messages are not modified


def test_unknown_loss_mode(tok):
    with pytest.raises(UnituneError, match="did you mean 'last'"):
        render_messages(tok, chat(), chat_template=tok.chat_template, loss="lats")


# --- tools -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TEMPLATES))
def test_tools_ids_match_and_tool_results_untrained(tok_marked, name):
    ct = template(tok_marked, name)
    ids, mask = render_messages(tok_marked, tool_chat(), chat_template=ct, tools=[WEATHER])
    assert ids == reference_ids(tok_marked, tool_chat(), ct, tools=[WEATHER])
    text = tok_marked.decode(ids)
    assert "get_weather" in text and "Current weather in a city" in text
    trained = runs(tok_marked, ids, mask)
    assert len(trained) == 2 and trained[1] == lead(name) + "Sunny and 20C." + end_marker(tok_marked, name)
    assert not any("sunny" in r or "20C\n" in r for r in trained)


@pytest.mark.parametrize("name", ["chatml", "qwen2.5"])
def test_hermes_tool_calls(tok, name):
    ct = template(tok, name)
    ids, mask = render_messages(tok, tool_chat(), chat_template=ct, tools=[WEATHER])
    text = tok.decode(ids)
    assert text.count("<tools>\n{\"type\": \"function\"") == 1
    assert ("You are Qwen" in text) == (name == "qwen2.5")
    assert runs(tok, ids, mask) == [CALL_TEXT + "<|im_end|>", "Sunny and 20C.<|im_end|>"]


def test_rewritten_turns_fall_back_to_content_search(tok):
    """qwen2.5 merges consecutive tool results, so their prefixes are not prefixes of the full text."""
    msgs = tool_chat()
    msgs[2]["loss"] = msgs[3]["loss"] = True
    msgs[4]["loss"] = False
    ids, mask = render_messages(tok, msgs, chat_template=template(tok, "qwen2.5"))
    assert runs(tok, ids, mask) == [CALL_TEXT + "<|im_end|>", "<|im_start|>user\n<tool_response>\nsunny",
                                    "20C\n</tool_response><|im_end|>"]


def test_unlocatable_message_names_template_and_index(tok):
    ct = "{% for m in messages %}{{ m.content | upper if loop.last else m.content }}|{% endfor %}"
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "bye"}]
    with pytest.raises(UnituneError, match=r"cannot locate message 1 \(assistant\)"):
        render_messages(tok, msgs, chat_template=ct)


# --- registry, resolution, display -------------------------------------------------------------

def test_unknown_template_suggests(tok):
    with pytest.raises(UnituneError, match="did you mean 'chatml'.*known: chatml, qwen2.5"):
        get_template("chatlm")
    with pytest.raises(UnituneError, match="did you mean 'qwen2.5'"):
        resolve_chat_template(tok, "qwen25")


def test_resolve(tok):
    assert resolve_chat_template(tok) == tok.chat_template
    assert resolve_chat_template(types.SimpleNamespace(chat_template=None)) == TEMPLATES["default"].chat_template
    assert resolve_chat_template(tok, "llama3") == TEMPLATES["llama3"].chat_template
    assert set(TEMPLATES) >= {"chatml", "qwen2.5", "llama3", "mistral", "gemma", "phi3", "default"}
    assert all(t.stop and t.description for t in TEMPLATES.values())


def test_show(tok):
    ids, mask = render_messages(tok, chat(), chat_template=tok.chat_template)
    plain = show(tok, ids, mask, color=False)
    assert "assistant\n[[Paris.<|im_end|>]]\n" in plain
    assert plain.endswith(f"\n{sum(mask)} of {len(ids)} tokens trained") and 0 < sum(mask) < len(ids)
    colored = show(tok, ids, mask, color=True)
    assert "\033[32mParis.<|im_end|>\033[0m" in colored and "[[" not in colored
