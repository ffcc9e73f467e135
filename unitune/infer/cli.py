"""The `infer`, `sample` and `serve` verbs: parse the config, load the engine, hand over."""

import sys

from unitune.infer.config import field_help, load_engine, make, sampling


def _help(verb: str, argv: list[str]) -> bool:
    if "--help" in argv or "-h" in argv:
        print(field_help(verb))
        return True
    return False


def cmd_infer(argv: list[str]) -> int:
    if _help("infer", argv):
        return 0
    cfg = make("infer", argv)
    params = sampling(cfg.generate)
    if cfg.infer.input:
        from unitune.infer.batch import run_batch

        return run_batch(cfg, params, lambda: load_engine(cfg))
    if cfg.infer.output:
        print("unitune: --infer.output is for batch mode (with --infer.input); ignored", file=sys.stderr)
    from unitune.infer.chat import chat

    engine = load_engine(cfg)
    try:
        return chat(engine, params, system=cfg.template.system, name=cfg.model.name)
    finally:
        engine.close()


def cmd_sample(argv: list[str]) -> int:
    if _help("sample", argv):
        return 0
    from unitune.infer.sample import run_sample

    cfg = make("sample", argv)
    return run_sample(cfg, params=sampling(cfg.generate), make_engine=lambda: load_engine(cfg))


def cmd_serve(argv: list[str]) -> int:
    if _help("serve", argv):
        return 0
    from unitune.serve.run import serve

    cfg = make("serve", argv)
    sampling(cfg.generate)  # reject bad defaults before loading anything
    return serve(cfg)
