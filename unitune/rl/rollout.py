"""Rollouts: G completions per prompt from the current weights, on the one inference engine.

Shared prefix (`Engine.generate_groups`): each distinct prompt is prefilled once and its KV
cache repeated G times, so a group's G generations decode together without re-encoding the
prompt. From there the engine's own machinery runs (unitune/infer/engine.py): sampling
(temperature, top-p, top-k, one seeded generator per completion), EOS (kept in token_ids,
which is what RL trains on, never in the text), stop strings and the token limit.

Engines behind `make_rollout`:
  hf    in-process. Without a copy (below), on the training model itself: what the optimizer
        just updated (with LoRA, the active adapter) is what the next rollout samples from.
        With `grpo.rollout_dtype` below the model's own (auto: bf16 under
        `train.mixed_precision bf16`), a plain copy of the policy in that dtype, refreshed
        from the trained weights before every rollout (LoRA merged into it: W + s B A).
        Decoding a small batch reads every weight once per token, so on CPU it is bound by
        memory traffic: half the bytes per weight and no LoRA side products make each decode
        step ~1.8x cheaper (BENCHMARKS.md), for one weight copy at the start of a rollout and
        that dtype's copy of the weights in memory while it runs (freed again while the policy
        trains, whose activations need the memory). Sampling in bf16 while training scores in
        fp32 / autocast is the usual rollout-engine mismatch (as with vLLM): the importance
        ratio comes from the training model's own log-probs, so the samples' bf16 origin is
        not corrected for. DoRA policies are not copied (auto keeps them in place).
        On CPU (`grpo.rollout_prepack`, on by default), the copy is made in the rollout dtype
        even where it equals the model's own, and each linear weight in it is re-laid out
        once per rollout for oneDNN's small-batch kernels (unitune/models/prepack.py): decoding
        16 rows of SmolLM2-135M, the 210 linear layers take 28 instead of 52 ms per token in
        fp32 and the tied head 7 instead of 20 (BENCHMARKS.md); re-packing costs ~0.2 s per
        rollout. The samples come from W + s B A summed in the copy's dtype, where the policy
        adds the two products: the same distribution up to that dtype's rounding.
  vllm  not wired in: asking for it says so (and whether vLLM is installed at all); `auto`
        picks hf.
A rollout runs synchronously in the training thread, with the model in eval mode (dropout
off), outside mixed-precision autocast (which on CPU would re-cast every weight at every
decode step).
"""

import importlib.util

import torch

from unitune.errors import UnituneError
from unitune.infer.engine import Completion, Engine, PromptTooLong, SamplingParams
from unitune.models.prepack import Prepacked, can_prepack

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def completion_seed(seed: int, prompt: int, copy: int) -> int:
    return (seed * 1_000_003 + prompt * 1_009 + copy) % (2**63)


