"""OBJECTIVES.md §6, SFT vector: GA=2, micro-batch 1 has target log-probs [-2, -1], micro-batch 2 six of
-0.1. The loss normalised over the step's tokens is 0.45; the legacy mean of micro-batch means is 0.8."""

import pytest
import torch
from accelerate import Accelerator

from tests.objectives.stub import FixedLogProbs
from unitune.config import TrainConfig
from unitune.objectives.lm import LMObjective
from unitune.train.loop import Trainer


def test_sft_vector_step_normalised(tmp_path):
    logps = {10: -2.0, 11: -1.0, **{t: -0.1 for t in range(13, 19)}}
    rows = [[{"input_ids": [10, 11, 12], "mask": [0, 1, 1]}],
            [{"input_ids": list(range(13, 20)), "mask": [0] + [1] * 6}]]
    cfg = TrainConfig(batch_size=1, grad_accum=2, max_steps=1, progress=False, tensorboard=False,
                      max_tokens_per_forward=0)
    trainer = Trainer(model=FixedLogProbs(logps), objective=LMObjective("sft", pad_id=0), rows=rows, val_rows=[],
                      cfg=cfg, accelerator=Accelerator(cpu=True), output_dir=tmp_path)
    # both micro-batches land in the one step, whatever the shuffled order
    assert sorted(i for mb in trainer.schedule.micro_batches(0, 0) for i in mb) == [0, 1]
    row = trainer.train_step()
    assert row["loss"] == pytest.approx(0.45, abs=1e-9)
    assert row["loss"] != pytest.approx(0.8, abs=1e-3)  # the legacy mean of means
