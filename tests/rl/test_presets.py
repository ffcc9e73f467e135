"""--grpo.algo presets: a variant is a choice of knobs; a knob set explicitly wins over the preset."""

import pytest

from unitune.api import make_config
from unitune.errors import UnituneError
from unitune.rl.presets import ALGOS, resolve


def settings(**grpo):
    return resolve(make_config("grpo", None, {"grpo": grpo}).grpo)


def test_presets_and_overrides():
    assert settings(algo="dapo").epsilon_high == 0.28 and settings(algo="dapo").dynamic_sampling
    assert settings(algo="dr_grpo").scale_rewards == "none" and settings(algo="dr_grpo").loss_type == "dr_grpo"
    assert settings(algo="gspo").importance_sampling_level == "sequence"
    assert settings(algo="rloo").kl_in_reward and settings(algo="rloo").advantage == "rloo"
    s = settings(algo="dapo", epsilon_high=0.3, dynamic_sampling=False, beta=0.0)
    assert (s.epsilon_high, s.dynamic_sampling, s.loss_type) == (0.3, False, "dapo")
    assert set(ALGOS) == {"grpo", "dapo", "dr_grpo", "gspo", "rloo", "reinforce_pp"}


def test_flags_spell_the_same_knobs():
    flags = make_config("grpo", None, {"grpo.algo": "gspo", "grpo.beta": "0.01", "grpo.reward": ["accuracy"]})
    assert resolve(flags.grpo).beta == 0.01 and flags.grpo.reward == ["accuracy"]


@pytest.mark.parametrize("grpo,message", [
    ({"num_generations": 1}, "num_generations must be >= 2"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"epsilon": 1.5}, "epsilon must be in"),
])
def test_bad_knobs(grpo, message):
    with pytest.raises(UnituneError, match=message):
        settings(**grpo)
