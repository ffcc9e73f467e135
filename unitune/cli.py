"""`unitune VERB [--config run.yaml] [--section.field value ...]`: one thin function per verb.

A flag and a YAML key are the same field (`--lora.r 16` == `lora: {r: 16}`).
User errors print one line and exit 2; `--help` after a verb lists its fields.
"""

import os
import sys

from unitune.errors import UnituneError, suggest
from unitune.malloc import preload

USAGE = """usage: unitune VERB [--config FILE.yaml] [--section.field VALUE ...]

training:   pt | sft          continued pretraining, supervised fine-tuning
            dpo | kto         preference alignment (--dpo.loss sigmoid|ipo|hinge|robust|simpo|orpo|cpo|sft)
            rm                reward model (Bradley-Terry); `unitune rm score --help` scores with one
            grpo              online RL with reward functions (--grpo.algo grpo|dapo|dr_grpo|gspo|rloo|reinforce_pp,
                              --grpo.reward accuracy|format:RE|contains:TEXT|FILE.py:FN ...)
inference:  infer             chat in the terminal, or --infer.input rows.jsonl --infer.output out.jsonl
            sample            N candidates per prompt, scored -> raw, DPO pairs or KTO rows
            serve             OpenAI-compatible HTTP server (--serve.port, --serve.adapters NAME=DIR, --serve.api_key)
config:     config show VERB [flags]   print the effective config as YAML
templates:  template show [--model NAME] [--template.name NAME] [--template.loss MODE]
            template list
`unitune VERB --help` lists every field."""


def cmd_train(verb: str, argv: list[str]) -> int:
    from unitune.api import make_config, run
    from unitune.config import parse_flags

    config_file, flags = parse_flags(argv)
    cfg = make_config(verb, config_file, flags)
    result = run(verb, cfg)
    loss = result.metrics.get("loss")
    print(f"unitune: final loss {loss:.4f}" if loss is not None else "unitune: finished")
    return 0


TRAINING = ("pt", "sft", "dpo", "kto", "rm", "grpo")


def cmd_rm(argv: list[str]) -> int:
    """`unitune rm ...` trains a reward model; `unitune rm score ...` scores with a trained one."""
    if argv[:1] == ["score"]:
        from unitune.reward_model import cli_score

        return cli_score(argv[1:])
    return cmd_train("rm", argv)


def cmd_config(argv: list[str]) -> int:
    from unitune.api import make_config
    from unitune.config import parse_flags, to_yaml

    if len(argv) < 2 or argv[0] != "show":
        raise UnituneError("usage: unitune config show VERB [--config FILE] [flags]")
    verb, rest = argv[1], argv[2:]
    if verb in ("infer", "sample", "serve"):
        from unitune.infer.config import make

        cfg = make(verb, rest)
    else:
        config_file, flags = parse_flags(rest)
        cfg = make_config(verb, config_file, flags)
    print(to_yaml(cfg), end="")
    return 0


def _inference(verb: str):
    """`unitune infer|sample|serve`, imported only when used (they pull in the engine)."""
    def run(argv: list[str]) -> int:
        from unitune.infer import cli

        return getattr(cli, f"cmd_{verb}")(argv)
    return run


EXAMPLE = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
]


def cmd_template(argv: list[str]) -> int:
    from unitune.config import build, parse_flags
    from unitune.templates import TEMPLATES, render_messages, resolve_chat_template, show

    if argv[:1] == ["list"]:
        for name, template in TEMPLATES.items():
            print(f"{name:12s} {template.description}")
        return 0
    if argv[:1] != ["show"]:
        raise UnituneError("usage: unitune template show|list [--model NAME] [--template.name NAME]")
    from unitune.models.load import load_tokenizer

    _, flags = parse_flags(argv[1:])
    cfg = build([("", flags)])
    tokenizer = load_tokenizer(cfg.model.name)
    chat_template = resolve_chat_template(tokenizer, cfg.template.name)
    ids, mask = render_messages(tokenizer, EXAMPLE, chat_template=chat_template, loss=cfg.template.loss)
    print(f"template: {cfg.template.name} (model {cfg.model.name}), loss on: {cfg.template.loss}")
    print(show(tokenizer, ids, mask, color=sys.stdout.isatty()))
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as the `unitune` program: first pick its malloc (unitune/malloc.py)
        try:
            preload()  # re-executes this process once, with mimalloc preloaded, where it is installed
        except UnituneError as err:
            print(f"unitune: error: {err}", file=sys.stderr)
            return 2
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    verb, rest = argv[0], argv[1:]
    commands = {"pt": lambda a: cmd_train("pt", a), "sft": lambda a: cmd_train("sft", a),
                "dpo": lambda a: cmd_train("dpo", a), "kto": lambda a: cmd_train("kto", a), "rm": cmd_rm,
                "grpo": lambda a: cmd_train("grpo", a),
                "config": cmd_config, "template": cmd_template,
                "infer": _inference("infer"), "sample": _inference("sample"), "serve": _inference("serve")}
    try:
        if verb not in commands:
            raise UnituneError(f"unknown command '{verb}'{suggest(verb, commands)}\n{USAGE}")
        if verb in TRAINING and rest[:1] != ["score"] and ("--help" in rest or "-h" in rest):
            print(field_help(verb))
            return 0
        return commands[verb](rest)
    except UnituneError as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one copy of the message
            print(f"unitune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unitune: interrupted", file=sys.stderr)
        return 130


def field_help(verb: str) -> str:
    """Every flag with its type and default, read from the dataclass tree."""
    import dataclasses

    from unitune.api import make_config

    cfg = make_config(verb)
    lines = [f"usage: unitune {verb} [--config FILE.yaml] [flags]", ""]
    for section in dataclasses.fields(cfg):
        for f in dataclasses.fields(getattr(cfg, section.name)):
            value = getattr(getattr(cfg, section.name), f.name)
            lines.append(f"  --{section.name}.{f.name:24s} {value!r}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
