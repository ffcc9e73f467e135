"""GRPO's shared rows ([prompt | completion 1 | completion 2 | ...]) score every completion token with
the log-prob, and give the gradients, of one row per completion; groups split when a row would pass
the row limit; the token count is the same. The parts train.max_tokens_per_forward cuts a micro-batch
into stay within its budget."""

import random

import pytest
import torch

from unitune.rl.batch import build_batch, completion_logps, padded_tokens, split_by_tokens


def groups(seed: int):
    """Two prompts x 3 completions of mixed lengths (one empty), then a prompt with a single one."""
    rng = random.Random(seed)
    prompts, completions, truncated = [], [], []
    for size, g in ((7, 3), (4, 3), (5, 1)):
        prompt = [rng.randrange(5, 2000) for _ in range(size)]
        for k in range(g):
            prompts.append(prompt)
            completions.append([] if (size, k) == (4, 1) else [rng.randrange(5, 2000) for _ in range(rng.randint(1, 9))])
            truncated.append(k == 2)
    return prompts, completions, truncated


def logps_and_grads(model, batch, upstream):
    model.zero_grad()
    logps = completion_logps(model, batch, 0.7)
    (logps * upstream).sum().backward()
    return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attn,row_tokens", [("sdpa", 1024), ("eager", 1024), ("sdpa", 16)])
def test_shared_rows_equal_one_row_per_completion(attn, row_tokens):
    from unitune.models.load import load_model

    model = load_model("tiny-llama", attn_implementation="sdpa").double()
    prompts, completions, truncated = groups(3)
    kw = dict(pad_id=2, mask_truncated=True)
    plain = build_batch(prompts, completions, truncated, **kw)
    shared = build_batch(prompts, completions, truncated, shared=True, row_tokens=row_tokens, **kw)
    rows = shared["input_ids"].shape[0]
    assert rows == (3 if row_tokens == 1024 else 5)  # a row per prompt, or the first two groups split in two
    for key in ("completion_ids", "completion_mask", "num_tokens"):
        assert torch.equal(shared[key], plain[key]), key
    upstream = torch.randn(plain["completion_ids"].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    want, want_grads = logps_and_grads(model, plain, upstream)  # (eager in float64 gives NaN on left padding)
    model.set_attn_implementation(attn)
    got, got_grads = logps_and_grads(model, shared, upstream)
    real = plain["attention_mask"][:, -want.shape[1]:].bool()
    assert torch.all(got[~real] == 0) and torch.all(got[real] != 0)
    # float64, but transformers' attention takes its softmax in float32: agreement to ~1e-8
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-8)
    assert got_grads.keys() == want_grads.keys() and got_grads
    for name, grad in want_grads.items():
        assert float((got_grads[name] - grad).norm() / grad.norm()) < 1e-6, name


@pytest.mark.parametrize("shared", [True, False])
def test_parts_keep_order_and_stay_within_the_budget(shared):
    prompts, completions, truncated = groups(5)
    for budget in (10, 24, 40, 10_000):
        parts = split_by_tokens(prompts, completions, budget, shared=shared, row_tokens=min(1024, budget))
        assert [i for r in parts for i in r] == list(range(len(prompts)))  # consecutive, each completion once
        for r in parts:
            batch = build_batch(prompts[r.start:r.stop], completions[r.start:r.stop], truncated[r.start:r.stop],
                                pad_id=2, mask_truncated=True, shared=shared, row_tokens=min(1024, budget))
            size = batch["input_ids"].numel()
            assert size == padded_tokens(prompts[r.start:r.stop], completions[r.start:r.stop], shared=shared,
                                         row_tokens=min(1024, budget))
            assert size <= budget or len(r) == 1  # only a completion too long on its own passes the budget
        if budget == 10_000:
            assert len(parts) == 1
        if budget == 24:
            assert len(parts) > 2
