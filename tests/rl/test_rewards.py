"""Reward functions: built-ins, user functions with the dataset's columns, weights and None, and errors that
name the function and the sample."""

import math

import pytest
import torch

from unitune.errors import UnituneError
from unitune.rl.rewards import build_rewards, combine, same_answer, score

CTX = {"max_completion_length": 20}


def run(specs, completions, weights=(), ids=None, **columns):
    rewards = build_rewards(list(specs), list(weights), CTX)
    ids = ids or [[0] * len(c.split()) for c in completions]
    per_fn = score(rewards, completions, [[{"role": "user", "content": "q"}]] * len(completions), ids,
                   {k: list(v) for k, v in columns.items()})
    return per_fn, combine(per_fn, rewards), rewards


@pytest.mark.parametrize("completion,target,mode,expected", [
    ("so 3 + 4 = 7", "7", "auto", True),
    ("the answer is 1,000.", "1000", "auto", True),
    ("first 12 then 13", "12", "auto", False),  # the last number counts
    ("it is \\boxed{\\frac{1}{2}} or 5", "\\frac{1}{2}", "auto", True),  # boxed wins over the last number
    ("The answer: 42", "Work... #### 42", "auto", True),  # a GSM8K solution column
    ("Paris", "Paris", "exact", True),
    ("paris", "Paris", "exact", False),
    ("no number", "3", "last_number", False),
])
def test_accuracy_modes(completion, target, mode, expected):
    assert same_answer(completion, target, mode) is expected


def test_builtins_and_weights():
    per_fn, total, rewards = run(["accuracy", "format:^\\d+$", "contains:!"], ["12", "it is 12!", "13"],
                                 weights=[1, 0.5, 2], answer=["12", "12", "12"])
    assert [r.name for r in rewards] == ["accuracy", "format", "contains"]
    assert per_fn.tolist() == [[1, 1, 0], [1, 0, 1], [0, 1, 0]]
    assert total.tolist() == [1.5, 3.0, 0.5]


def test_length_soft_overlong_and_repetition():
    ids = [[0] * n for n in (10, 15, 18, 20, 25)]
    per_fn, _, _ = run(["soft_overlong:5", "length:10"], ["a"] * 5, ids=ids)
    assert per_fn[:, 0].tolist() == [0.0, 0.0, -0.6, -1.0, -1.0]  # L_max 20, buffer 5
    assert per_fn[:, 1].tolist() == pytest.approx([1.0, 0.5, 0.2, 0.0, 0.0])
    rep, _, _ = run(["repetition"], ["a b c a b c a b c", "one two three four"])
    assert rep[1, 0] == 0 and -1 < rep[0, 0] < 0


def test_user_function_gets_columns_and_none(tmp_path):
    (tmp_path / "mine.py").write_text(
        "def judge(completions, prompts, completion_ids, level, **kwargs):\n"
        "    return [None if lv == 'skip' else float(len(c)) for c, lv in zip(completions, level)]\n"
        "def never(completions, **kwargs):\n    return [None] * len(completions)\n")
    per_fn, total, rewards = run([f"{tmp_path}/mine.py:judge", f"{tmp_path}/mine.py:never"], ["ab", "abc"],
                                 level=["easy", "skip"])
    assert [r.name for r in rewards] == ["judge", "never"]
    assert per_fn[0, 0] == 2 and math.isnan(per_fn[1, 0])
    assert total[0] == 2 and math.isnan(total[1])  # every function said None: NaN (advantage 0 later)
    assert torch.isnan(per_fn[:, 1]).all()


def test_a_raising_function_names_itself_and_the_sample(tmp_path):
    (tmp_path / "bad.py").write_text(
        "def picky(completions, answer, **kw):\n    return [1.0 / int(a) for a in answer]\n")
    with pytest.raises(UnituneError) as err:
        run([f"{tmp_path}/bad.py:picky"], ["fine", "breaks"], answer=["2", "0"])
    message = str(err.value)
    assert "'picky'" in message and "sample 1" in message and "'breaks'" in message and "ZeroDivisionError" in message


def test_spec_errors(tmp_path):
    with pytest.raises(UnituneError, match="did you mean 'accuracy'"):
        build_rewards(["acuracy"], [], CTX)
    with pytest.raises(UnituneError, match="does not exist"):
        build_rewards([f"{tmp_path}/none.py:f"], [], CTX)
    with pytest.raises(UnituneError, match="2 values for 1"):
        build_rewards(["accuracy"], [1, 2], CTX)
    with pytest.raises(UnituneError, match="'answer' column"):
        run(["accuracy"], ["1"])
    (tmp_path / "wrong.py").write_text("def f(completions, **kw):\n    return ['high'] * len(completions)\n")
    with pytest.raises(UnituneError, match="expected a number or None"):
        run([f"{tmp_path}/wrong.py:f"], ["x"])
