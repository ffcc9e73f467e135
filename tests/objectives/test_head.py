"""The LM head at target positions (unitune/objectives/head.py) gives the numbers of the plain
full-logits computation: log-probs, top-1 hits and gradients, through each of its paths (frozen
head computed in forward, trainable head checkpointed, no grad), at any chunk size and temperature,
and through the objectives that use it (sft loss, DPO sequence log-probs, GRPO completion log-probs)."""

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import live_bytes, random_features, recording_casts
from unitune.data.collate import IGNORE, collate
from unitune.objectives.head import final_hidden, model_mask, output_head, token_logps, token_nll_sum


def _reference(head, hidden, targets, temperature):
    z = head(hidden)
    z = (z.float() if z.dtype == torch.bfloat16 else z) / temperature
    return z.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1), z.argmax(-1) == targets


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen-head", "trainable-head"])
@pytest.mark.parametrize("chunk", [7, 256])
def test_token_logps_equal_full_logits(frozen, chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True, dtype=torch.float64).requires_grad_(not frozen)
    hidden = torch.randn(30, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (30,))
    upstream = torch.randn(30, dtype=torch.float64)  # a per-token gradient, as DPO / GRPO losses give

    want, want_hits = _reference(head, hidden, targets, 0.7)
    (want * upstream).sum().backward()
    want_grads = [hidden.grad.clone()] + ([] if frozen else [head.weight.grad.clone(), head.bias.grad.clone()])
    hidden.grad = None
    head.zero_grad()

    got, hits = token_logps(head, hidden, targets, temperature=0.7, chunk=chunk)
    (got * upstream).sum().backward()
    got_grads = [hidden.grad] + ([] if frozen else [head.weight.grad, head.bias.grad])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert torch.equal(hits, want_hits)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)

    with torch.no_grad():
        plain, _ = token_logps(head, hidden, targets, temperature=0.7, chunk=chunk)
    torch.testing.assert_close(plain, want.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("trained", ["weight-and-bias", "weight", "bias"])
@pytest.mark.parametrize("chunk", [7, 256])
def test_token_nll_sum_equals_full_logits(trained, chunk):
    """The summed NLL, its gradients made in forward, gives the full-logits cross-entropy sum and
    autograd's gradients, scaled by whatever multiplies the sum afterwards (the loop's 1 / N)."""
    torch.manual_seed(6)
    head = torch.nn.Linear(16, 50, bias=True, dtype=torch.float64)
    head.weight.requires_grad_(trained != "bias")
    head.bias.requires_grad_(trained != "weight")
    params = [p for p in head.parameters() if p.requires_grad]
    hidden = torch.randn(30, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (30,))

    want = F.cross_entropy(head(hidden), targets, reduction="sum")
    (want * 0.37).backward()
    want_grads = [t.grad.clone() for t in [hidden, *params]]
    hidden.grad = None
    head.zero_grad(set_to_none=True)

    got, hits = token_nll_sum(head, hidden, targets, chunk=chunk)
    (got * 0.37).backward()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert torch.equal(hits, head(hidden).argmax(-1) == targets)
    for g, w in zip([hidden.grad] + [p.grad for p in params], want_grads):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


def test_token_nll_sum_under_bf16_autocast_matches_autograd():
    """Under bf16 autocast the summed NLL's matmuls run in bf16 as autograd's would, its weight's
    gradient summed over chunks in float32."""
    torch.manual_seed(7)
    head = torch.nn.Linear(64, 500, bias=True)
    hidden = torch.randn(40, 64, requires_grad=True)
    targets = torch.randint(0, 500, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = -_reference(head, hidden, targets, 1.0)[0].sum()
        want.backward()
        want_grads = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
        hidden.grad = None
        head.zero_grad()
        got, _ = token_nll_sum(head, hidden, targets, chunk=16)
        got.backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-4)
    for g, w in zip([hidden.grad, head.weight.grad, head.bias.grad], want_grads):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=2e-2, atol=2e-3)


