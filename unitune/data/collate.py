"""Rows of features -> a padded batch of tensors.

A row is a list of one or more features (several when packed). Targets are
shifted here, once: `targets[t]` is the token at t+1 when it is trained, else
-100, and the last position of every feature is -100, so nothing is predicted
across a feature boundary. Packed rows get a 4-D boolean block-causal mask
`[batch, 1, q, k]` (true where query and key are in the same feature and
key <= query); with transformers' default `sdpa` on CPU, restarting
`position_ids` alone does not keep packed examples apart.

`shared_prefix_rows` lays out sequences that start alike (a DPO pair, a GRPO group) as one
row, the shared start computed once, with the same kind of mask.
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


def block_causal_mask(segment: torch.Tensor, prefix_seen: bool = False) -> torch.Tensor:
    """[b, 1, q, k] bool: same feature (or, with `prefix_seen`, key in segment 0, which every
    segment sees) and k <= q; padding (-1) attends only to itself (no NaN rows)."""
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    q, k = segment[:, :, None], segment[:, None, :]
    seen = (q == k) | (k == 0) if prefix_seen else q == k
    eye = torch.eye(width, dtype=torch.bool)
    return ((seen & causal & (q >= 0) & (k >= 0)) | eye)[:, None]


def takes_4d_mask(attn_implementation: str | None) -> bool:
    """Whether the model's attention honours a 4-D mask (sdpa, eager: yes; flash-attention kernels: no)."""
    return not (attn_implementation or "").startswith("flash")


def shared_prefix_rows(groups: list[tuple[list[int], list[list[int]]]], pad_id: int) -> tuple[dict, list[list[int]]]:
    """One row per group (prefix, [continuation, ...]): [prefix | continuation 1 | continuation 2 | ...].

    The prefix goes through the model once for all its continuations. position_ids restart at
    the prefix's end for every continuation, and a 4-D boolean mask `[rows, 1, q, k]` lets each
    continuation see the prefix and itself only, so every hidden state is the one that sequence
    would have on its own row (tests/objectives/test_pairs.py, tests/rl/test_batch.py).
    Returns the batch (input_ids, position_ids, attention_mask) and `index[g][k]`: for each token
    of the sequence prefix + continuation k of group g, its flat position in [rows * width]."""
    width = max(len(prefix) + sum(len(c) for c in conts) for prefix, conts in groups)
    input_ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(groups), width), dtype=torch.long)
    part = torch.full((len(groups), width), -1, dtype=torch.long)  # 0 prefix, k+1 continuation k, -1 padding
    index = []
    for g, (prefix, conts) in enumerate(groups):
        p, at, base = len(prefix), len(prefix), g * width
        input_ids[g, :p], position_ids[g, :p], part[g, :p] = torch.tensor(prefix, dtype=torch.long), torch.arange(p), 0
        index.append([])
        for k, cont in enumerate(conts):
            n = len(cont)
            input_ids[g, at:at + n] = torch.tensor(cont, dtype=torch.long)
            position_ids[g, at:at + n] = torch.arange(p, p + n)
            part[g, at:at + n] = k + 1
            index[-1].append(list(range(base, base + p)) + list(range(base + at, base + at + n)))
            at += n
    return {"input_ids": input_ids, "position_ids": position_ids,
            "attention_mask": block_causal_mask(part, prefix_seen=True)}, index
