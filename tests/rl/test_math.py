"""OBJECTIVES.md §6 GRPO / RLOO / REINFORCE++ vectors (TRL 1.16 and OpenRLHF numbers) to 1e-6:
advantages, every loss_type (bnpo with GA=2 too), bias-corrected KL, on-policy, GSPO, and the metrics."""

import pytest
import torch

from unitune.rl import advantages as adv
from unitune.rl.losses import aggregate, policy_loss

T = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
REWARDS = T([[1, .5], [0, 1], [1, 0], [1, 0], [1, 0], [1, 0]])
WEIGHTS = T([1, 0.5])
R = (REWARDS * WEIGHTS).sum(-1)
LENGTHS = [4, 2, 3, 1, 4, 2]
MASK = T([[1.0 if t < n else 0.0 for t in range(4)] for n in LENGTHS])
LOGP = T([[-.5, -1, -.2, -.7], [-1.5, -.3, 0, 0], [-.8, -.6, -.1, 0], [-.4, 0, 0, 0], [-.9, -.2, -1.1, -.3],
          [-.6, -.7, 0, 0]])
OLD = T([[-.7, -.8, -.2, -1], [-1.2, -.35, 0, 0], [-.8, -.5, -.4, 0], [-.5, 0, 0, 0], [-.9, -.3, -1, -.3],
         [-.5, -.7, 0, 0]])
REF = T([[-.6, -.9, -.3, -.8], [-1.4, -.5, 0, 0], [-.7, -.6, -.3, 0], [-.6, 0, 0, 0], [-1, -.2, -1, -.4],
         [-.6, -.6, 0, 0]])


def step_loss(loss_type, a, *, micro=((0, 6),), old=OLD, **kw):
    """What the loop computes: the sum of the micro-batches' sums over the sum of their units."""
    kw = {"beta": 0.04, "epsilon": 0.2, "epsilon_high": 0.28, **kw}
    total, units, metrics = 0.0, 0, {}
    for lo, hi in micro:
        per_token, m = policy_loss(LOGP[lo:hi], MASK[lo:hi], a[lo:hi], old_logps=None if old is None else old[lo:hi],
                                   ref_logps=REF[lo:hi], **kw)
        s, u = aggregate(loss_type, per_token, MASK[lo:hi], 4)
        total, units = total + float(s), units + u
        for k, (v, n) in m.items():
            metrics[k] = (metrics.get(k, (0, 0))[0] + float(v), metrics.get(k, (0, 0))[1] + float(n))
    return total / units, {k: v / n for k, (v, n) in metrics.items()}


def group_adv(scale="group"):
    return adv.compute("grpo", R, MASK, group=3, scale_rewards=scale)[:, 0]


def test_rewards_and_group_advantages():
    assert R.tolist() == [1.25, 0.5, 1, 1, 1, 1]
    torch.testing.assert_close(group_adv(), T([0.8726430494, -1.0908038117, 0.2181607623, 0, 0, 0]), atol=1e-9,
                               rtol=0)
    torch.testing.assert_close(group_adv("none"), T([1 / 3, -5 / 12, 1 / 12, 0, 0, 0]), atol=1e-9, rtol=0)


@pytest.mark.parametrize("loss_type,micro,expected", [
    ("grpo", ((0, 6),), -0.0270673937), ("grpo", ((0, 3), (3, 6)), -0.0270673937),
    ("bnpo", ((0, 6),), -0.1525698821), ("bnpo", ((0, 3), (3, 6)), -0.1355930715),
    ("dr_grpo", ((0, 6),), -0.1017132547), ("dr_grpo", ((0, 3), (3, 6)), -0.1017132547),
    ("dapo", ((0, 6),), -0.1525698821), ("dapo", ((0, 3), (3, 6)), -0.1525698821),
])
def test_loss_types(loss_type, micro, expected):
    assert step_loss(loss_type, group_adv(), micro=micro)[0] == pytest.approx(expected, abs=1e-6)


def test_grpo_metrics():
    _, m = step_loss("grpo", group_adv())
    assert m["kl"] == pytest.approx(0.0066396212, abs=1e-9)
    assert m["clip_ratio/low_mean"] == pytest.approx(0.0625)
    assert m["clip_ratio/high_mean"] == pytest.approx(0.125)
    assert m["clip_ratio/region_mean"] == pytest.approx(0.1875)


@pytest.mark.parametrize("loss_type,expected", [("grpo", -0.0270387412), ("dapo", -0.1525461891)])
def test_bias_corrected_kl(loss_type, expected):
    assert step_loss(loss_type, group_adv(), bias_correction_kl=True)[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("loss_type,expected", [("grpo", 0.0003324434), ("dapo", -0.1224498440)])
def test_on_policy(loss_type, expected):
    assert step_loss(loss_type, group_adv(), old=None)[0] == pytest.approx(expected, abs=1e-6)


def test_gspo():
    loss, _ = step_loss("grpo", group_adv(), beta=0.0, epsilon=3e-4, epsilon_high=4e-4, level="sequence")
    assert loss == pytest.approx(-0.0001272604, abs=1e-9)


def test_rloo():
    shaped = adv.kl_reward(R, OLD, REF, MASK, beta=0.05)
    a = adv.compute("rloo", shaped, MASK, group=3)
    torch.testing.assert_close(a[:, 0], T([0.51125, -0.6475, 0.13625, -0.0025, -0.0025, 0.005]), atol=1e-9, rtol=0)
    loss, _ = step_loss("grpo", a, beta=0.0, epsilon=0.2, epsilon_high=0.2, level="sequence_sum")
    assert loss == pytest.approx(-0.0430435433, abs=1e-6)


def test_reinforce_pp():
    a = adv.compute("reinforce_pp", R, MASK, group=3, token_kl=OLD - REF, beta=0.01)
    loss, _ = step_loss("dapo", a, beta=0.0, epsilon=0.2, epsilon_high=0.2)
    assert loss == pytest.approx(-0.0374924181, abs=1e-6)


def test_reinforce_pp_baseline():
    a = adv.compute("reinforce_pp_baseline", R, MASK, group=3)
    loss, _ = step_loss("dapo", a, beta=0.0, epsilon=0.2, epsilon_high=0.2)
    assert loss == pytest.approx(-0.0381330471, abs=1e-6)


def test_nan_rewards_and_batch_scaling():
    r = T([1.0, float("nan"), 0.0, float("nan"), float("nan"), float("nan")])
    a = adv.compute("grpo", r, MASK, group=3)[:, 0]
    assert a[1] == 0 and a[3:].abs().sum() == 0 and a[0] > 0 > a[2]
    b = adv.compute("grpo", R, MASK, group=3, scale_rewards="batch")[:, 0]
    torch.testing.assert_close(b, (R - R.view(2, 3).mean(-1).repeat_interleave(3)) / (R.std() + 1e-4))
