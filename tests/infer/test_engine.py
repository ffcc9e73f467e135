"""The engine against a reference sampler: batching, joining mid-generation, seeds,
stop strings, adapters (mixed in one batch) and the error paths."""

import pytest
import torch

from tests.infer.helpers import adapters, one_thread, reference_sample
from unitune.errors import UnituneError
from unitune.infer import Engine, PromptTooLong, SamplingParams
from unitune.models.load import load_model
from unitune.models.prepack import can_prepack

PROMPTS = [[{"role": "user", "content": "Hi"}],
           [{"role": "user", "content": "Write a long story about a dragon who collects spoons and teapots."}],
           [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def engine():
    e = Engine.load("tiny-llama", max_batch_size=8)
    yield e
    e.close()


def test_batched_prompts_of_different_lengths_match_the_reference(engine):
    ids = [engine.encode_chat(p) for p in PROMPTS]
    assert len({len(i) for i in ids}) == 3
    steps = engine.steps
    out = [engine.submit(p, SamplingParams(max_new_tokens=8, seed=10 + k)) for k, p in enumerate(ids)]
    done = [r.result(60) for r in out]
    for k, (p, c) in enumerate(zip(ids, done)):
        assert c.token_ids == reference_sample(engine.model, p, 10 + k, 8), f"prompt {k}"
        assert c.finish_reason == "length" and c.prompt_tokens == len(p)
    assert engine.steps - steps < 3 * 8  # the three shared forward passes


def test_request_joining_a_running_batch_matches_the_reference(engine):
    ids = [engine.encode_chat(p) for p in PROMPTS]
    first = engine.submit(ids[0], SamplingParams(max_new_tokens=10, seed=1))
    stream = iter(first)
    next(stream), next(stream)  # the first request is decoding now
    # joining: a longer prompt that outlives the first request, and a shorter one that ends early;
    # as rows leave, the cache is re-sliced around the rows that remain
    budgets = {1: 20, 2: 4}
    late = {k: engine.submit(ids[k], SamplingParams(max_new_tokens=n, seed=2 + k)) for k, n in budgets.items()}
    cancelled = engine.submit(ids[0][:5], SamplingParams(max_new_tokens=50, seed=9))
    cancelled.cancel()
    assert first.result(60).token_ids == reference_sample(engine.model, ids[0], 1, 10)
    for k, r in late.items():
        assert r.result(60).token_ids == reference_sample(engine.model, ids[k], 2 + k, budgets[k]), k
    assert cancelled.result(60).finish_reason == "cancelled"


def test_seed_reproduces_whatever_shares_the_batch(engine):
    params = SamplingParams(max_new_tokens=10, temperature=0.9, top_p=0.95, top_k=50, seed=123)
    alone = engine.generate([PROMPTS[1]], params)[0]
    crowded = engine.generate([PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[1]], params)
    assert crowded[1].token_ids == alone.token_ids == crowded[3].token_ids
    other = engine.generate([PROMPTS[1]], SamplingParams(max_new_tokens=10, temperature=0.9, seed=124))[0]
    assert other.token_ids != alone.token_ids


def test_greedy_top_k_1_and_tiny_top_p_agree(engine):
    ids = engine.encode_chat(PROMPTS[1])
    greedy = engine.generate([ids], SamplingParams(max_new_tokens=6, temperature=0))[0].token_ids
    top_k = engine.generate([ids], SamplingParams(max_new_tokens=6, top_k=1, seed=5))[0].token_ids
    top_p = engine.generate([ids], SamplingParams(max_new_tokens=6, top_p=1e-6, seed=6))[0].token_ids
    with torch.inference_mode():
        first = int(engine.model(torch.tensor([ids])).logits[0, -1].argmax())
    assert greedy == top_k == top_p and greedy[0] == first


def test_repetition_penalty_avoids_repeating(engine):
    ids = engine.encode_chat(PROMPTS[0])
    plain = engine.generate([ids], SamplingParams(max_new_tokens=12, temperature=0))[0].token_ids
    assert len(set(plain)) < len(plain)  # the random tiny model repeats itself greedily
    penalised = engine.generate([ids], SamplingParams(max_new_tokens=12, temperature=0,
                                                      repetition_penalty=1e6))[0].token_ids
    assert len(set(penalised)) == len(penalised) and not set(penalised) & set(ids)


def test_stop_strings_cut_the_text_and_the_stream(engine):
    params = SamplingParams(max_new_tokens=16, seed=7)
    c = engine.generate([PROMPTS[1]], params)[0]
    pieces = [engine.tokenizer.decode(c.token_ids[:k]) for k in range(len(c.token_ids) + 1)]
    # a stop string that straddles two tokens, so its first half arrives one step before the rest
    k = next(k for k in range(2, len(pieces) - 1)
             if len(pieces[k]) - len(pieces[k - 1]) >= 2 and len(pieces[k + 1]) - len(pieces[k]) >= 2)
    edge = len(pieces[k])
    stop = c.text[edge - 2:edge + 2]
    request = engine.submit(engine.encode_chat(PROMPTS[1]), SamplingParams(max_new_tokens=16, seed=7, stop=[stop]))
    deltas = list(request)
    cut = request.result(60)
    assert cut.finish_reason == "stop" and cut.text == c.text[:c.text.index(stop)] == "".join(deltas)
    assert len(cut.token_ids) == k + 1  # generation ended on the token completing the stop string


def test_stream_deltas_add_up_to_the_text(engine):
    request = engine.submit(engine.encode_chat(PROMPTS[2]), SamplingParams(max_new_tokens=12, seed=3))
    deltas = list(request)
    c = request.result(60)
    assert len(deltas) > 1 and "".join(deltas) == c.text == engine.tokenizer.decode(c.token_ids,
                                                                                     skip_special_tokens=True)


def test_bad_requests_raise(engine):
    with pytest.raises(PromptTooLong):
        engine.submit([5] * engine.context_length, SamplingParams())
    with pytest.raises(UnituneError, match="top_p"):
        engine.submit([5, 6], SamplingParams(top_p=0))
    with pytest.raises(UnituneError, match="adapter"):
        engine.submit([5, 6], SamplingParams(), adapter="nope")
    assert engine.submit([5, 6], SamplingParams(max_new_tokens=0)).result(1).token_ids == []


def test_adapters_selected_per_request_and_mixed_in_one_batch():
    from transformers import AutoModelForCausalLM

    paths = adapters()
    engine = Engine.load("tiny-llama", adapters=paths)
    try:
        assert engine.adapters == ["noise", "pirate"] and engine.default_adapter is None
        assert _packed(engine) == can_prepack(torch.float32, torch.device("cpu"))  # base layers packed, LoRA's not
        ids = engine.encode_chat(PROMPTS[0])
        which = [None, "pirate", "noise", "pirate", None]
        out = [engine.submit(ids, SamplingParams(max_new_tokens=6, seed=4), adapter=a) for a in which]
        done = [r.result(60).token_ids for r in out]
    finally:
        engine.close()
    assert done[0] == done[4] and done[1] == done[3] and len({tuple(d) for d in done[:3]}) == 3
    for name in ("pirate", "noise"):
        reference = AutoModelForCausalLM.from_pretrained(paths[name]).eval()
        assert done[which.index(name)] == reference_sample(reference, ids, 4, 6), name
    base = load_model("tiny-llama").eval()
    assert done[0] == reference_sample(base, ids, 4, 6)


def test_an_adapter_folder_as_the_model_is_merged_into_its_base():
    from transformers import AutoModelForCausalLM

    path = adapters()["pirate"]
    engine = Engine.load(path)
    try:
        assert engine.adapters == [] and engine.default_adapter is None  # merged: plain forward passes
        ids = engine.encode_chat(PROMPTS[2])
        got = engine.generate([ids], SamplingParams(max_new_tokens=6, seed=8))[0].token_ids
    finally:
        engine.close()
    reference = AutoModelForCausalLM.from_pretrained(path).eval()
    assert got == reference_sample(reference, ids, 8, 6)


def _packed(engine) -> bool:
    return any(getattr(m, "unitune_packed", None) is not None for m in engine.model.modules())


def test_prepacked_engine_samples_what_the_plain_one_does():
    """engine.prepack (the default on CPU): the linear layers run from weights packed for oneDNN and
    sample what the plain layers sample; --engine.prepack false keeps the plain layers."""
    plain, packed = Engine.load("tiny-llama", prepack=False), Engine.load("tiny-llama")
    try:
        assert not _packed(plain) and _packed(packed) == can_prepack(torch.float32, torch.device("cpu"))
        ids = [packed.encode_chat(p) for p in PROMPTS]
        params = [SamplingParams(max_new_tokens=8, seed=20 + k) for k in range(len(ids))]

        def sample(engine):
            requests = [engine.submit(i, p) for i, p in zip(ids, params)]  # one batch
            return [r.result(60).token_ids for r in requests]

        assert sample(packed) == sample(plain)
        with torch.inference_mode():
            x = torch.tensor([ids[1]])
            torch.testing.assert_close(packed.model(x).logits, plain.model(x).logits, atol=1e-4, rtol=1e-4)
    finally:
        plain.close()
        packed.close()
