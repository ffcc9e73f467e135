"""Shared-prefix group generation: the same completions as independent generation (greedy), seeded draws
that do not depend on the batch's layout, stop strings and the completion mask (EOS included)."""

import pytest
import torch

from unitune.errors import UnituneError
from unitune.rl.batch import build_batch
from unitune.rl.rollout import HFRollout, SamplingParams, make_rollout


@pytest.fixture(scope="module")
def rollout():
    from unitune.models.load import load_model, load_tokenizer

    tokenizer, model = load_tokenizer("tiny-llama"), load_model("tiny-llama")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # larger weights than the init: greedy text that varies instead of one repeated token
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15, generator=g)
    r = HFRollout(model, tokenizer, chat_template=tokenizer.chat_template)
    yield r
    r.engine.close()


def prompts(r):
    return [r.engine.encode_chat([{"role": "user", "content": f"Question {i}: " + "tell me more. " * (1 + i % 3)}])
            for i in range(4)]


def test_shared_prefix_equals_independent_generation_greedy(rollout):
    p, params = prompts(rollout), SamplingParams(max_new_tokens=12, temperature=0)
    shared = rollout.generate(p, 3, params, seed=1)
    alone = rollout.generate(p, 3, params, seed=1, shared_prefix=False)
    engine = rollout.engine.generate([q for q in p for _ in range(3)], params)  # the engine's own path
    ids = [c.token_ids for c in shared]
    assert ids == [c.token_ids for c in alone] == [c.token_ids for c in engine]
    assert len({tuple(x) for x in ids}) > 1  # the prompts give different completions


def test_seeded_sampling_is_reproducible_and_groups_differ(rollout):
    p, params = prompts(rollout), SamplingParams(max_new_tokens=8, temperature=1.0)
    rollout.model.train()
    a = [c.token_ids for c in rollout.generate(p, 4, params, seed=3)]
    assert rollout.model.training  # generation runs in eval mode and restores the mode
    b = [c.token_ids for c in rollout.generate(p, 4, params, seed=3)]
    alone = [c.token_ids for c in rollout.generate(p, 4, params, seed=3, shared_prefix=False)]
    assert a == b
    assert sum(x == y for x, y in zip(a, alone)) >= len(a) - 1  # same draws; padding may flip a near-tie
    assert len({tuple(x) for x in a[:4]}) == 4  # a group's completions are different samples


def test_stop_strings_end_the_completion(rollout):
    p = prompts(rollout)[:1]
    full = rollout.generate(p, 1, SamplingParams(max_new_tokens=12, temperature=0))[0]
    stop = full.text[len(full.text) // 2:][:3]
    cut = rollout.generate(p, 2, SamplingParams(max_new_tokens=12, temperature=0, stop=[stop]))[0]
    assert cut.finish_reason == "stop" and stop not in cut.text and full.text.startswith(cut.text)
    assert len(cut.token_ids) < len(full.token_ids)


def test_completion_mask_includes_eos_and_overlong_filtering():
    batch = build_batch([[5, 6, 7], [8]], [[10, 11, 2], [12, 13, 14, 15]], [False, True], pad_id=0,
                        mask_truncated=False)
    assert batch["completion_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]  # EOS (2) is trained
    assert batch["input_ids"].tolist() == [[5, 6, 7, 10, 11, 2, 0], [0, 0, 8, 12, 13, 14, 15]]
    assert batch["position_ids"][1].tolist()[2:] == [0, 1, 2, 3, 4]
    filtered = build_batch([[5, 6, 7], [8]], [[10, 11, 2], [12, 13, 14, 15]], [False, True], pad_id=0,
                           mask_truncated=True)
    assert filtered["completion_mask"].tolist() == [[1, 1, 1, 0], [0, 0, 0, 0]]


def test_vllm_absence_is_a_message(rollout):
    with pytest.raises(UnituneError, match="vllm"):
        make_rollout("vllm", rollout.model, rollout.engine.tokenizer)
