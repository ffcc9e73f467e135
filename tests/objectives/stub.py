"""A stub causal LM with fixed next-token log-probs, for feeding OBJECTIVES.md §6 tensors through
an objective's real forward path (collate, concatenated batch, logits_to_keep, gather)."""

import math
from types import SimpleNamespace

import torch

VOCAB = 64


class FixedLogProbs(torch.nn.Module):
    """log p(token + 1 | token) = logp_of_next[token]; every other next token shares the rest."""

    def __init__(self, logp_of_next: dict[int, float]):
        super().__init__()
        table = torch.zeros(VOCAB, VOCAB, dtype=torch.float64)
        for token, logp in logp_of_next.items():
            table[token, token + 1] = math.log((VOCAB - 1) * math.exp(logp) / (1 - math.exp(logp)))
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0,
                output_hidden_states=False):
        logits = self.table[input_ids]
        if isinstance(logits_to_keep, torch.Tensor):  # positions to keep (empty: hidden states only)
            kept = logits[:, logits_to_keep]
        else:
            kept = logits[:, -logits_to_keep:] if logits_to_keep else logits
        # the "hidden state" is the logit row itself, and the output head is the identity
        return SimpleNamespace(logits=kept, hidden_states=(logits,))

    def get_output_embeddings(self):
        return torch.nn.Identity()


def chain(start: int, completion_logps: list[float], prompt_len: int) -> tuple[dict, dict]:
    """A side whose tokens are start, start+1, ...; its completion tokens get the given log-probs.
    Returns (feature, the stub's table entries)."""
    n = prompt_len + len(completion_logps)
    ids = list(range(start, start + n))
    table = {start + prompt_len - 1 + i: lp for i, lp in enumerate(completion_logps)}
    return {"input_ids": ids, "mask": [0] * prompt_len + [1] * len(completion_logps)}, table
