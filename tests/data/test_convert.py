"""Conversion: every accepted format to the canonical form, and the bad-row
corpus -- each error names the source, the field and what is wrong."""

import pytest

from unitune.data.convert import convert
from unitune.data.load import Row
from unitune.errors import UnituneError

CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def one(data, task="sft"):
    examples, report = convert([Row(data, "data.jsonl:4")], task)
    assert report.kept == 1 and not report.skipped
    return examples[0]


def bad(data, task="sft"):
    with pytest.raises(UnituneError) as err:
        convert([Row(data, "data.jsonl:4")], task)
    return str(err.value)


def test_messages_keep_loss_tools_and_tool_calls():
    call = [{"type": "function", "function": {"name": "add", "arguments": "{\"a\": 1}"}}]
    data = {"messages": [{"role": "user", "content": "1+1?"},
                         {"role": "assistant", "content": None, "tool_calls": call},
                         {"role": "tool", "content": "2", "tool_call_id": "c1"},
                         {"role": "assistant", "content": "2", "loss": False, "extra": 1}],
            "tools": '[{"type": "function"}]', "system": "be brief"}
    ex = one(data)
    assert ex["tools"] == [{"type": "function"}]
    assert ex["messages"][0] == {"role": "system", "content": "be brief"}
    assert ex["messages"][2] == {"role": "assistant", "content": "", "tool_calls": call}
    assert ex["messages"][3]["tool_call_id"] == "c1"
    assert ex["messages"][4] == {"role": "assistant", "content": "2", "loss": False}


def test_alpaca_with_input_system_history():
    ex = one({"instruction": "Add", "input": "1 and 2", "output": "3", "system": "math",
              "history": [["hi", "hello"]]})
    assert ex == {"messages": [{"role": "system", "content": "math"}, *CHAT,
                               {"role": "user", "content": "Add\n1 and 2"},
                               {"role": "assistant", "content": "3"}]}
    assert one({"instruction": "Add", "input": "", "output": "3"})["messages"][0]["content"] == "Add"


def test_sharegpt_roles():
    ex = one({"system": "sys", "conversations": [
        {"from": "human", "value": "weather?"}, {"from": "function_call", "value": "{}"},
        {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}]})
    assert [m["role"] for m in ex["messages"]] == ["system", "user", "assistant", "tool", "assistant"]


def test_query_response_and_prompt_completion():
    assert one({"query": "hi", "response": "hello"}) == {"messages": CHAT}
    assert one({"prompt": "hi", "completion": "hello"}) == {"messages": CHAT}
    assert one({"prompt": CHAT[:1], "completion": CHAT[1:]}) == {"messages": CHAT}


def test_pt_formats():
    assert one({"text": "once"}, "pt") == {"text": "once"}
    assert one({"content": "once"}, "pt") == {"text": "once"}
    msgs = [{"role": "system", "content": "s"}, {"role": "assistant", "content": "once"}]
    assert one({"messages": msgs}, "pt") == {"text": "once"}
    assert "messages[0].role': a user turn in pt data" in bad({"messages": CHAT}, "pt")


# --- the bad-row corpus ---------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    ({"instruction": "Add"}, "data.jsonl:4: field 'output': missing"),
    ({"instruction": "Add", "output": "  "}, "data.jsonl:4: field 'output': empty"),
    ({"messages": [CHAT[0], {"role": "assistant", "content": ""}]},
     "data.jsonl:4: field 'messages[1].content': empty"),
    ({"messages": [CHAT[0], {"role": "bot", "content": "x"}]},
     "data.jsonl:4: field 'messages[1].role': unknown role 'bot' (expected system, user, assistant, tool)"),
    ({"messages": [CHAT[0], {"role": "assistant", "content": 3}]},
     "data.jsonl:4: field 'messages[1].content': expected a string, got int"),
    ({"messages": "hi"}, "data.jsonl:4: field 'messages': expected a list, got str"),
    ({"messages": [CHAT[0], "hello"]}, "data.jsonl:4: field 'messages[1]': expected an object"),
    ({"messages": [CHAT[0]]}, "data.jsonl:4: field 'messages': no assistant turn"),
    ({"messages": []}, "data.jsonl:4: field 'messages': empty"),
    ({"conversations": [{"from": "human", "value": "hi"}]}, "field 'conversations': no assistant turn"),
    ({"conversations": [{"from": "bot", "value": "hi"}]}, "field 'conversations[0].from': unknown role 'bot'"),
    ({"query": "hi", "response": "yo", "history": [["only one"]]},
     "field 'history[0]': expected a [question, answer] pair"),
    ({"prompt": CHAT[:1], "completion": CHAT[:1]}, "field 'completion': no assistant turn"),
    ({"messages": [CHAT[0], {**CHAT[1], "loss": "yes"}]}, "field 'messages[1].loss': expected true or false"),
    ({"messages": [{**CHAT[0], "tool_calls": []}, CHAT[1]]},
     "field 'messages[0].tool_calls': only assistant messages make tool calls"),
])
def test_bad_rows_name_source_and_field(data, expected):
    assert expected in bad(data)


def test_unmatched_row_lists_its_keys_and_the_formats():
    msg = bad({"question": "q", "answer": "a"})
    assert msg.startswith("data.jsonl:4: no sft format matches the row's keys ['answer', 'question']")
    assert "alpaca ('instruction')" in msg and "sharegpt ('conversations')" in msg


def test_pt_missing_and_wrong_type():
    assert "field 'text': expected a string, got list" in bad({"text": ["a"]}, "pt")
    assert "field 'messages': expected exactly one assistant turn, got 2" in bad(
        {"messages": [CHAT[1], CHAT[1]]}, "pt")


def test_unknown_task():
    with pytest.raises(UnituneError, match=r"no data formats for task 'sfft' \(did you mean 'sft'\?\)"):
        convert([], "sfft")


def test_skip_mode_reports_what_was_dropped():
    rows = [Row({"instruction": "a", "output": "b"}, "d.jsonl:1"),
            Row({"instruction": "a"}, "d.jsonl:2"),
            Row({"messages": [CHAT[0]]}, "d.jsonl:3")]
    examples, report = convert(rows, "sft", on_bad_row="skip")
    assert len(examples) == 1 and report.kept == 1
    assert report.skipped == [("d.jsonl:2", "field 'output': missing"),
                              ("d.jsonl:3", "field 'messages': no assistant turn (nothing to train on)")]
    assert report.summary().startswith("skipped 2 of 3 rows: d.jsonl:2 (field 'output': missing), d.jsonl:3")
    assert convert(rows[:1], "sft")[1].summary() == "kept all 1 rows"
