"""Rows of features -> a padded batch of tensors.

A row is a list of one or more features (several when packed). Targets are
shifted here, once: `targets[t]` is the token at t+1 when it is trained, else
-100, and the last position of every feature is -100, so nothing is predicted
across a feature boundary. Packed rows get a 4-D boolean block-causal mask
`[batch, 1, q, k]` (true where query and key are in the same feature and
key <= query); with transformers' default `sdpa` on CPU, restarting
`position_ids` alone does not keep packed examples apart.
"""

import torch

IGNORE = -100


def collate(rows: list[list[dict]], pad_id: int) -> dict:
    width = max(sum(len(f["input_ids"]) for f in row) for row in rows)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    targets = torch.full((batch, width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((batch, width), dtype=torch.long)
    segment = torch.full((batch, width), -1, dtype=torch.long)  # feature index within the row, -1 = padding
    for b, row in enumerate(rows):
        at = 0
        for s, feat in enumerate(row):
            ids = torch.tensor(feat["input_ids"], dtype=torch.long)
            mask = torch.tensor(feat["mask"], dtype=torch.bool)
            n = len(ids)
            input_ids[b, at:at + n] = ids
            targets[b, at:at + n - 1] = torch.where(mask[1:], ids[1:], IGNORE)
            position_ids[b, at:at + n] = torch.arange(n)
            segment[b, at:at + n] = s
            at += n
    out = {"input_ids": input_ids, "targets": targets, "position_ids": position_ids,
           "num_tokens": (segment >= 0).sum()}
    if any(len(row) > 1 for row in rows):
        out["attention_mask"] = block_causal_mask(segment)
    else:
        out["attention_mask"] = (segment >= 0).long()
    return out


def block_causal_mask(segment: torch.Tensor) -> torch.Tensor:
    """[b, 1, q, k] bool: same feature and k <= q; padding attends only to itself (no NaN rows)."""
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same = segment[:, :, None] == segment[:, None, :]
    real = (segment >= 0)[:, :, None]
    eye = torch.eye(width, dtype=torch.bool)
    return ((same & causal & real) | eye)[:, None]