class HFRollout:
    """Group generation on an in-process `Engine`: over `model` itself, or over a copy in `dtype`."""

    def __init__(self, model, tokenizer, *, chat_template: str | None = None, max_batch_size: int = 256,
                 dtype: torch.dtype | None = None, prepack: bool = False):
        self.model = model
        net = getattr(model, "module", model)  # through DDP
        first = next(net.parameters())
        own, target = first.dtype, dtype or first.dtype
        prepack = prepack and can_prepack(target, first.device) and not _dora(net)
        self.copy = PolicyCopy(net, target, prepack=prepack) if target != own or prepack else None
        self.engine = Engine(self.copy.model if self.copy else net, tokenizer, chat_template=chat_template,
                             max_batch_size=max_batch_size)
        self.engine.adapters = []  # no per-row adapter routing: sample from the model as it is (its active adapter)
        self.max_batch_size = max_batch_size

    def generate(self, prompts: list[list[int]], n: int, params: SamplingParams, *, seed: int = 0,
                 shared_prefix: bool = True) -> list[Completion]:
        """n completions per prompt, grouped: [p0c0, p0c1, ..., p1c0, ...]. Completion j of prompt i draws
        from seed completion_seed(seed, i, j), whatever else shares its batch."""
        import dataclasses

        params.check()
        training = self.model.training
        self.model.eval()
        per_chunk = max(1, self.max_batch_size // n)
        out: list[Completion] = []
        try:
            with torch.inference_mode():
                if self.copy is not None:
                    self.copy.refresh()
                for start in range(0, len(prompts), per_chunk):
                    chunk = prompts[start:start + per_chunk]
                    rows = [dataclasses.replace(params, seed=completion_seed(seed, start + i, j))
                            for i in range(len(chunk)) for j in range(n)]
                    out += self.engine.generate_groups(chunk, n, rows, shared_prefix=shared_prefix)
        except PromptTooLong as err:
            raise UnituneError(f"{err}; lower data.max_length") from None
        finally:
            if self.copy is not None:
                self.copy.release()
            self.model.train(training)
        return out


def _dora(policy) -> bool:
    return bool(getattr(getattr(policy, "peft_config", {}).get("default"), "use_dora", False))


class PolicyCopy:
    """A plain transformers model in a given dtype holding the policy's current weights (LoRA merged);
    with `prepack`, its linear layers run from weights re-laid out for oneDNN (see the module docstring)."""

    def __init__(self, policy, dtype: torch.dtype, *, prepack: bool = False):
        from transformers import AutoModelForCausalLM

        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        if _dora(policy):
            raise UnituneError("grpo.rollout_dtype: a DoRA policy cannot be copied into another dtype yet; "
                               "use --grpo.rollout_dtype float32 (generate from the model itself)")
        self.model = AutoModelForCausalLM.from_config(base.config, dtype=dtype).to(next(base.parameters()).device)
        self.model.generation_config = base.generation_config
        self.model.eval().requires_grad_(False)
        self.shapes = {name: p.shape for name, p in self.model.named_parameters()}
        self.base = base
        self.packed = Prepacked(self.model) if prepack else None

    def weights(self):
        """(name in the plain model, tensor) for each of the policy's weights, each LoRA layer's merged
        (W + its adapters' delta) one layer at a time, so no second full set of weights is built."""
        from peft.tuners.lora import LoraLayer

        lora = {name: m for name, m in self.base.named_modules() if isinstance(m, LoraLayer) and not m.merged}
        for key, value in self.base.state_dict(keep_vars=True).items():
            if ".lora_" in key:
                continue
            owner, _, leaf = key.replace(".base_layer.", ".").rpartition(".")
            if leaf == "weight" and owner in lora:
                layer = lora[owner]
                value = value + sum(layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A)
            yield key.replace(".base_layer.", "."), value

    def release(self) -> None:
        """Free the copy's weights while the policy trains (the next refresh writes them anew): they
        are only read during a rollout, and training's activations need the memory."""
        for p in self.model.parameters():
            p.data = torch.empty(0, dtype=p.dtype, device=p.device)
        if self.packed is not None:
            self.packed.release()

    def refresh(self) -> None:
        """Copy the policy's current weights into the plain model, casting to its dtype."""
        for name, p in self.model.named_parameters():
            if p.numel() == 0 and self.shapes[name].numel():
                p.data = torch.empty(self.shapes[name], dtype=p.dtype, device=p.device)
        own = self.model.state_dict()  # the copy's own tensors, written in place
        tied = set(getattr(self.model, "_tied_weights_keys", None) or {})
        seen = set()
        for key, value in self.weights():
            if key not in own:
                raise UnituneError(f"grpo.rollout_dtype: the policy's weight {key} has no place in a plain copy; "
                                   "use --grpo.rollout_dtype float32 --grpo.rollout_prepack false")
            own[key].copy_(value)
            seen.add(key)
        missing = set(own) - seen - tied
        if missing:
            raise UnituneError(f"grpo.rollout_dtype: a plain copy needs weights the policy lacks ({sorted(missing)[:3]}); "
                               "use --grpo.rollout_dtype float32 --grpo.rollout_prepack false")
        if self.packed is not None:
            self.packed.pack()


def make_rollout(kind: str, model, tokenizer, *, chat_template: str | None = None, max_batch_size: int = 256,
                 dtype: torch.dtype | None = None, prepack: bool = False):
    if kind in ("auto", "hf"):
        return HFRollout(model, tokenizer, chat_template=chat_template, max_batch_size=max_batch_size, dtype=dtype,
                         prepack=prepack)
    if kind == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise UnituneError("grpo.engine vllm: vLLM is not installed (pip install vllm; it needs a CUDA GPU); "
                               "use --grpo.engine hf (the in-process engine)")
        raise UnituneError("grpo.engine vllm: the colocated vLLM engine is not wired in yet; "
                           "use --grpo.engine hf (the in-process engine)")
    raise UnituneError(f"grpo.engine must be auto, hf or vllm, not '{kind}'")


__all__ = ["Completion", "HFRollout", "SamplingParams", "completion_seed", "make_rollout"]
