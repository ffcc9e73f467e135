"""`unitune grpo` end to end on a tiny character-level model: a rule reward rises from near 0 to > 0.8
through the real CLI; every preset runs (reference by copy and by disabled adapter, num_iterations > 1,
dynamic sampling); metrics, the completions table, the reward plot and the before/after evaluation."""

import json

import pytest
import torch

import unitune
from tests.e2e.helpers import cli, metrics, write_jsonl
from tests.rl.tiny import build_char_model

WORDS = ["hello", "abc", "tell me", "word", "say it", "go on", "more", "yes", "again", "now", "fine", "ok",
         "start", "please", "sing", "write"]
REWARD = "def hit(completions, target, **kwargs):\n    return [float(t in c) for c, t in zip(completions, target)]\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grpo")
    model = build_char_model(tmp / "char")
    data = write_jsonl(tmp / "prompts.jsonl", [{"prompt": w, "target": "z"} for w in WORDS])
    val = write_jsonl(tmp / "val.jsonl", [{"prompt": w + "!", "target": "z"} for w in WORDS[:4]])
    (tmp / "rewards.py").write_text(REWARD)
    return tmp, model, data, val


def test_rule_reward_rises_through_the_cli(setup, monkeypatch):
    tmp, model, data, val = setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a 12k-parameter model: threads only add overhead
    out = tmp / "run"
    proc = cli("grpo", "--model", model, "--data.train", data, "--data.val", val,
               "--grpo.reward", f"{tmp}/rewards.py:hit", "--grpo.num_generations", 8,
               "--grpo.max_completion_length", 6, "--grpo.beta", 0, "--grpo.log_completions_every", 5,
               "--lora.enabled", "false", "--train.lr", "3e-2", "--train.batch_size", 4, "--train.max_steps", 20,
               "--train.scheduler", "constant", "--train.eval_every", 10, "--train.output_dir", out,
               "--train.progress", "false", "--train.tensorboard", "false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = metrics(out)
    train = [r["reward"] for r in rows if "reward" in r]
    assert len(train) == 20 and train[0] < 0.2
    assert sum(train[-5:]) / 5 > 0.8, train
    for key in ("reward_std", "rewards/hit/mean", "rewards/hit/std", "frac_reward_zero_std", "clip_ratio/low_mean",
                "clip_ratio/high_mean", "clip_ratio/region_mean", "completions/mean_length",
                "completions/max_length", "rollout_tokens_per_s"):
        assert key in rows[-1], key
    evals = [(r["step"], r["eval_rewards/hit/mean"]) for r in rows if "eval_reward" in r]
    assert [s for s, _ in evals] == [0, 10, 20] and evals[-1][1] > evals[0][1]  # held-out, greedy: before/after
    table = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert {t["step"] for t in table} == {1, 6, 11, 16} and {"prompt", "completion", "reward", "advantage",
                                                             "rewards/hit"} <= set(table[0])
    assert (out / "reward.png").exists() and (out / "final" / "config.json").exists()
    assert "algo grpo" in proc.stdout + proc.stderr


@pytest.mark.parametrize("algo,extra", [
    ("dapo", {"grpo.max_resample": 2}),
    ("dr_grpo", {}),
    ("gspo", {"grpo.num_iterations": 2}),
    ("rloo", {}),  # beta 0.05 in the reward: full fine-tuning -> the reference is a frozen copy
    ("reinforce_pp", {"lora.enabled": True, "lora.r": 4}),  # LoRA: the reference is the base, adapter off
    ("grpo", {"lora.enabled": True, "lora.r": 4, "grpo.advantage": "reinforce_pp_baseline",
              "grpo.scale_rewards": "batch"}),
    ("grpo", {"lora.enabled": True, "lora.r": 4, "train.mixed_precision": "bf16"}),  # rollouts from a bf16 copy
])
def test_every_algo_runs(setup, tmp_path, algo, extra):
    _, model, data, _ = setup
    result = unitune.grpo(model=str(model), data={"train": [str(data)]},
                          grpo={"algo": algo, "reward": ["contains:a", "repetition"], "reward_weights": [1, 0.1],
                                "num_generations": 4, "max_completion_length": 5, "log_completions_every": 0},
                          train={"max_steps": 4, "batch_size": 2, "lr": 1e-2, "output_dir": str(tmp_path),
                                 "progress": False, "tensorboard": False, "plot": False},
                          **{"lora.enabled": False, **extra})
    rows = [r for r in metrics(tmp_path) if "loss" in r]
    assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert result.metrics["step"] == 4
    if algo == "gspo":  # one generation per two optimizer steps; the second is off-policy (old log-probs frozen)
        assert ["reward" in r for r in rows] == [True, False, True, False]
    if algo == "dapo":
        assert "dynamic_sampling/rounds" in rows[0]
    if algo in ("rloo", "reinforce_pp"):
        assert "kl" in rows[0]  # k1 folded into the reward


def test_optimizer_in_backward_trains_grpo_the_same(setup, tmp_path):
    """GRPO makes its own batches (generate, score, then train): stepping each parameter inside backward
    gives the same rewards, losses and gradient norms as the ordinary step, so the same weights each step."""
    tmp, model, data, _ = setup
    runs = []
    for in_backward in (False, True):
        out = tmp_path / str(in_backward)
        unitune.grpo(model=str(model), data={"train": [str(data)]},
                     grpo={"reward": [f"{tmp}/rewards.py:hit"], "num_generations": 8, "max_completion_length": 6,
                           "beta": 0.0, "log_completions_every": 0, "num_iterations": 2},
                     train={"max_steps": 4, "batch_size": 4, "lr": 3e-2, "max_grad_norm": 0.0, "output_dir": str(out),
                            "optimizer_in_backward": in_backward, "progress": False, "tensorboard": False,
                            "plot": False},
                     **{"lora.enabled": False})
        runs.append([r for r in metrics(out) if "loss" in r])
    plain, fused = runs
    assert len(plain) == len(fused) == 4
    for a, b in zip(plain, fused):
        assert a.get("reward") == b.get("reward")  # the same samples (each generation step): the same weights
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert any(r["grad_norm"] > 0 for r in plain)


def test_reference_needs_a_mode(setup, tmp_path):
    _, model, data, _ = setup
    with pytest.raises(unitune.errors.UnituneError, match="needs a reference model"):
        unitune.grpo(model=str(model), data={"train": [str(data)]}, grpo={"reward": ["contains:a"]},
                     train={"max_steps": 1, "output_dir": str(tmp_path), "progress": False, "tensorboard": False},
                     **{"lora.enabled": False, "ref.mode": "none"})


def test_two_processes(setup, tmp_path, monkeypatch):
    """`--train.nproc 2`: each rank generates for its own prompts, rewards and lengths are reduced across
    ranks, rank 0 alone writes; the rule reward still rises (DDP over gloo, reference a frozen copy)."""
    tmp, model, data, _ = setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "run"
    proc = cli("grpo", "--model", model, "--data.train", data, "--grpo.reward", f"{tmp}/rewards.py:hit",
               "--grpo.num_generations", 8, "--grpo.max_completion_length", 6, "--grpo.beta", 0.01,
               "--grpo.log_completions_every", 4, "--lora.enabled", "false", "--train.lr", "3e-2",
               "--train.batch_size", 2, "--train.max_steps", 12, "--train.scheduler", "constant",
               "--train.output_dir", out, "--train.progress", "false", "--train.tensorboard", "false",
               "--train.nproc", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    rows = metrics(out)
    assert [r["step"] for r in rows if "reward" in r] == list(range(1, 13))  # one line per step, from rank 0
    train = [r["reward"] for r in rows if "reward" in r]
    assert sum(train[-3:]) / 3 > sum(train[:3]) / 3 + 0.2, train
    assert all(r["completions/max_length"] <= 6 and "kl" in r for r in rows if "reward" in r)
    table = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert {t["step"] for t in table} == {1, 5, 9}


def test_bf16_rollouts_on_a_cpu_that_emulates_bf16_are_warned_about(setup, tmp_path, monkeypatch, capsys):
    """grpo.rollout_dtype bfloat16 with fp32 training: the rollout copy is bf16, which such a CPU emulates."""
    import unitune.objectives.grpo as grpo

    _, model, data, _ = setup
    monkeypatch.setattr(grpo, "slow_on_this_cpu", lambda dtype: dtype == "bfloat16")
    unitune.grpo(model=str(model), data={"train": [str(data)]},
                 grpo={"reward": ["contains:a"], "num_generations": 2, "max_completion_length": 3, "beta": 0,
                       "rollout_dtype": "bfloat16", "log_completions_every": 0},
                 train={"max_steps": 1, "batch_size": 2, "output_dir": str(tmp_path), "progress": False,
                        "tensorboard": False, "plot": False}, **{"lora.enabled": False})
    assert "grpo.rollout_dtype bfloat16 on a CPU without bf16 arithmetic" in capsys.readouterr().err
