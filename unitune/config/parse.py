"""YAML + flags + keyword arguments -> one `Config`.

Precedence, later wins: dataclass defaults < verb defaults < `--config` YAML <
flags (or Python keyword arguments). Every key is checked against the tree:
an unknown one is an error naming it and the closest valid key, a bad value is
an error naming the key and the expected type.
"""

import dataclasses
import json
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from unitune.config.schema import Config
from unitune.errors import UnituneError, suggest

ALIASES = {"model": "model.name"}  # --model NAME is short for --model.name NAME


def all_keys(cls=Config, prefix: str = "") -> dict[str, Any]:
    """Every dotted leaf key of the tree -> its type annotation."""
    keys = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys.update(all_keys(tp, f"{prefix}{f.name}."))
        else:
            keys[f"{prefix}{f.name}"] = tp
    return keys


def coerce(key: str, value: Any, tp) -> Any:
    """Check or convert `value` (from YAML or a flag string) to the annotated type."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms, refusals = [a for a in args if a is not type(None)], []
        for arm in arms:  # the first type that takes the value, e.g. int | Literal["auto"]
            try:
                return coerce(key, value, arm)
            except UnituneError as refused:
                refusals.append(str(refused).removeprefix(f"{key}: "))
        raise UnituneError(f"{key}: " + "; nor ".join(refusals))
    if origin is Literal:
        if value not in args:
            raise UnituneError(f"{key}: '{value}' is not one of {', '.join(map(str, args))}{suggest(str(value), map(str, args))}")
        return value
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [coerce(key, _scalar(v) if isinstance(v, str) and args[0] is not str else v, args[0]) for v in items]
    if origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise UnituneError(f"{key}: expected a mapping like '{{\"a\": \"b\"}}', got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, str):
            value = _scalar(value)
        if not isinstance(value, bool):
            raise UnituneError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, str):
            value = _scalar(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and value != int(value)):
            raise UnituneError(f"{key}: expected {'an integer' if tp is int else 'a number'}, got {value!r}")
        return tp(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise UnituneError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _scalar(text: str):
    """A flag string as YAML reads it: '1e-4' -> 0.0001, 'false' -> False, 'x' -> 'x'."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads '2e-4' as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def flatten(tree: dict, prefix: str = "", where: str = "", root=Config) -> dict[str, Any]:
    """{'lora': {'r': 8}} -> {'lora.r': 8}; keys not in the tree are errors."""
    keys = all_keys(root)
    sections = {k.split(".")[0] for k in keys}
    flat = {}
    for name, value in tree.items():
        key = ALIASES.get(f"{prefix}{name}", f"{prefix}{name}") if not isinstance(value, dict) else f"{prefix}{name}"
        if key in keys:
            flat[key] = value
        elif isinstance(value, dict) and key in sections:
            flat.update(flatten(value, f"{key}.", where, root))
        else:
            raise UnituneError(f"{where}unknown config key '{key}'{suggest(key, list(keys) + list(ALIASES))}")
    return flat


def build(overrides: list[tuple[str, dict]], root=Config):
    """A `root` config (default: the training Config) from layers of (where-it-came-from,
    nested or dotted dict); later layers win."""
    keys = all_keys(root)
    merged: dict[str, Any] = {}
    for where, layer in overrides:
        for key, value in layer.items():
            if not isinstance(value, dict):
                key = ALIASES.get(key, key)
            if "." in key and key not in keys:
                raise UnituneError(f"{where}unknown config key '{key}'{suggest(key, keys)}")
            flat = {key: value} if key in keys else flatten({key: value}, where=where, root=root)
            merged.update({k: (where, v) for k, v in flat.items()})
    cfg = root()
    for key, (where, value) in merged.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, coerce(f"{where}{key}", value, keys[key]))
    return cfg


def load_yaml(path: str) -> dict:
    try:
        with open(path) as f:
            tree = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise UnituneError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UnituneError(f"{path}{line}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(tree, dict):
        raise UnituneError(f"{path}: expected a mapping of sections (model:, data:, train:, ...)")
    return tree


def parse_flags(argv: list[str], root=Config) -> tuple[str | None, dict[str, Any]]:
    """['--config', 'f.yaml', '--lora.r', '16', '--data.train', 'a', 'b'] -> ('f.yaml', {...}).

    A flag takes every following word up to the next flag, so list fields take
    several values; a flag with no value is `true`.
    """
    config_file, flags, key = None, {}, None
    for word in argv:
        if word.startswith("--") and len(word) > 2 and not _is_number(word):
            key, value = word[2:], None
            if "=" in key:
                key, value = key.split("=", 1)
            flags[key] = [] if value is None else [value]
        elif key is None:
            raise UnituneError(f"unexpected argument '{word}' (flags look like --train.lr 1e-4)")
        else:
            flags[key].append(word)
    if "config" in flags:
        values = flags.pop("config")
        if len(values) != 1:
            raise UnituneError("--config takes one YAML file")
        config_file = values[0]
    keys = all_keys(root)
    out = {}
    for key, values in flags.items():
        full = ALIASES.get(key, key)
        if full not in keys:
            raise UnituneError(f"unknown flag '--{key}'{suggest(key, list(keys) + list(ALIASES) + ['config'])}")
        is_list = get_origin(keys[full]) is list
        if not values:
            values = ["true"]
        if not is_list and len(values) > 1:
            raise UnituneError(f"--{key} takes one value, got {len(values)}: {' '.join(values)}")
        out[full] = values if is_list else values[0]
    return config_file, out


def _is_number(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return False


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
