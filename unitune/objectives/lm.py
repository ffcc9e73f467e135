"""Language-modelling loss for continued pretraining (pt) and SFT.

    L = sum over target tokens t of  -log p(y_t | y_<t)   /   N

N is the number of target tokens in the whole optimizer step (all
micro-batches, all ranks; the loop does the division). pt and sft differ only
in which tokens are targets: every token for pt, the template's loss mask for
sft. Also reported: `mean_token_accuracy` (top-1 prediction == target).

The LM head runs only at target positions, a chunk of rows at a time
(unitune/objectives/head.py): the full [batch, length, vocab] logits tensor
never exists, and prompt positions cost no head matmul at all; a trained head's gradients are
made in the same pass (`token_nll_sum`).
"""

import torch
import torch.nn.functional as F

from unitune.data.collate import IGNORE, collate
from unitune.data.pack import pack
from unitune.data.render import render_all
from unitune.objectives.head import final_hidden, output_head, token_nll_sum


class LMObjective:
    rows_independent = True  # the loss is a sum over rows: a micro-batch may run in parts

    def __init__(self, name: str, pad_id: int, *, tokenizer=None, cfg=None):
        self.name, self.pad_id = name, pad_id
        self.tokenizer, self.cfg = tokenizer, cfg

    def rows(self, examples: list[dict], split: str) -> tuple[list, list[str]]:
        """Render (and pack, when configured) examples into trainable rows; report what happened."""
        data, template = self.cfg.data, self.cfg.template
        feats, report = render_all(examples, self.name, self.tokenizer, chat_template=self.tokenizer.chat_template,
                                   loss=template.loss, max_length=data.max_length, truncation=data.truncation,
                                   system=template.system)
        notes = report.lines(split)
        if not data.packing:
            return [[f] for f in feats], notes
        rows = pack(feats, data.max_length)
        notes.append(f"{split}: packed {len(feats)} examples into {len(rows)} rows of <= {data.max_length} tokens")
        return rows, notes

    @staticmethod
    def length(row) -> int:
        return sum(len(f["input_ids"]) for f in row)

    def collate(self, rows):
        return collate(rows, self.pad_id)

    def count(self, batch) -> int:
        return int((batch["targets"] != IGNORE).sum())

    def loss(self, model, batch):
        hidden = final_hidden(model, batch)
        keep = batch["targets"] != IGNORE
        nll, hits = token_nll_sum(output_head(model), hidden[keep], batch["targets"][keep])
        return nll, {"mean_token_accuracy": hits.sum().to(nll.dtype)}


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token NLL with 0 at ignored positions (for per-example losses in tests and eval)."""
    flat = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten().clamp(min=0), reduction="none")
    return flat.view(targets.shape) * (targets != IGNORE)
