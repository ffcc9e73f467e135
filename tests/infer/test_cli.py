"""`unitune infer` (batch: killed and resumed; interactive: through a pseudo-terminal)
and `unitune sample` (DPO pairs and KTO rows scored by a reward file)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.infer.helpers import one_thread
from unitune.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}


def main(argv: list[str]) -> int:
    """The CLI in this process (no start-up cost), on one torch thread (see helpers.one_thread)."""
    with one_thread():
        return cli_main(argv)


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 3 == 0:
            rows.append({"id": f"q{i}", "prompt": f"Tell me about the number {i}."})
        elif i % 3 == 1:
            rows.append({"messages": [{"role": "user", "content": f"Count to {i}."},
                                      {"role": "assistant", "content": "(old answer, replaced)"}]})
        else:
            rows.append({"question": f"What is {i} squared?", "answer": str(i * i)})
    return rows


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# top_k keeps sampling seed-driven but blind to the last-bit differences between batch shapes
BATCH = ["--model", "tiny-llama", "--generate.max_new_tokens", "8", "--generate.seed", "7", "--generate.top_k", "20",
         "--infer.progress", "false"]
ALONE = ["--engine.threads", "1"]  # subprocesses only: torch threads are per process


def test_batch_killed_and_resumed_writes_each_row_once_as_an_uninterrupted_run(tmp_path):
    prompts = _write(tmp_path / "prompts.jsonl", _rows(24))
    out = tmp_path / "out.jsonl"
    small_batches = ["--engine.max_batch_size", "4"]  # rows finish a few at a time: something to interrupt
    proc = subprocess.Popen([sys.executable, "-m", "unitune", "infer", "--infer.input", prompts,
                             "--infer.output", out, *BATCH, *ALONE, *small_batches], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_text().count("\n")
    assert 3 <= written < 24
    with open(out, "a") as f:
        f.write('{"index": 23, "response": "cut sh')  # as if killed mid-line
    assert main(["infer", "--infer.input", str(prompts), "--infer.output", str(out), *BATCH]) == 0
    resumed = _read(out)
    assert sorted(r["index"] for r in resumed) == list(range(24))
    assert [r["index"] for r in resumed[:written]] == list(range(written))  # the first rows were kept, not redone
    assert resumed[0]["id"] == "q0" and resumed[3]["id"] == "q3" and "id" not in resumed[1]
    assert resumed[1]["messages"] == [{"role": "user", "content": "Count to 1."}]
    assert all(r["usage"]["completion_tokens"] <= 8 and r["finish_reason"] in ("stop", "length") for r in resumed)

    fresh = tmp_path / "fresh.jsonl"
    assert main(["infer", "--infer.input", str(prompts), "--infer.output", str(fresh), *BATCH]) == 0
    by_index = {r["index"]: r["response"] for r in _read(fresh)}
    assert {r["index"]: r["response"] for r in resumed} == by_index  # per-row seeds: same answers


def test_batch_errors_are_one_line(tmp_path, capsys):
    prompts = _write(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"text": "no prompt here"}])
    assert main(["infer", "--infer.input", str(prompts), "--infer.output", str(tmp_path / "o.jsonl"),
                 *BATCH]) == 2
    assert "row 1" in capsys.readouterr().err
    other = _write(tmp_path / "other.jsonl", [{"index": 7, "response": "x"}])
    assert main(["infer", "--infer.input", str(prompts), "--infer.output", str(other), *BATCH]) == 2
    assert "not in the input" in capsys.readouterr().err


def test_interactive_chat_through_a_pty():
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "unitune", "infer", "--model", "tiny-llama",
                                           "--generate.max_new_tokens", "6", "--generate.seed", "1",
                                           "--generate.temperature", "1.0", *ALONE],
                          cwd=str(ROOT), env=ENV, encoding="utf-8", timeout=90)

    def say(text: str) -> str:
        child.sendline(text)
        child.expect_exact(text + "\r\n")  # the terminal's echo
        child.expect_exact(">>> ")
        return child.before.strip()

    try:
        child.expect_exact(">>> ")
        assert "/clear" in child.before
        first = say("Hello")
        second = say("Hello")  # same seed, longer conversation: a different answer
        assert first and second and first != second
        assert "cleared" in say("/clear")
        assert say("Hello") == first  # the conversation really was forgotten
        assert "system prompt set" in say("/system You are a pirate.")
        assert say("Hello") not in (first, second)
        assert "unknown command" in say("/dance")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


REWARD = '''
def length_reward(completions, prompts, answer, **kwargs):
    assert len(completions) == len(prompts) == len(answer)
    return [float(len(c)) + (100.0 if a in c else 0.0) for c, a in zip(completions, answer)]
'''


def test_sample_dpo_pairs_and_kto_rows(tmp_path):
    prompts = _write(tmp_path / "prompts.jsonl", [{"question": f"What is {i}+{i}?", "answer": str(2 * i)}
                                                  for i in range(4)])
    reward = tmp_path / "reward.py"
    reward.write_text(REWARD)
    common = ["--model", "tiny-llama", "--sample.input", str(prompts), "--sample.n", "3",
              "--sample.reward", f"{reward}:length_reward", "--generate.max_new_tokens", "8",
              "--generate.seed", "0", "--sample.progress", "false"]
    raw = tmp_path / "raw.jsonl"
    assert main(["sample", *common, "--sample.output", str(raw)]) == 0
    rows = _read(raw)
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and all(len(r["candidates"]) == 3 for r in rows)
    for r in rows:
        answer = str(2 * r["index"])
        for c in r["candidates"]:
            assert c["score"] == len(c["text"]) + (100.0 if answer in c["text"] else 0.0)

    dpo = tmp_path / "dpo.jsonl"
    assert main(["sample", *common, "--sample.output", str(dpo), "--sample.format", "dpo"]) == 0
    pairs = _read(dpo)
    expected = [r for r in rows if len({c["score"] for c in r["candidates"]}) > 1]
    assert len(pairs) == len(expected) > 0
    for pair, r in zip(pairs, expected):
        best = max(r["candidates"], key=lambda c: c["score"])
        worst = min(r["candidates"], key=lambda c: c["score"])
        assert pair["prompt"] == r["prompt"] and pair["prompt"][-1]["role"] == "user"
        assert pair["chosen"] == {"role": "assistant", "content": best["text"]}
        assert pair["rejected"] == {"role": "assistant", "content": worst["text"]}

    # the other formats, from the same candidates
    from unitune.infer.engine import Completion
    from unitune.infer.sample import _records

    def records(fmt, **kw):
        s = SimpleNamespace(format=fmt, min_gap=kw.get("min_gap", 0.0), threshold=kw.get("threshold", 0.5))
        out = []
        for r in rows:
            cands = [Completion(c["text"], [], c["finish_reason"], 0) for c in r["candidates"]]
            out += _records(s, {}, r["index"], r["prompt"], cands, [c["score"] for c in r["candidates"]])
        return out

    assert records("dpo") == pairs
    assert records("dpo", min_gap=1000) == []
    labelled = records("kto", threshold=20)
    assert len(labelled) == 12
    scores = [c["score"] for r in rows for c in r["candidates"]]
    assert [x["label"] for x in labelled] == [s >= 20 for s in scores]
    assert all(x["completion"]["role"] == "assistant" for x in labelled)


def test_sample_dpo_pairs_train_with_unitune_dpo(tmp_path):
    import unitune.api

    if "dpo" not in getattr(unitune.api, "VERB_DEFAULTS", {}):
        pytest.skip("unitune dpo is not built yet (another issue); the pair format is checked above")
    prompts = _write(tmp_path / "prompts.jsonl", [{"prompt": f"Say something about {i}."} for i in range(8)])
    reward = tmp_path / "reward.py"
    reward.write_text("def r(completions, **kw):\n    return [float(len(c)) for c in completions]\n")
    pairs = tmp_path / "pairs.jsonl"
    assert main(["sample", "--model", "tiny-llama", "--sample.input", str(prompts), "--sample.output", str(pairs),
                 "--sample.n", "2", "--sample.format", "dpo", "--sample.reward", f"{reward}:r",
                 "--generate.max_new_tokens", "8", "--generate.seed", "0", "--sample.progress", "false"]) == 0
    result = unitune.api.train("dpo", model="tiny-llama", data={"train": [str(pairs)]},
                               train={"max_steps": 2, "output_dir": str(tmp_path / "dpo"), "plot": False,
                                      "tensorboard": False, "progress": False}, lora={"r": 4})
    assert (result.final_dir / "adapter_config.json").exists()


def test_sample_needs_a_scorer_for_pairs(tmp_path, capsys):
    prompts = _write(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    assert main(["sample", "--model", "tiny-llama", "--sample.input", str(prompts), "--sample.output",
                 str(tmp_path / "o.jsonl"), "--sample.format", "dpo"]) == 2
    assert "--sample.reward" in capsys.readouterr().err
    assert main(["sample", "--model", "tiny-llama", "--sample.input", str(prompts), "--sample.output",
                 str(tmp_path / "o.jsonl"), "--sample.reward", "nope.py:f"]) == 2
    assert "does not exist" in capsys.readouterr().err
