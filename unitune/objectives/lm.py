"""Language-modelling loss for continued pretraining (pt) and SFT.

    L = sum over target tokens t of  -log p(y_t | y_<t)   /   N

N is the number of target tokens in the whole optimizer step (all
micro-batches, all ranks; the loop does the division). pt and sft differ only
in which tokens are targets: every token for pt, the template's loss mask for
sft. Also reported: `mean_token_accuracy` (top-1 prediction == target).

The LM head runs only at target positions, in checkpointed chunks: the model
returns its final hidden states (with `logits_to_keep` empty, so no logits),
and each chunk of target rows goes through head + cross-entropy and is
recomputed in backward. The full [batch, length, vocab] logits tensor never
exists, and prompt positions cost no head matmul at all.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from unitune.data.collate import IGNORE, collate
from unitune.data.pack import pack
from unitune.data.render import render_all


class LMObjective:
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
        nll, correct = chunked_nll(output_head(model), hidden[keep], batch["targets"][keep])
        return nll, {"mean_token_accuracy": correct}


def final_hidden(model, batch) -> torch.Tensor:
    """[batch, length, hidden]: the last hidden states, after the final norm, without computing logits."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], output_hidden_states=True,
                logits_to_keep=torch.empty(0, dtype=torch.long, device=batch["input_ids"].device))
    return out.hidden_states[-1]


def output_head(model):
    """The LM head of a model, through DDP and peft wrappers."""
    return getattr(model, "module", model).get_output_embeddings()


def _head_nll(head, hidden, targets):
    logits = head(hidden)
    if logits.dtype in (torch.bfloat16, torch.float16):  # the softmax in fp32
        logits = logits.float()
    nll = F.cross_entropy(logits, targets, reduction="sum")
    return nll, (logits.detach().argmax(-1) == targets).sum().to(nll.dtype)


def chunked_nll(head, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = 1024):
    """(sum of -log p(target), number of top-1 hits) over rows of `hidden`, `chunk` rows at a time.
    In training each chunk is checkpointed, so only `hidden` is kept for backward."""
    parts, hits = [], []
    for k in range(0, hidden.shape[0], chunk):
        args = (head, hidden[k:k + chunk], targets[k:k + chunk])
        if torch.is_grad_enabled() and hidden.requires_grad:
            part, hit = checkpoint(_head_nll, *args, use_reentrant=False)
        else:
            part, hit = _head_nll(*args)
        parts.append(part)
        hits.append(hit)
    if not parts:  # no target in this micro-batch: a zero that still reaches every parameter
        return hidden.sum() * 0.0, torch.zeros((), device=hidden.device)
    return torch.stack(parts).sum(), torch.stack(hits).sum()


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token NLL with 0 at ignored positions (for per-example losses in tests and eval)."""
    flat = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten().clamp(min=0), reduction="none")
    return flat.view(targets.shape) * (targets != IGNORE)
