"""SDPA with grouped key/value heads given to the CPU kernel as they are (unitune/models/attention.py): the
same outputs bit for bit under a padding mask, the same gradients up to summation order, and no copied
key/value heads kept for backward."""

import pytest
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from unitune.models.attention import grouped_sdpa
from unitune.models.load import load_model


@pytest.fixture()
def attention():
    """A function that makes `sdpa` transformers' own or unitune's; unitune's again afterwards."""
    def use(fn):
        AttentionInterface.register("sdpa", fn)

    yield use
    use(grouped_sdpa)


def padded_batch():
    ids = torch.randint(5, 500, (3, 24), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 17:] = 0  # right padding
    mask[2, :5] = 0  # left padding
    return ids, mask


def logits_and_grads(model, ids, mask):
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits
    (logits * mask[..., None]).square().mean().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])
def test_the_same_outputs_and_gradients_as_transformers_sdpa(name, attention):
    model = load_model(name)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped
    ids, mask = padded_batch()
    attention(sdpa_attention_forward)
    logits0, grads0 = logits_and_grads(model, ids, mask)
    attention(grouped_sdpa)
    logits1, grads1 = logits_and_grads(model, ids, mask)
    assert torch.equal(logits0, logits1)
    for n in grads0:  # the grouped heads' gradients are summed in another order
        torch.testing.assert_close(grads1[n], grads0[n], rtol=1e-5, atol=1e-6, msg=n)


def test_no_copied_key_value_heads_are_kept_for_backward(attention):
    model = load_model("tiny-llama")
    ids, mask = padded_batch()

    def kept() -> int:
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, attention_mask=mask)
        return sum(seen.values())

    attention(sdpa_attention_forward)
    plain = kept()
    attention(grouped_sdpa)
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    copies = 2 * c.num_attention_heads * ids.numel() * head_dim * 4  # keys and values at query-head width, fp32
    originals = 2 * c.num_key_value_heads * ids.numel() * head_dim * 4  # kept instead
    assert plain - kept() == c.num_hidden_layers * (copies - originals)


def test_one_query_token_and_unmasked_calls_are_transformers_own():
    class Module:
        num_key_value_groups, is_causal = 2, True

    q, kv = torch.randn(2, 4, 1, 8), torch.randn(2, 2, 6, 8)
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    mask[0, ..., :2] = False
    for args in [(q, kv, kv, mask), (torch.randn(2, 4, 6, 8), kv, kv, None)]:
        assert torch.equal(grouped_sdpa(Module(), *args)[0], sdpa_attention_forward(Module(), *args)[0])


def test_loading_a_model_makes_it_what_sdpa_runs(attention):
    attention(sdpa_attention_forward)  # as in a fresh process
    load_model("tiny-llama")
    assert AttentionInterface()["sdpa"] is grouped_sdpa
