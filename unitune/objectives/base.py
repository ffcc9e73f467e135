"""What an objective is, for the loop.

An objective owns its math and nothing else:
  - `rows(examples, split)`: canonical examples -> trainable rows (render, and pack
    where it applies) plus report lines counting what was truncated or dropped
  - `length(row)`: tokens in a row (for length grouping)
  - `collate(rows)`: a micro-batch of rows -> tensors
  - `count(batch)`: the units this batch contributes to the step's normaliser
    (target tokens for LM losses, pairs for preference losses)
  - `loss(model, batch)`: (sum of the loss over the batch's units, {metric: sum})

The loop divides sums by the count of the whole optimizer step (every
micro-batch, every rank), so batch 8 x accumulation 1 and batch 1 x
accumulation 8 give the same gradient, and metrics are per-unit means.
"""

from typing import Protocol

import torch


class Objective(Protocol):
    name: str

    def rows(self, examples: list[dict], split: str) -> tuple[list, list[str]]: ...

    def length(self, row) -> int: ...

    def collate(self, rows: list) -> dict: ...

    def count(self, batch: dict) -> int: ...

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
