"""Shared-prefix group generation: the same completions as independent generation (greedy), seeded draws
that do not depend on the batch's layout, stop strings and the completion mask (EOS included)."""

import copy

import pytest
import torch

from unitune.errors import UnituneError
from unitune.rl.batch import build_batch
from unitune.models.prepack import can_prepack
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


@pytest.fixture()
def lora_policy():
    from peft import LoraConfig, get_peft_model

    from unitune.models.load import load_model, load_tokenizer

    tokenizer, model = load_tokenizer("tiny-llama"), load_model("tiny-llama")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15, generator=g)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    return model, tokenizer


def _train_step_on_lora(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


def _policy_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def test_policy_copy_follows_the_trained_lora_weights(lora_policy):
    """A float32 copy (LoRA merged) samples exactly what the policy itself samples, before and after the
    LoRA weights change; its logits are the policy's."""
    model, tokenizer = lora_policy
    in_place = HFRollout(model, tokenizer, chat_template=tokenizer.chat_template)
    copied = HFRollout(model, tokenizer, chat_template=tokenizer.chat_template, dtype=torch.float64)  # != float32: a copy
    p, params = prompts(in_place), SamplingParams(max_new_tokens=10, temperature=0)
    for seed in (1, 2):
        _train_step_on_lora(model, seed)
        want = [c.token_ids for c in in_place.generate(p, 2, params, seed=0)]
        assert [c.token_ids for c in copied.generate(p, 2, params, seed=0)] == want
        assert all(w.numel() == 0 for w in copied.copy.model.parameters())  # freed while the policy trains
        copied.copy.refresh()
        ids = p[0] + want[0]
        # fp32's own rounding reaches ~4e-4 on logits of magnitude ~6; a wrong merge fails the greedy comparison
        torch.testing.assert_close(_policy_logits(copied.copy.model, ids), _policy_logits(model, ids),
                                   atol=2e-3, rtol=1e-4)


def test_bf16_rollout_copy_is_close_to_the_policy(lora_policy):
    model, tokenizer = lora_policy
    _train_step_on_lora(model, 3)
    r = HFRollout(model, tokenizer, chat_template=tokenizer.chat_template, dtype=torch.bfloat16)
    out = r.generate(prompts(r), 2, SamplingParams(max_new_tokens=6, temperature=1.0), seed=0)
    assert len(out) == 8 and all(c.token_ids for c in out)
    r.copy.refresh()  # the weights it sampled from (freed after the rollout)
    assert next(r.copy.model.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the policy itself is untouched
    ids = prompts(r)[0]
    merged = copy.deepcopy(model).merge_and_unload()  # peft's own merge; its parameters (not buffers) in bf16
    for param in merged.parameters():
        param.data = param.data.to(torch.bfloat16)
    torch.testing.assert_close(_policy_logits(r.copy.model, ids), _policy_logits(merged, ids), atol=1e-3, rtol=1e-3)
    fp32 = _policy_logits(model, ids)
    assert torch.corrcoef(torch.stack([_policy_logits(r.copy.model, ids).flatten(), fp32.flatten()]))[0, 1] > 0.99


@pytest.mark.skipif(not can_prepack(torch.float32, torch.device("cpu")),
                    reason="this torch has no oneDNN packed linears")
def test_prepacked_copy_samples_what_the_policy_samples(lora_policy):
    """grpo.rollout_prepack: a float32 copy with every linear weight re-laid out for oneDNN gives the
    policy's greedy completions and logits, before and after the LoRA weights change; the re-laid
    weights replace the plain ones (the head tied to the embedding keeps its plain copy) and are
    freed with them after the rollout."""
    model, tokenizer = lora_policy
    in_place = HFRollout(model, tokenizer, chat_template=tokenizer.chat_template)
    packed = HFRollout(model, tokenizer, chat_template=tokenizer.chat_template, prepack=True)
    assert in_place.copy is None and packed.copy is not None and packed.copy.packed.linears
    p, params = prompts(in_place), SamplingParams(max_new_tokens=10, temperature=0)
    for seed in (1, 2):
        _train_step_on_lora(model, seed)
        want = [c.token_ids for c in in_place.generate(p, 2, params, seed=0)]
        assert [c.token_ids for c in packed.generate(p, 2, params, seed=0)] == want
        assert all(w.numel() == 0 for w in packed.copy.model.parameters())
        assert all(m.unitune_packed is None for m in packed.copy.packed.linears)
        packed.copy.refresh()
        kept = [m for m in packed.copy.packed.linears if m.weight.numel()]
        assert all(m.unitune_packed is not None for m in packed.copy.packed.linears)
        assert len(kept) == len(packed.copy.packed.shared) <= 1  # only a tied head keeps its plain weight
        ids = p[0] + want[0]
        torch.testing.assert_close(_policy_logits(packed.copy.model, ids), _policy_logits(model, ids),
                                   atol=2e-3, rtol=1e-4)


def test_prepack_only_where_onednn_runs_it(lora_policy):
    model, tokenizer = lora_policy
    assert not can_prepack(torch.float64, torch.device("cpu")) and not can_prepack(torch.float32, torch.device("meta"))
    r = HFRollout(model.double(), tokenizer, chat_template=tokenizer.chat_template, prepack=True)
    assert r.copy is None  # float64: decoded from the model itself, as without prepack
