"""Completions -> training tensors, and the per-token log-probs of a completion.

    l_t = log softmax(logits_t / temperature)[y_t]          (policy, old and reference alike)

A row is [left-padded prompt | completion, right-padded], so every completion starts at the
same column and the logits that score it are the last T+1 positions (`logits_to_keep`);
position_ids count real tokens only, as the engine's do when sampling. The completion mask is
one over the completion's tokens, EOS included (OBJECTIVES.md §5.1); with overlong filtering a
completion cut at the token limit gets an all-zero row (it stays in its group's statistics).
"""

import torch


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
    """[N, T] log-probs of the completion tokens (float32; 0 where the mask is 0 is not enforced)."""
    targets = batch["completion_ids"]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=targets.shape[1] + 1)
    logits = out.logits[:, :-1]
    rows = []
    for row_logits, row_ids in zip(logits, targets):  # one row at a time: a [T, vocab] float copy, not [N, T, vocab]
        row_logits = row_logits.float() / temperature
        rows.append(row_logits.gather(-1, row_ids[:, None]).squeeze(-1) - row_logits.logsumexp(-1))
    return torch.stack(rows)



def pad_rows(tensors: list[torch.Tensor], width: int) -> torch.Tensor:
    """Micro-batch [n_k, T_k] tensors -> one [sum n_k, width] tensor, zero-padded on the right."""
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors])