def test_no_rows_give_a_trained_head_zero_gradients():
    """A pass with nothing to score still gives a trained head's weight a (zero) gradient, per token and
    summed, so every trained parameter has one after backward."""
    head = torch.nn.Linear(8, 20)
    hidden = torch.randn(0, 8, requires_grad=True)
    targets = torch.zeros(0, dtype=torch.long)
    for loss in (lambda: -token_logps(head, hidden, targets)[0].sum(), lambda: token_nll_sum(head, hidden, targets)[0]):
        head.zero_grad(set_to_none=True)
        loss().backward()
        assert torch.equal(head.weight.grad, torch.zeros_like(head.weight))


def test_token_nll_sum_refuses_a_second_backward():
    """Backward scales the weight's gradient in place, so a second backward through the same graph
    is an error, not a gradient scaled twice."""
    head = torch.nn.Linear(8, 20)
    hidden = torch.randn(5, 8, requires_grad=True)
    loss, _ = token_nll_sum(head, hidden, torch.randint(0, 20, (5,)))
    (loss * 0.5).backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        (loss * 0.5).backward()


def test_frozen_head_under_bf16_autocast_matches_autograd():
    """Under bf16 autocast the frozen-head path rounds where autograd through the same bf16 ops does."""
    torch.manual_seed(1)
    head = torch.nn.Linear(64, 500, bias=False).requires_grad_(False)
    hidden = torch.randn(40, 64, requires_grad=True)
    targets = torch.randint(0, 500, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, _ = _reference(head, hidden, targets, 1.0)
        want.sum().backward()
        want_grad, hidden.grad = hidden.grad.clone(), None
        got, _ = token_logps(head, hidden, targets, chunk=16)
        got.sum().backward()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(hidden.grad, want_grad, rtol=1e-2, atol=1e-3)


def test_trained_head_under_bf16_autocast_matches_autograd():
    """Under bf16 autocast the trained-head path gives autograd's log-probs and gradients through the
    same bf16 matmuls, within bf16 rounding (its weight gradient is summed over chunks in float32)."""
    torch.manual_seed(3)
    head = torch.nn.Linear(64, 500, bias=True)
    hidden = torch.randn(40, 64, requires_grad=True)
    targets = torch.randint(0, 500, (40,))
    upstream = torch.randn(40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, _ = _reference(head, hidden, targets, 0.8)
        (want * upstream).sum().backward()
        want_grads = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
        hidden.grad = None
        head.zero_grad()
        got, _ = token_logps(head, hidden, targets, temperature=0.8, chunk=16)
        (got * upstream).sum().backward()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    for g, w in zip([hidden.grad, head.weight.grad, head.bias.grad], want_grads):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen-head", "trainable-head"])
def test_a_float64_head_stays_float64_under_autocast(frozen):
    """Autocast leaves float64 tensors as they are; so does the head (a float64 model trained inside a
    bf16 autocast block gets float64 numbers)."""
    torch.manual_seed(5)
    head = torch.nn.Linear(16, 50, dtype=torch.float64).requires_grad_(not frozen)
    hidden = torch.randn(30, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (30,))
    want, _ = _reference(head, hidden, targets, 1.0)
    want.sum().backward()
    want_grads = [hidden.grad.clone()] + ([] if frozen else [head.weight.grad.clone()])
    hidden.grad, head.weight.grad = None, None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = token_logps(head, hidden, targets, chunk=7)
        got.sum().backward()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for g, w in zip([hidden.grad] + ([] if frozen else [head.weight.grad]), want_grads):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("path", ["frozen", "trained", "no-grad", "other-module"])
def test_a_target_tied_for_the_top_logit_is_a_hit(path):
    """Top-1 hits are "the target's logit is a largest one" on every path: with a zero head every
    logit ties, so every target is a hit (argmax would count only token 0), and with one row's
    target alone at the top that row is a hit and the others are not."""
    head = torch.nn.Linear(8, 20, bias=True).requires_grad_(path == "trained")
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    hidden = torch.randn(6, 8, requires_grad=path != "no-grad")
    targets = torch.tensor([3, 0, 19, 7, 7, 1])
    module = head if path != "other-module" else torch.nn.Sequential(head)

    def hits():
        with torch.set_grad_enabled(path != "no-grad"):
            return token_logps(module, hidden, targets, chunk=4)[1]

    assert hits().all()
    with torch.no_grad():
        head.bias[7] = 1.0
    assert hits().tolist() == [False, False, False, True, True, False]


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen-head", "trainable-head"])
def test_the_head_holds_one_chunk_of_logits_at_a_time(frozen):
    """What a pass through the head allocates, at most, at any moment: one chunk of [vocab, rows] logits
    and the tensors it returns (the frozen head's d logp / d hidden in forward; the trained head's
    weight gradient and d loss / d hidden in backward), with nothing weight- or logit-sized besides."""
    vocab, width, rows, chunk = 5000, 64, 300, 64
    torch.manual_seed(4)
    head = torch.nn.Linear(width, vocab, bias=False).requires_grad_(not frozen)
    hidden = torch.randn(rows, width, requires_grad=True)
    targets = torch.randint(0, vocab, (rows,))
    logits, small = chunk * vocab * 4, 4 * rows * width * 4  # a chunk's logits; a few [rows, width] tensors
    if frozen:
        with live_bytes() as forward:
            logps, _ = token_logps(head, hidden, targets, chunk=chunk)
        assert forward.peak <= logits + small, forward.peak
    else:
        logps, _ = token_logps(head, hidden, targets, chunk=chunk)
        with live_bytes() as backward:
            logps.sum().backward()
        assert backward.peak <= vocab * width * 4 + logits + small, backward.peak
        head.zero_grad(set_to_none=True)
        with live_bytes() as forward:  # the summed NLL: the weight's gradient and one chunk, in forward
            nll, _ = token_nll_sum(head, hidden, targets, chunk=chunk)
        assert forward.peak <= vocab * width * 4 + logits + small, forward.peak
        with live_bytes() as backward:  # and nothing weight-sized in backward (scaled in place)
            (nll / rows).backward()
        assert backward.peak <= small, backward.peak


def test_a_bf16_trained_head_adds_its_weight_gradient_a_block_at_a_time(monkeypatch):
    """Under bf16 autocast the summed NLL's weight gradient (float32) takes each chunk's bf16 share a block
    of vocabulary rows at a time: the pass holds the gradient, the weight's bf16 cast, one chunk of
    logits (float32, its bf16 product, its bf16 softmax) and one block, never a second [vocab, width]
    product; and the blocks add up to the numbers of one whole product, bit for bit."""
    import unitune.objectives.head as head_module

    vocab, width, rows, chunk, block = 5000, 64, 300, 64, 512
    torch.manual_seed(5)
    head = torch.nn.Linear(width, vocab, bias=False)
    hidden = torch.randn(rows, width)
    targets = torch.randint(0, vocab, (rows,))
    logits, small = chunk * vocab * 4, 4 * rows * width * 4
    grads = {}
    for rows_at_a_time in (block, vocab):
        monkeypatch.setattr(head_module, "WEIGHT_GRAD_ROWS", rows_at_a_time)
        with torch.autocast("cpu", dtype=torch.bfloat16), live_bytes() as forward:
            nll, _ = token_nll_sum(head, hidden, targets, chunk=chunk)
        grads[rows_at_a_time] = torch.autograd.grad(nll, head.weight)[0]
        if rows_at_a_time == block:
            budget = vocab * width * (4 + 2) + logits * 3 // 2 + block * width * 2 + small
            assert forward.peak <= budget, (forward.peak, budget)
    assert torch.equal(grads[block], grads[vocab])


def _lora_like(model):
    """The tiny model with only its attention projections trainable: the head (tied embedding) is frozen."""
    for name, param in model.named_parameters():
        param.requires_grad_("self_attn" in name)
    return model


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen-head", "trainable-head"])
def test_sft_loss_equals_full_logits_loss(tiny_model, frozen):
    """LMObjective's loss (hidden states, head at targets only) == cross-entropy over the full logits:
    same loss and same gradients."""
    from unitune.objectives.lm import LMObjective

    model = _lora_like(tiny_model) if frozen else tiny_model
    batch = collate([[f] for f in random_features(4, seed=5)], pad_id=2)
    keep = batch["targets"] != IGNORE
    full = F.cross_entropy(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 position_ids=batch["position_ids"]).logits[keep],
                           batch["targets"][keep], reduction="sum")
    full.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    loss, metrics = LMObjective("sft", pad_id=2).loss(model, batch)
    loss.backward()
    assert loss.item() == pytest.approx(full.item(), rel=1e-6)
    assert 0 <= metrics["mean_token_accuracy"].item() <= keep.sum().item()
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, ref[name], atol=1e-4, rtol=1e-4, msg=name)  # sums reordered


