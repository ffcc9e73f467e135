"""Completions -> training tensors, and the per-token log-probs of a completion.

    l_t = log softmax(logits_t / temperature)[y_t]          (policy, old and reference alike)

A row is [left-padded prompt | completion, right-padded], so every completion starts at the
same column and the hidden states that score it are at the T positions before it; the LM head
runs only at the real completion tokens (unitune/objectives/head.py). position_ids count real
tokens only, as the engine's do when sampling. The completion mask is one over the
completion's tokens, EOS included (OBJECTIVES.md §5.1); with overlong filtering a completion
cut at the token limit gets an all-zero row (it stays in its group's statistics).
"""

import torch

from unitune.objectives.head import final_hidden, output_head, token_logps


def build_batch(prompts: list[list[int]], completions: list[list[int]], truncated: list[bool], *, pad_id: int,
                mask_truncated: bool) -> dict:
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


def completion_logps(model, batch: dict, temperature: float) -> torch.Tensor:
    """[N, T] log-probs of the completion tokens (at least float32; 0 after a completion's end)."""
    targets = batch["completion_ids"]
    t = targets.shape[1]
    keep = batch["attention_mask"][:, -t:].bool()
    hidden = final_hidden(model, batch)[:, -t - 1:-1]
    logps, _ = token_logps(output_head(model), hidden[keep], targets[keep], temperature=temperature)
    return torch.zeros(targets.shape, dtype=logps.dtype, device=logps.device).masked_scatter(keep, logps)


def pad_rows(tensors: list[torch.Tensor], width: int) -> torch.Tensor:
    """Micro-batch [n_k, T_k] tensors -> one [sum n_k, width] tensor, zero-padded on the right."""
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors])
