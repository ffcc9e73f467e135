"""Config trees of `unitune infer`, `sample` and `serve`: the training tree's `model` and
`template` sections, plus `generate` (sampling), `engine` (batching, device) and one
section per verb. Flags, YAML and keyword arguments spell them the same way
(`--generate.temperature 0` == `generate: {temperature: 0}`)."""

from dataclasses import dataclass, field, fields
from typing import Literal, Optional

from unitune.config.schema import ModelConfig, TemplateConfig
from unitune.errors import UnituneError


@dataclass
class GenerateConfig:
    max_new_tokens: int = 256  # per answer (the server's max_tokens overrides it per request)
    temperature: float = 0.7  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)  # strings that end an answer, besides the template's own
    seed: Optional[int] = None  # fixes sampling; batch and sample modes derive one seed per row from it


@dataclass
class EngineConfig:
    device: str = "auto"  # auto: cuda when available, else cpu
    max_batch_size: int = 64  # rows decoded together (requests beyond wait their turn)
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 pays when other processes share the cores
    prepack: bool = True  # CPU, float32/bfloat16: linear layers from weights re-laid out for oneDNN (faster decoding)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # 0.0.0.0 exposes the server to the network
    port: int = 8000  # 0: any free port (the chosen one is printed)
    api_key: Optional[str] = None  # when set, every /v1 request needs 'Authorization: Bearer KEY'
    adapters: list[str] = field(default_factory=list)  # NAME=ADAPTER_FOLDER ..., each served as model NAME
    model_name: Optional[str] = None  # the name the base model is served under (default: --model)
    max_n: int = 16  # largest 'n' (choices per request) accepted
    shutdown_timeout: float = 30.0  # seconds SIGTERM waits for in-flight requests before cancelling them


@dataclass
class InferConfig:
    input: Optional[str] = None  # JSONL of rows with 'messages' or 'prompt'; none: interactive chat
    output: Optional[str] = None  # JSONL of answers; rows already there are skipped (resume)
    progress: bool = True


@dataclass
class SampleConfig:
    input: Optional[str] = None  # JSONL of prompts ('messages', 'prompt', 'question'/'problem') plus extra columns
    output: Optional[str] = None
    n: int = 4  # candidates per prompt
    reward: list[str] = field(default_factory=list)  # as grpo.reward: accuracy, rm:PATH, FILE.py:FUNCTION, ...
    reward_weights: list[float] = field(default_factory=list)  # one per reward (default: all 1)
    format: Literal["raw", "dpo", "kto"] = "raw"  # raw: every candidate; dpo: best vs worst; kto: labelled rows
    min_gap: float = 0.0  # dpo: drop prompts whose best and worst scores differ by less
    threshold: float = 0.5  # kto: label = score >= threshold
    progress: bool = True


@dataclass
class ServeRoot:
    model: ModelConfig = field(default_factory=ModelConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


@dataclass
class InferRoot:
    model: ModelConfig = field(default_factory=ModelConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    infer: InferConfig = field(default_factory=InferConfig)


@dataclass
class SampleRoot:
    model: ModelConfig = field(default_factory=ModelConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    generate: GenerateConfig = field(default_factory=lambda: GenerateConfig(temperature=1.0))
    engine: EngineConfig = field(default_factory=EngineConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


ROOTS = {"serve": ServeRoot, "infer": InferRoot, "sample": SampleRoot}


def make(verb: str, argv: list[str]):
    """The verb's config from `--config FILE.yaml` and flags."""
    from unitune.config.parse import build, load_yaml, parse_flags

    root = ROOTS[verb]
    config_file, flags = parse_flags(argv, root=root)
    layers = [(f"{config_file}: ", load_yaml(config_file))] if config_file else []
    return build(layers + [("", flags)], root=root)


def field_help(verb: str) -> str:
    cfg = ROOTS[verb]()
    lines = [f"usage: unitune {verb} [--config FILE.yaml] [flags]", ""]
    for section in fields(cfg):
        for f in fields(getattr(cfg, section.name)):
            key = f"{section.name}.{f.name}"
            lines.append(f"  --{key:30s} {getattr(getattr(cfg, section.name), f.name)!r}")
    return "\n".join(lines)


def sampling(gen: GenerateConfig, **overrides):
    """SamplingParams from the `generate` section (overrides win)."""
    from unitune.infer.engine import SamplingParams

    values = dict(max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
                  repetition_penalty=gen.repetition_penalty, stop=list(gen.stop), seed=gen.seed)
    values.update(overrides)
    try:
        return SamplingParams(**values).check()
    except UnituneError as err:
        raise UnituneError(f"generate.{err}") from None


def load_engine(cfg, adapters: dict[str, str] | None = None):
    import torch

    from unitune.infer.engine import Engine

    if cfg.engine.threads > 0:
        torch.set_num_threads(cfg.engine.threads)

    return Engine.load(cfg.model.name, adapters=adapters, dtype=cfg.model.dtype, device=cfg.engine.device,
                       template=cfg.template.name, max_batch_size=cfg.engine.max_batch_size,
                       attn_implementation=cfg.model.attn_implementation,
                       trust_remote_code=cfg.model.trust_remote_code, prepack=cfg.engine.prepack)
