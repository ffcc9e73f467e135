from unitune.config.parse import all_keys, build, load_yaml, parse_flags, to_dict, to_yaml
from unitune.config.schema import Config, DataConfig, LoraConfig, ModelConfig, TemplateConfig, TrainConfig

__all__ = ["Config", "DataConfig", "LoraConfig", "ModelConfig", "TemplateConfig", "TrainConfig",
           "all_keys", "build", "load_yaml", "parse_flags", "to_dict", "to_yaml"]
