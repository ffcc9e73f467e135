"""Plain vs pre-packed linear layers on this CPU: SmolLM2-135M's 210 linear layers (30 layers of
q, k, v, o, gate, up, down; distinct weights, so none stays in cache) and its 49k-wide head, at the row
counts of decoding (1-64) and of prefill / training (600, 2600), in fp32 and bf16.

    .venv/bin/python bench/prepack_linears.py

plain = `F.linear` on the [out, in] weight (MKL's GEMM); packed = `torch.ops.mkldnn._linear_pointwise`
on the weight re-laid out once by `torch.ops.mkldnn._reorder_linear_weight` (unitune/models/prepack.py).
"""

import time

import torch

LAYER = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]


def ms(fn, repeats: int) -> float:
    fn()
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - began) / repeats * 1e3


def main() -> None:
    from unitune.models.prepack import ROWS, can_prepack

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| dtype | rows | 210 linears plain ms | packed ms | head plain ms | packed ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for dtype in (torch.float32, torch.bfloat16):
        if not can_prepack(dtype, torch.device("cpu")):
            print(f"| {dtype} | no packed kernels in this torch build | | | | |")
            continue
        weights = [torch.randn(o, i, dtype=dtype) * 0.02 for _ in range(30) for o, i in LAYER]
        head = torch.randn(49152, 576, dtype=dtype) * 0.02
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, ROWS) for w in weights]
        packed_head = torch.ops.mkldnn._reorder_linear_weight(head, ROWS)

        def linear(x, w):
            return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")

        for rows in (1, 16, 64, 600, 2600):
            repeats = 1 if rows >= 600 else 5
            x = {i: torch.randn(rows, i, dtype=dtype) for i in (576, 1536)}
            with torch.inference_mode():
                a = ms(lambda: [torch.nn.functional.linear(x[w.shape[1]], w) for w in weights], repeats)
                b = ms(lambda: [linear(x[w.shape[1]], p) for w, p in zip(weights, packed)], repeats)
                c = ms(lambda: torch.nn.functional.linear(x[576], head), repeats)
                d = ms(lambda: linear(x[576], packed_head), repeats)
            print(f"| {str(dtype)[6:]} | {rows} | {a:.1f} | {b:.1f} | {c:.1f} | {d:.1f} |", flush=True)


if __name__ == "__main__":
    main()
