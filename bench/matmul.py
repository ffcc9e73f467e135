"""The machine's matmul rate, the denominator of MFU: square matmuls in fp32 and bf16 (CPU: 2048^2 with
torch's default threads; cuda: 8192^2), best of several timed repeats. Prints JSON {"fp32": FLOP/s,
"bf16": FLOP/s, ...}; bf16 is null on a CPU without bf16 arithmetic (the suite runs no bf16 cell there).

    .venv/bin/python bench/matmul.py shapes [TOKENS]   # fp32, SmolLM2-135M's linears at TOKENS rows (1000)

prints instead the rate of each product a training step makes of each linear: the forward X W^T, the
input gradient dY W and the weight gradient dY^T X, against the square product, to tell whether a
step's matmuls run at the machine's rate; each product also through oneDNN's linear kernel
(`torch.ops.mkldnn._linear_pointwise`, what `train.onednn_linears` runs; `F.linear` and `@` go to MKL's
GEMM on CPU), and the square product both ways."""

import json
import sys
import time

import torch


def onednn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b^T through oneDNN's linear kernel, as `train.onednn_linears` runs it."""
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


def rate(dtype: torch.dtype, device: str = "cpu", repeats: int = 5, seconds: float = 0.5) -> float:
    """The best of `repeats` timed runs; on CPU in fp32 the better of MKL's GEMM (`torch.matmul`) and oneDNN's
    linear (what `train.onednn_linears` runs; 2.2x MKL's rate on a Zen 5, BENCHMARKS.md)."""
    n = 8192 if device == "cuda" else 2048
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    products = [torch.matmul]
    if device == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available():
        products.append(onednn)
    best = 0.0
    for product in products:
        best = max(best, _best(product, a, b, n, device, repeats, seconds))
    return best


def _best(product, a, b, n: int, device: str, repeats: int, seconds: float) -> float:
    product(a, b)  # warm-up (oneDNN / cuBLAS pick their kernel)
    best = 0.0
    for _ in range(repeats):
        k, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            product(a, b)
            k += 1
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 * k / (time.perf_counter() - t))
    return best


def bf16_supported() -> bool:
    """AVX-512 BF16 or AMX: the CPU has bf16 arithmetic, so bf16 autocast can pay."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def shapes(tokens: int) -> None:
    """fp32 GFLOP/s of each linear's three training products, SmolLM2-135M's shapes (in -> out)."""
    def timed(fn, flops: float, repeats: int = 20) -> float:
        fn(), fn()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        return flops * repeats / (time.perf_counter() - t) / 1e9

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    print(f"{tokens} rows, {torch.get_num_threads()} threads; square 2048^2: {timed(lambda: a @ b, 2 * n**3, 10):.0f} GFLOP/s "
          f"(MKL), {timed(lambda: onednn(a, b), 2 * n**3, 10):.0f} (oneDNN); each product MKL / oneDNN:")
    for name, (n_in, n_out) in {"q, o": (576, 576), "k, v": (576, 192), "gate, up": (576, 1536),
                                "down": (1536, 576)}.items():
        x, w, dy = torch.randn(tokens, n_in), torch.randn(n_out, n_in), torch.randn(tokens, n_out)
        flops = 2 * tokens * n_in * n_out
        print(f"  {name:9s} {n_in:5d} -> {n_out:5d}: "
              f"forward {timed(lambda: x @ w.t(), flops):4.0f} / {timed(lambda: onednn(x, w), flops):4.0f}, "
              f"input gradient {timed(lambda: dy @ w, flops):4.0f} / {timed(lambda: onednn(dy, w.t()), flops):4.0f}, "
              f"weight gradient {timed(lambda: dy.t() @ x, flops):4.0f} / "
              f"{timed(lambda: onednn(dy.t(), x.t()), flops):4.0f} GFLOP/s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["shapes"]:
        shapes(int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
        sys.exit(0)
    device = sys.argv[1] if len(sys.argv) > 1 else "cpu"  # cpu, or cuda (8192^2, the GPU's bf16 peak)
    out = {"device": device, "threads": torch.get_num_threads(), "fp32": rate(torch.float32, device),
           "bf16_cpu": bf16_supported()}
    # a CPU without bf16 arithmetic emulates it (~0.3 GFLOP/s on an AVX2 Zen 3: a minute per 2048^2 matmul)
    out["bf16"] = rate(torch.bfloat16, device) if device != "cpu" or out["bf16_cpu"] else None
    json.dump(out, sys.stdout)
    print()