def test_grpo_completion_logps_equal_full_logits(tiny_model):
    """completion_logps (head at completion tokens only) == log-softmax of the full logits at the
    positions before each completion token, 0 after a completion ends; same gradients."""
    from unitune.rl.batch import build_batch, completion_logps

    model = _lora_like(tiny_model)
    batch = build_batch([[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14]], [False, False], pad_id=2,
                        mask_truncated=False)
    t = batch["completion_ids"].shape[1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits[:, -t - 1:-1].float() / 0.8
    want = logits.log_softmax(-1).gather(-1, batch["completion_ids"][..., None]).squeeze(-1)
    want = want * batch["attention_mask"][:, -t:]
    upstream = torch.randn(want.shape)
    (want * upstream).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    got = completion_logps(model, batch, 0.8)
    (got * upstream).sum().backward()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.all(got[1, 1:] == 0)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, ref[name], atol=1e-4, rtol=1e-4, msg=name)


def test_no_target_still_reaches_the_parameters(tiny_model):
    """A micro-batch without a single target gives a zero loss that still back-propagates (DDP needs
    every parameter to get a gradient on every rank)."""
    model = _lora_like(tiny_model)
    batch = collate([[{"input_ids": [5, 6, 7], "mask": [0, 0, 0]}]], pad_id=2)
    hidden = final_hidden(model, batch)
    keep = batch["targets"] != IGNORE
    logps, _ = token_logps(output_head(model), hidden[keep], batch["targets"][keep])
    loss = -logps.sum()
    loss.backward()
    assert loss.item() == 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("grad", [True, False], ids=["frozen-head", "no-grad"])
