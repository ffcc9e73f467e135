"""How CPU attention costs with each way of keeping packed examples apart (one SmolLM2-135M layer's shapes).

    OMP_NUM_THREADS=1 python bench/sdpa_mask.py [--dtype bf16|fp32] [--length 512] [--segments 2]

Times forward + backward of scaled_dot_product_attention on [4, 9 heads, L, 64] queries and 3 key/value
heads, for: is_causal (a padded batch without padding), a 4-D boolean block-causal mask as packing
passes it, the same as an additive float mask, and one is_causal call per packed example.
"""

import argparse
import time

import torch
import torch.nn.functional as F


def timed(fn, repeats=5):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--segments", type=int, default=2)
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    b, h, kv, d, L = 4, 9, 3, 64, args.length
    torch.manual_seed(0)
    q = torch.randn(b, h, L, d, dtype=dtype, requires_grad=True)
    k = torch.randn(b, kv, L, d, dtype=dtype, requires_grad=True)
    v = torch.randn(b, kv, L, d, dtype=dtype, requires_grad=True)
    bounds = [round(i * L / args.segments) for i in range(args.segments + 1)]
    segment = torch.zeros(L, dtype=torch.long)
    for i in range(args.segments):
        segment[bounds[i]:bounds[i + 1]] = i
    block = (segment[:, None] == segment[None, :]) & torch.ones(L, L, dtype=torch.bool).tril()
    bool_mask = block[None, None].expand(b, 1, L, L)
    float_mask = torch.zeros(b, 1, L, L, dtype=dtype).masked_fill(~bool_mask, float("-inf"))

    def run(**kw):
        def fn():
            out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw)
            out.sum().backward()
        return fn

    def per_segment():
        parts = [F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True,
                                                enable_gqa=True) for s, e in zip(bounds, bounds[1:])]
        torch.cat(parts, 2).sum().backward()

    def repeat_kv_bool():
        kk, vv = k.repeat_interleave(h // kv, 1), v.repeat_interleave(h // kv, 1)
        F.scaled_dot_product_attention(q, kk, vv, attn_mask=bool_mask).sum().backward()

    rows = [("is_causal (no mask)", run(is_causal=True)),
            ("4-D bool block mask", run(attn_mask=bool_mask)),
            ("4-D bool block mask, kv repeated", repeat_kv_bool),
            ("4-D float block mask", run(attn_mask=float_mask)),
            (f"is_causal per example ({args.segments} per row)", per_segment)]
    print(f"{args.dtype}, batch {b}, length {L}, {args.segments} examples per row, {torch.get_num_threads()} thread(s)")
    base = None
    for name, fn in rows:
        t = timed(fn)
        base = base or t
        print(f"  {name:42s} {t * 1e3:8.1f} ms  ({t / base:.2f}x)")


if __name__ == "__main__":
    main()
