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
    cfg = TrainConfig(batch_size=1, grad_accum=2, max_steps=1, progress=False, tensorboard=False)
    trainer = Trainer(model=FixedLogProbs(logps), objective=LMObjective("sft", pad_id=0), rows=rows, val_rows=[],
                      cfg=cfg, accelerator=Accelerator(cpu=True), output_dir=tmp_path)
    # both micro-batches land in the one step, whatever the shuffled order
    assert sorted(i for mb in trainer.schedule.micro_batches(0, 0) for i in mb) == [0, 1]
    row = trainer.train_step()
    assert row["loss"] == pytest.approx(0.45, abs=1e-9)
    assert row["loss"] != pytest.approx(0.8, abs=1e-3)  # the legacy mean of means


def test_chunked_head_equals_full_logits_loss(tiny_model):
    """Head only at target positions, in checkpointed chunks == cross-entropy over the full logits:
    same loss and same gradients."""
    import torch.nn.functional as F

    from tests.conftest import random_features
    from unitune.data.collate import collate
    from unitune.objectives.lm import chunked_nll, final_hidden, output_head

    batch = collate([[f] for f in random_features(4, seed=5)], pad_id=2)
    keep = batch["targets"] != -100
    full = F.cross_entropy(tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      position_ids=batch["position_ids"]).logits[keep],
                           batch["targets"][keep], reduction="sum")
    full.backward()
    ref = {n: p.grad.clone() for n, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    chunked, _ = chunked_nll(output_head(tiny_model), final_hidden(tiny_model, batch)[keep],
                             batch["targets"][keep], chunk=7)
    chunked.backward()
    assert chunked.item() == pytest.approx(full.item(), rel=1e-6)
    for name, param in tiny_model.named_parameters():
        torch.testing.assert_close(param.grad, ref[name], atol=1e-4, rtol=1e-4, msg=name)  # sums reordered
