"""A proposed LoRA forward against peft's, on SmolLM2-135M's layer shapes: same outputs and gradients, how much faster.

    .venv/bin/python bench/lora_fused.py [LAYERS] [TOKENS] [REPEATS]      (defaults: 4 1024 5)

peft computes, per adapted linear layer,  y = base(x) + B(A(x)) * s : the scale s multiplies the full
[tokens, out_features] product and the sum is one more full-width pass (and both again in backward).
The proposal scales the rank-r intermediate instead and fuses the add into the B matmul:

    y = addmm(base(x), (x A^T) * s, B^T)        (identical math; s touches tokens x r numbers)

Random-initialised decoder layers of SmolLM2-135M's shape (hidden 576, MLP 1536, 9 heads / 3 KV
heads), LoRA r=8 on every linear layer, forward + backward of one batch, the two forwards timed in
alternation; prints the median times, the speed-up of the layers alone, and the largest differences
of outputs and LoRA gradients.
"""

import statistics
import sys
import time

import torch


def fused_forward(module, x, *args, **kwargs):
    """peft's lora.Linear forward for the plain case (one active vanilla adapter, no dropout), else peft's."""
    from peft.tuners.lora import Linear

    names = module.active_adapters
    plain = (not module.disable_adapters and not module.merged and "adapter_names" not in kwargs
             and len(names) == 1 and names[0] in module.lora_A and names[0] not in module.lora_variant
             and isinstance(module.lora_dropout[names[0]], torch.nn.Identity))
    if not plain:
        return Linear.forward(module, x, *args, **kwargs)
    name = names[0]
    result = module.base_layer(x, *args, **kwargs)
    a, b = module.lora_A[name].weight, module.lora_B[name].weight
    h = torch.nn.functional.linear(x.to(a.dtype), a) * module.scaling[name]  # [..., r]
    out = torch.addmm(result.reshape(-1, result.shape[-1]), h.reshape(-1, h.shape[-1]), b.t())
    return out.view(result.shape)


def build(layers: int):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=layers, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=1024, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0))
    for n, p in model.named_parameters():  # B starts at zero in peft: give it values so the check means something
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    return model


def step(model, ids):
    model.zero_grad(set_to_none=True)
    hidden = model(input_ids=ids, output_hidden_states=True, logits_to_keep=torch.empty(0, dtype=torch.long)
                   ).hidden_states[-1]
    loss = hidden.pow(2).mean()
    loss.backward()
    return hidden.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def main(layers: int = 4, tokens: int = 1024, repeats: int = 5) -> None:
    from peft.tuners.lora import Linear

    model = build(layers)
    ids = torch.randint(0, 1024, (4, tokens // 4))
    lora_layers = [m for m in model.modules() if isinstance(m, Linear)]
    times = {"peft": [], "fused": []}
    results = {}
    for r in range(repeats + 1):
        for kind in ("peft", "fused"):
            for m in lora_layers:
                if kind == "fused":
                    m.forward = fused_forward.__get__(m)
                else:
                    m.__dict__.pop("forward", None)
            t = time.perf_counter()
            results[kind] = step(model, ids)
            if r:  # the first round warms up
                times[kind].append(time.perf_counter() - t)
    (h0, g0), (h1, g1) = results["peft"], results["fused"]
    dh = (h0 - h1).abs().max().item()
    dg = max((g0[n] - g1[n]).abs().max().item() / max(g0[n].abs().max().item(), 1e-12) for n in g0)
    p, f = statistics.median(times["peft"]), statistics.median(times["fused"])
    print(f"{layers} layers, {tokens} tokens, {torch.get_num_threads()} thread(s), {len(lora_layers)} LoRA layers: "
          f"peft {p * 1000:.0f} ms, fused {f * 1000:.0f} ms per forward+backward ({p / f:.2f}x); "
          f"max |d hidden| {dh:.1e}, max relative |d grad| {dg:.1e}")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:4]])