def test_a_frozen_head_is_cast_once_under_autocast(grad):
    """Autocast re-casts a frozen weight at every use; token_logps casts the head once for all chunks
    (and gives what the per-chunk casts gave)."""
    torch.manual_seed(2)
    head = torch.nn.Linear(32, 300, bias=False).requires_grad_(False)
    hidden = torch.randn(50, 32, requires_grad=grad)
    targets = torch.randint(0, 300, (50,))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(grad):
        want, _ = _reference(head, hidden, targets, 1.0)
        with recording_casts() as mode:
            got, _ = token_logps(head, hidden, targets, chunk=8)  # 7 chunks
    assert [c for c in mode.casts if c[0] == (300, 32)] == [((300, 32), torch.bfloat16)]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_final_hidden_does_not_run_the_lm_head(tiny_model):
    """The decoder stack is called itself: the head is not run (not even on no rows, which under
    autocast still cast its whole weight), and the hidden states are the model's own."""
    batch = collate([[f] for f in random_features(3, seed=4)], pad_id=2)
    calls = []
    tiny_model.get_output_embeddings().register_forward_hook(lambda *_: calls.append(1))
    hidden = final_hidden(tiny_model, batch)
    assert not calls
    want = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"], output_hidden_states=True).hidden_states[-1]
    real = batch["attention_mask"].bool()  # padding differs: it is not masked (test below)
    torch.testing.assert_close(hidden[real], want[real], rtol=1e-6, atol=1e-6)


def test_rows_padded_at_the_end_run_without_a_mask(tiny_model):
    """Right-padded rows go to the model without a mask (the causal one suffices), and every real
    token's hidden state is the one its row has alone; left padding keeps its mask."""
    feats = random_features(3, seed=6)
    batch = collate([[f] for f in feats], pad_id=2)
    seen = []
    decoder = tiny_model.get_decoder()
    decoder.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("attention_mask")), with_kwargs=True)
    hidden = final_hidden(tiny_model, batch)
    assert seen == [None] and batch["num_tokens"] < batch["input_ids"].numel()  # padded, yet no mask
    for row, f in enumerate(feats):
        alone = final_hidden(tiny_model, collate([[f]], pad_id=2))[0]
        torch.testing.assert_close(hidden[row, :len(f["input_ids"])], alone, rtol=1e-5, atol=1e-5)
    left = batch["attention_mask"].flip(-1)
    assert model_mask(tiny_model, left) is left
