"""What a trained LM head holds at its peak, and how long it takes: the summed NLL (`token_nll_sum`, the
SFT and pretraining path of full fine-tuning) over one pass's scored rows, under bf16 autocast and in fp32.

    .venv/bin/python bench/head_memory.py [--rows 1200] [--vocab 49152] [--hidden 576] [--repeats 6] [--purge-delay MS]

Each call's peak is the kernel's high-water mark (VmHWM, reset just before the call: Linux) above the
resident set before it, and what it leaves is the resident set after it (the weight's gradient, d loss / d
hidden). Run on the malloc the `unitune` command runs on, by default handing freed pages back at once
(mimalloc's purge delay 0), so resident memory is what is live; every buffer then page-faults in afresh,
so for times as training sees them run again with `--purge-delay 3000` (what `train.cpu_allocator keep`
sets: freed pages reused; the memory figures then count what is kept). Under bf16 the weight's gradient takes
each chunk's bf16 share `WEIGHT_GRAD_ROWS` vocabulary rows at a time (unitune/objectives/head.py); the
script alternates that with the whole [vocab, hidden] product at once (rows = vocab, as before
2026-12-02), and says whether the two gradients are the same bits.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if "--purge-delay" in sys.argv:  # read when mimalloc starts: set before the re-exec below
    os.environ["MIMALLOC_PURGE_DELAY"] = sys.argv[sys.argv.index("--purge-delay") + 1]
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
sys.path[0] = str(Path(__file__).resolve().parents[1])
from unitune.malloc import active, preload  # noqa: E402

preload()


def _status(field: str) -> float:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0]) / 1024  # kB -> MB


def main() -> None:
    import torch

    import unitune.objectives.head as head_module

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1200, help="scored rows in the pass (the suite's longest: ~1,200)")
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--purge-delay", type=int, default=0, help="mimalloc's, in ms (0: resident = live)")
    args = p.parse_args()
    print(f"malloc: {active()} (purge delay {os.environ['MIMALLOC_PURGE_DELAY']} ms), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.rows} rows, head {args.vocab} x {args.hidden}, "
          f"chunks of {head_module.CHUNK}")
    torch.manual_seed(0)
    head = torch.nn.Linear(args.hidden, args.vocab, bias=False)
    hidden = torch.randn(args.rows, args.hidden)
    targets = torch.randint(0, args.vocab, (args.rows,))
    blocked = head_module.WEIGHT_GRAD_ROWS
    variants = [("bf16", blocked), ("bf16", args.vocab), ("fp32", blocked)]
    seen = {v: ([], [], []) for v in variants}
    grads = {}
    for _ in range(args.repeats):
        for precision, rows in variants:
            head_module.WEIGHT_GRAD_ROWS = rows
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                before = _status("VmRSS")
                Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
                began = time.perf_counter()
                nll, _ = head_module.token_nll_sum(head, hidden, targets)
                took = time.perf_counter() - began
                peak, after = _status("VmHWM") - before, _status("VmRSS") - before
            grads[precision, rows] = torch.autograd.grad(nll, head.weight)[0]
            for kept, value in zip(seen[precision, rows], (peak, after, took * 1e3)):
                kept.append(value)
            del nll
    for (precision, rows), (peaks, afters, times) in seen.items():
        how = "the whole product" if rows >= args.vocab else f"{rows} rows at a time"
        if precision == "fp32":
            how = "addmm_ into the gradient"
        print(f"{precision} {how:>22}: peak +{statistics.median(peaks):4.0f} MB, leaves +{statistics.median(afters):4.0f}"
              f" MB, {statistics.median(times):4.0f} ms (medians of {args.repeats}; times {min(times):.0f}-{max(times):.0f})")
    same = torch.equal(grads["bf16", blocked], grads["bf16", args.vocab])
    print(f"bf16 weight gradient, blocks against the whole product: {'the same bits' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
