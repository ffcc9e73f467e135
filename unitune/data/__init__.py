"""Data in stages: load (rows with their origin) -> convert (canonical examples).

`load_splits` runs both stages for the train and validation splits of a
`DataConfig` and returns short report lines the trainer prints before
training, so nothing is dropped or repeated without the user seeing it.
Rendering, packing and collating live in render.py, pack.py and collate.py.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from unitune.data.convert import Report, convert
from unitune.data.load import Row, load_mixture, load_source
from unitune.data.registry import DATASETS
from unitune.errors import UnituneError

if TYPE_CHECKING:
    from unitune.config.schema import DataConfig

__all__ = ["DATASETS", "Report", "Row", "convert", "load_mixture", "load_source", "load_splits"]


def load_splits(cfg: DataConfig, task: str) -> tuple[list[dict], list[dict], list[str]]:
    """(train examples, validation examples, report lines) for `task`."""
    if not cfg.train:
        raise UnituneError("data.train is empty: pass --data.train FILE (a .jsonl/.json/.csv/"
                           ".parquet/.txt file, a folder, a hub id or a built-in name like pirate-chat)")
    if not 0 <= cfg.val_ratio < 1:
        raise UnituneError(f"data.val_ratio must be in [0, 1), got {cfg.val_ratio}")
    lines: list[str] = []
    rows = load_mixture(cfg.train, cfg.weights, seed=cfg.seed, columns=cfg.columns, log=lines.append)
    train, report = convert(rows, task, on_bad_row=cfg.on_bad_row)
    lines.append(f"train: {report.summary()}")
    if cfg.val:
        val_rows = load_mixture(cfg.val, [], seed=cfg.seed, columns=cfg.columns, log=lines.append)
        val, val_report = convert(val_rows, task, on_bad_row=cfg.on_bad_row)
        lines.append(f"val: {val_report.summary()}")
    elif cfg.val_ratio > 0:
        train, val = _hold_out(train, cfg.val_ratio, cfg.seed)
        lines.append(f"val: {len(val)} examples held out from train (val_ratio {cfg.val_ratio}), "
                     f"{len(train)} left to train on")
    else:
        val = []
    if not train:
        raise UnituneError("no training examples left after conversion" +
                           (f": {report.summary()}" if report.skipped else ""))
    return train, val, lines


def _hold_out(examples: list[dict], ratio: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded random `ratio` of examples (at least one) for validation; order kept in both."""
    n = max(1, round(ratio * len(examples)))
    if n >= len(examples):
        raise UnituneError(f"data.val_ratio {ratio} would hold out all {len(examples)} training "
                           f"examples; lower it or give data.val files")
    held = set(random.Random(seed).sample(range(len(examples)), n))
    return ([e for i, e in enumerate(examples) if i not in held],
            [e for i, e in enumerate(examples) if i in held])
