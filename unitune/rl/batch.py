"""Completions -> training tensors, and the per-token log-probs of a completion.

    l_t = log softmax(logits_t / temperature)[y_t]          (policy, old and reference alike)

Two layouts, the same log-probs (tests/rl/test_batch.py):

- shared (`grpo.shared_prefix`, the default): the G completions of a prompt follow it in one
  row, [prompt | completion 1 | completion 2 | ...], with a mask that lets each completion see
  the prompt and itself (unitune/data/collate.py), so the prompt goes through the model once
  per group instead of G times. A group's completions share a row while it stays within
  ROW_TOKENS (the dense mask's attention grows with the square of the row; the prompt tokens
  saved only linearly); beyond that the group takes several rows.
- one row per completion, [left-padded prompt | completion, right-padded], so every completion
  starts at the same column and the hidden states that score it are the T positions before it.

Either way the LM head runs only at real completion tokens (unitune/objectives/head.py),
position_ids count real tokens only, as the engine's do when sampling, and the results are
[N, T] tensors, one row per completion. The completion mask is one over the completion's
tokens, EOS included (OBJECTIVES.md §5.1); with overlong filtering a completion cut at the
token limit gets an all-zero row (it stays in its group's statistics).
"""

import torch

from unitune.data.collate import shared_prefix_rows
from unitune.objectives.head import final_hidden, output_head, token_logps

ROW_TOKENS = 1024


def build_batch(prompts: list[list[int]], completions: list[list[int]], truncated: list[bool], *, pad_id: int,
                mask_truncated: bool, shared: bool = False, row_tokens: int = ROW_TOKENS) -> dict:
    if shared:
        return _shared_batch(prompts, completions, truncated, pad_id, mask_truncated, row_tokens)
    n = len(prompts)
    p_len = max(len(p) for p in prompts)
    c_len = max(1, max(len(c) for c in completions))
    ids = torch.full((n, p_len + c_len), pad_id, dtype=torch.long)
    attention = torch.zeros((n, p_len + c_len), dtype=torch.long)
    mask = torch.zeros((n, c_len), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, p_len - len(p):p_len] = torch.tensor(p)
        attention[i, p_len - len(p):p_len] = 1
        if c:
            ids[i, p_len:p_len + len(c)] = torch.tensor(c)
            attention[i, p_len:p_len + len(c)] = 1
            mask[i, :len(c)] = 0.0 if (mask_truncated and truncated[i]) else 1.0
    return {"input_ids": ids, "attention_mask": attention,
            "position_ids": (attention.cumsum(-1) - 1).clamp(min=0),
            "completion_ids": ids[:, p_len:].clone(), "completion_mask": mask,
            "num_tokens": attention.sum()}


def _shared_batch(prompts, completions, truncated, pad_id, mask_truncated, row_tokens) -> dict:
    """Rows of [prompt | its completions]: consecutive completions of one prompt share a row."""
    n, t = len(prompts), max(1, max(len(c) for c in completions))
    completion_ids = torch.full((n, t), pad_id, dtype=torch.long)
    mask = torch.zeros((n, t), dtype=torch.float32)
    for i, c in enumerate(completions):
        completion_ids[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        mask[i, :len(c)] = 0.0 if (mask_truncated and truncated[i]) else 1.0
    groups, members = _shared_rows(prompts, completions, row_tokens)
    batch, index = shared_prefix_rows(groups, pad_id)
    at, into = [], []  # completion token j of completion i: scored from the state of the token before it
    for g, row in enumerate(members):
        for k, i in enumerate(row):
            p = len(prompts[i])
            at += index[g][k][p - 1:p - 1 + len(completions[i])]
            into += range(i * t, i * t + len(completions[i]))
    return {**batch, "completion_ids": completion_ids, "completion_mask": mask,
            "score_at": torch.tensor(at, dtype=torch.long), "score_into": torch.tensor(into, dtype=torch.long),
            "num_tokens": torch.tensor(sum(len(p) + len(c) for p, c in zip(prompts, completions)))}


def _shared_rows(prompts, completions, row_tokens):
    """(prompt, [completion, ...]) per row, and which completions each row holds: consecutive
    completions of one prompt share a row while it stays within row_tokens."""
    groups, members = [], []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        row = groups[-1] if groups else None
        if row is None or row[0] != p or len(p) + sum(map(len, row[1])) + len(c) > row_tokens:
            groups.append((p, []))
            members.append([])
        groups[-1][1].append(c)
        members[-1].append(i)
    return groups, members


def padded_tokens(prompts, completions, *, shared: bool, row_tokens: int = ROW_TOKENS) -> int:
    """The size of build_batch's input_ids (rows x width) for these completions, without building it."""
    if shared:
        groups, _ = _shared_rows(prompts, completions, row_tokens)
        return len(groups) * max(len(p) + sum(map(len, cs)) for p, cs in groups)
    return len(prompts) * (max(map(len, prompts)) + max(1, max(map(len, completions))))


def split_by_tokens(prompts, completions, budget: int, *, shared: bool, row_tokens: int = ROW_TOKENS) -> list[range]:
    """Consecutive completions cut into parts whose batch (build_batch with these settings) has at most
    `budget` padded tokens; a completion that needs more is a part of its own."""
    parts, start = [], 0
    for end in range(1, len(prompts) + 1):
        if end - start > 1 and padded_tokens(prompts[start:end], completions[start:end], shared=shared,
                                             row_tokens=row_tokens) > budget:
            parts.append(range(start, end - 1))
            start = end - 1
    return parts + [range(start, len(prompts))] if prompts else parts


def completion_logps(model, batch: dict, temperature: float) -> torch.Tensor:
    """[N, T] log-probs of the completion tokens (at least float32; 0 after a completion's end)."""
    targets = batch["completion_ids"]
    if "score_at" in batch:
        hidden = final_hidden(model, batch).flatten(0, 1)[batch["score_at"]]
        into = batch["score_into"]
        logps, _ = token_logps(output_head(model), hidden, targets.flatten()[into], temperature=temperature)
        out = torch.zeros(targets.numel(), dtype=logps.dtype, device=logps.device)
        return out.index_copy(0, into, logps).view(targets.shape)
    t = targets.shape[1]
    keep = batch["attention_mask"][:, -t:].bool()
    hidden = final_hidden(model, batch)[:, -t - 1:-1]
    logps, _ = token_logps(output_head(model), hidden[keep], targets[keep], temperature=temperature)
    return torch.zeros(targets.shape, dtype=logps.dtype, device=logps.device).masked_scatter(keep, logps)


def pad_rows(tensors: list[torch.Tensor], width: int) -> torch.Tensor:
    """Micro-batch [n_k, T_k] tensors -> one [sum n_k, width] tensor, zero-padded on the right."""
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors])
