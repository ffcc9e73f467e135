"""The Python API, and the one path every training verb takes.

    import unitune
    result = unitune.sft(model="tiny-llama", data={"train": ["chat.jsonl"]}, train={"max_steps": 10})
    result.final_dir, result.metrics

Keyword arguments are config sections (`lora={"r": 16}`), dotted keys
(`**{"lora.r": 16}`), or `config="run.yaml"`; they mean exactly what the same
YAML keys and CLI flags mean.
"""

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from unitune.config import Config, build, load_yaml, to_yaml
from unitune.errors import UnituneError

TASKS = ("pt", "sft", "dpo", "kto", "rm", "grpo")

# What each verb changes from the dataclass defaults (before YAML and flags).
VERB_DEFAULTS = {
    "pt": {"data.packing": True, "template.loss": "all", "train.output_dir": "runs/pt"},
    "sft": {"data.packing": False, "train.output_dir": "runs/sft"},
    "dpo": {"data.packing": False, "train.output_dir": "runs/dpo", "train.lr": 5e-5},
    "kto": {"data.packing": False, "train.output_dir": "runs/kto", "train.lr": 5e-5},
    # rm: over-length pairs are dropped (cutting the end would move the scored token), and final/
    # is merged so that AutoModelForSequenceClassification loads it directly
    "rm": {"data.packing": False, "data.truncation": "drop", "lora.merge": True, "train.output_dir": "runs/rm",
           "train.lr": 1e-4},
    # grpo: rows are prompts (never packed; batch_size counts prompts, each with G completions)
    "grpo": {"data.packing": False, "train.output_dir": "runs/grpo", "train.lr": 1e-5, "train.batch_size": 2},
}


@dataclass
class Result:
    output_dir: Path
    final_dir: Path
    metrics: dict = field(default_factory=dict)


def make_config(verb: str, config_file: str | None = None, overrides: dict | None = None) -> Config:
    if verb not in VERB_DEFAULTS:
        raise UnituneError(f"unknown training verb '{verb}' (expected one of {', '.join(VERB_DEFAULTS)})")
    layers = [("", VERB_DEFAULTS[verb])]
    if config_file:
        layers.append((f"{config_file}: ", load_yaml(config_file)))
    if overrides:
        layers.append(("", overrides))
    return build(layers)


def train(verb: str, config: str | None = None, **overrides) -> Result:
    """Run a training verb from Python; the same fields as the CLI."""
    return run(verb, make_config(verb, config, overrides))


def sft(config: str | None = None, **overrides) -> Result:
    return train("sft", config, **overrides)


def pt(config: str | None = None, **overrides) -> Result:
    return train("pt", config, **overrides)


def dpo(config: str | None = None, **overrides) -> Result:
    return train("dpo", config, **overrides)


def kto(config: str | None = None, **overrides) -> Result:
    return train("kto", config, **overrides)


def rm(config: str | None = None, **overrides) -> Result:
    return train("rm", config, **overrides)


def grpo(config: str | None = None, **overrides) -> Result:
    return train("grpo", config, **overrides)


def run(verb: str, cfg: Config) -> Result:
    out = Path(cfg.train.output_dir)
    if cfg.train.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return _launch(verb, cfg, out)
    from unitune.train.session import train_session

    metrics = train_session(verb, cfg)
    return Result(out, out / "final", metrics)


def _launch(verb: str, cfg: Config, out: Path) -> Result:
    """Re-run this config under torchrun with `nproc` processes (DDP; gloo on CPU)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, dir=out) as f:
        f.write(to_yaml(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.train.nproc}",
           "-m", "unitune", verb, "--config", f.name, "--train.nproc", "1"]
    try:
        code = subprocess.call(cmd)
    finally:
        os.unlink(f.name)
    if code != 0:
        raise UnituneError(f"distributed run failed (torchrun exit code {code}); see the output above")
    rows = (out / "metrics.jsonl").read_text().splitlines()
    return Result(out, out / "final", json.loads(rows[-1]) if rows else {})
