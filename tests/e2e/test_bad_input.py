"""A corpus of broken datasets and configs, each through the real CLI: a one-line error that names the
file, line and field (or key), exit code 2, no traceback."""

import json

import pytest

from tests.e2e.helpers import cli, write_jsonl

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def case_files(tmp):
    """name -> (flags, expected substrings of the one-line error)."""
    def data(name, text):
        (tmp / name).write_text(text)
        return ["--data.train", str(tmp / name)]

    bad_role = {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}
    no_answer = {"messages": [{"role": "user", "content": "hi"}]}
    wrong_type = {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}
    return {
        "invalid json line": (data("a.jsonl", json.dumps(GOOD) + "\n{not json\n"), ["a.jsonl:2", "JSON"]),
        "unknown role": (data("b.jsonl", json.dumps(GOOD) + "\n" + json.dumps(bad_role) + "\n"),
                         ["b.jsonl:2", "messages[1].role", "bot"]),
        "content wrong type": (data("c.jsonl", json.dumps(wrong_type) + "\n"), ["c.jsonl:1", "messages[0].content"]),
        "missing alpaca output": (data("d.jsonl", json.dumps({"instruction": "do it"}) + "\n"), ["d.jsonl:1", "output"]),
        "empty assistant content": (data("e.jsonl", json.dumps({"instruction": "x", "output": ""}) + "\n"),
                                    ["e.jsonl:1", "output"]),
        "no assistant turn": (data("f.jsonl", json.dumps(no_answer) + "\n"), ["f.jsonl:1", "assistant"]),
        "empty file": (data("g.jsonl", ""), ["g.jsonl", "empty"]),
        "missing data file": (["--data.train", str(tmp / "nope.jsonl")], ["nope.jsonl", "not found"]),
        "no training data": ([], ["data.train"]),
        "unknown flag": (["--lora.rr", "4"], ["--lora.rr", "lora.r"]),
        "bad number": (["--train.lr", "fast"], ["train.lr", "number"]),
        "bad choice": (["--train.scheduler", "cosin"], ["train.scheduler", "cosine"]),
        "neither a number nor auto": (["--train.max_tokens_per_forward", "lots"],
                                      ["train.max_tokens_per_forward", "integer", "auto"]),
        "unknown model": (["--model", "tiny-lama"], ["tiny-lama", "tiny-llama"]),
        "unknown template": (["--template.name", "chatm"], ["chatm", "chatml"]),
        "yaml unknown key": (_yaml(tmp, "k.yaml", "lora:\n  alpah: 8\n"), ["k.yaml", "lora.alpah", "lora.alpha"]),
        "invalid yaml": (_yaml(tmp, "y.yaml", "train: [unclosed\n"), ["y.yaml", "YAML"]),
        "missing config file": (["--config", str(tmp / "none.yaml")], ["none.yaml", "does not exist"]),
        "unknown column rename": (data("h.jsonl", json.dumps(GOOD) + "\n") + ["--data.columns", '{"q": "prompt"}'],
                                  ["'q'"]),
    }


def _yaml(tmp, name, text):
    (tmp / name).write_text(text)
    return ["--config", str(tmp / name)]


NAMES = ["invalid json line", "unknown role", "content wrong type", "missing alpaca output",
         "empty assistant content", "no assistant turn", "empty file", "missing data file", "no training data",
         "unknown flag", "bad number", "bad choice", "neither a number nor auto", "unknown model", "unknown template",
         "yaml unknown key", "invalid yaml", "missing config file", "unknown column rename"]


@pytest.mark.parametrize("case", NAMES)
def test_bad_input_gives_one_line_error(case, tmp_path):
    flags, expected = case_files(tmp_path)[case]
    proc = cli("sft", "--model", "tiny-llama", "--train.output_dir", tmp_path / "out", *flags)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("unitune: error:")]
    assert len(errors) == 1, proc.stderr
    for text in expected:
        assert text in errors[0], (text, errors[0])


def test_skip_mode_drops_and_reports_bad_rows(tmp_path):
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}
    data = write_jsonl(tmp_path / "mixed.jsonl", [GOOD] * 6 + [bad] + [GOOD] * 3)
    proc = cli("sft", "--model", "tiny-llama", "--data.train", data, "--data.on_bad_row", "skip",
               "--train.max_steps", "1", "--train.output_dir", tmp_path / "out", "--train.progress", "false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped 1 of 10" in proc.stdout and "mixed.jsonl:7" in proc.stdout
