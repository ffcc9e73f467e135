"""`--grpo.algo` presets: each variant of the family is a choice of registered functions and knobs.

| algo         | advantage    | scale | loss_type | level        | beta | KL in  | eps / eps_high | also       |
|--------------|--------------|-------|-----------|--------------|------|--------|----------------|------------|
| grpo         | grpo         | group | grpo      | token        | 0.04 | loss   | 0.2 / 0.2      |            |
| dapo         | grpo         | group | dapo      | token        | 0    | -      | 0.2 / 0.28     | DS, OF     |
| dr_grpo      | grpo         | none  | dr_grpo   | token        | 0    | -      | 0.2 / 0.2      |            |
| gspo         | grpo         | group | grpo      | sequence     | 0    | -      | 3e-4 / 4e-4    |            |
| rloo         | rloo         | -     | grpo      | sequence_sum | 0.05 | reward | 0.2 / 0.2      | TRL RLOO   |
| reinforce_pp | reinforce_pp | -     | dapo      | token        | 0.01 | reward | 0.2 / 0.2      | OpenRLHF   |

DS: dynamic sampling, OF: overlong filtering (mask_truncated_completions).

A knob set explicitly (YAML or flag) wins over the preset; a knob left null takes the preset's
value. Presets fix the math, not the sizes: num_generations, lengths and temperature are the
user's (TRL's RLOO defaults to G=2; set --grpo.num_generations 2 for that). DAPO's soft overlong
punishment is a reward function: add `soft_overlong` to grpo.reward.
"""

from dataclasses import dataclass

from unitune.errors import UnituneError

ALGOS = {
    "grpo": dict(advantage="grpo", scale_rewards="group", loss_type="grpo", importance_sampling_level="token",
                 beta=0.04, kl_in_reward=False, epsilon=0.2, epsilon_high=0.2),
    "dapo": dict(advantage="grpo", scale_rewards="group", loss_type="dapo", importance_sampling_level="token",
                 beta=0.0, kl_in_reward=False, epsilon=0.2, epsilon_high=0.28, dynamic_sampling=True,
                 mask_truncated_completions=True),
    "dr_grpo": dict(advantage="grpo", scale_rewards="none", loss_type="dr_grpo", importance_sampling_level="token",
                    beta=0.0, kl_in_reward=False, epsilon=0.2, epsilon_high=0.2),
    "gspo": dict(advantage="grpo", scale_rewards="group", loss_type="grpo", importance_sampling_level="sequence",
                 beta=0.0, kl_in_reward=False, epsilon=3e-4, epsilon_high=4e-4),
    "rloo": dict(advantage="rloo", scale_rewards="none", loss_type="grpo", importance_sampling_level="sequence_sum",
                 beta=0.05, kl_in_reward=True, epsilon=0.2, epsilon_high=0.2),
    "reinforce_pp": dict(advantage="reinforce_pp", scale_rewards="none", loss_type="dapo",
                         importance_sampling_level="token", beta=0.01, kl_in_reward=True, epsilon=0.2,
                         epsilon_high=0.2),
}
KNOBS = ("advantage", "scale_rewards", "loss_type", "importance_sampling_level", "beta", "kl_in_reward", "epsilon",
         "epsilon_high", "dynamic_sampling", "mask_truncated_completions")
OFF = dict(dynamic_sampling=False, mask_truncated_completions=False)


@dataclass(frozen=True)
class Settings:
    """The effective knobs of a run: the preset, with what the user set on top."""
    algo: str
    advantage: str
    scale_rewards: str
    loss_type: str
    importance_sampling_level: str
    beta: float
    kl_in_reward: bool
    epsilon: float
    epsilon_high: float
    dynamic_sampling: bool
    mask_truncated_completions: bool

    def describe(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)}" for k in KNOBS)


def resolve(cfg) -> Settings:
    if cfg.algo not in ALGOS:
        raise UnituneError(f"grpo.algo must be one of {', '.join(ALGOS)}, not '{cfg.algo}'")
    values = {**OFF, **ALGOS[cfg.algo]}
    values.update({k: getattr(cfg, k) for k in KNOBS if getattr(cfg, k) is not None})
    settings = Settings(algo=cfg.algo, **values)
    _check(settings, cfg)
    return settings


def _check(s: Settings, cfg) -> None:
    problems = [
        (cfg.num_generations < 1, "grpo.num_generations must be >= 1"),
        (cfg.num_generations < 2 and s.advantage in ("grpo", "rloo", "reinforce_pp_baseline"),
         f"grpo.num_generations must be >= 2 for the '{s.advantage}' advantage (it compares completions of a prompt)"),
        (cfg.max_completion_length < 1, "grpo.max_completion_length must be >= 1"),
        (cfg.num_iterations < 1, "grpo.num_iterations must be >= 1"),
        (s.beta < 0, "grpo.beta must be >= 0"),
        (not 0 <= s.epsilon < 1, "grpo.epsilon must be in [0, 1)"),
        (s.epsilon_high < 0, "grpo.epsilon_high must be >= 0"),
        (cfg.temperature <= 0, "grpo.temperature must be > 0 (log-probs divide by it)"),
        (cfg.max_resample < 0, "grpo.max_resample must be >= 0"),
    ]
    for bad, message in problems:
        if bad:
            raise UnituneError(message)
