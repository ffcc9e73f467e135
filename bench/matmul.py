"""The machine's matmul rate, the denominator of MFU: square matmuls in fp32 and bf16 (CPU: 2048^2 with
torch's default threads; cuda: 8192^2), best of several timed repeats. Prints JSON {"fp32": FLOP/s,
"bf16": FLOP/s, ...}; bf16 is null on a CPU without bf16 arithmetic (the suite runs no bf16 cell there)."""

import json
import sys
import time

import torch


def rate(dtype: torch.dtype, device: str = "cpu", repeats: int = 5, seconds: float = 0.5) -> float:
    n = 8192 if device == "cuda" else 2048
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    torch.matmul(a, b)  # warm-up (oneDNN / cuBLAS pick their kernel)
    best = 0.0
    for _ in range(repeats):
        k, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            torch.matmul(a, b)
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


if __name__ == "__main__":
    device = sys.argv[1] if len(sys.argv) > 1 else "cpu"  # cpu, or cuda (8192^2, the GPU's bf16 peak)
    out = {"device": device, "threads": torch.get_num_threads(), "fp32": rate(torch.float32, device),
           "bf16_cpu": bf16_supported()}
    # a CPU without bf16 arithmetic emulates it (~0.3 GFLOP/s on an AVX2 Zen 3: a minute per 2048^2 matmul)
    out["bf16"] = rate(torch.bfloat16, device) if device != "cpu" or out["bf16_cpu"] else None
    json.dump(out, sys.stdout)
    print()
