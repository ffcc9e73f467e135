"""Which layout of a chunk's logits runs the LM head faster: [rows, vocab] (hidden @ W.T) or
[vocab, rows] (W @ hidden.T), for the two ways through the head in unitune/objectives/head.py.

    .venv/bin/python bench/head_layout.py [--rows 256] [--vocab 49152] [--hidden 576] [--repeats 10]
    .venv/bin/python bench/head_layout.py --baseline DIR   # and A/B against DIR's unitune/objectives/head.py

(DIR: another checkout, e.g. `git worktree add /tmp/before 6ea3454`, the commit before the layout change.)

Per chunk, in milliseconds, best-of-three means over `--repeats` calls, both layouts alternated:
- frozen: logits, the in-place softmax and d logp / d h (a LoRA forward's head, per chunk);
- trained: a trained head's backward chunk (logits again, softmax, d h and the weight's gradient);
and then unitune's own `token_logps` forward + backward over 4 chunks, frozen and trained, alternated
three times with the baseline's where one is given; and the LM loss through a trained head, per token
(`token_logps`) against summed (`token_nll_sum`, gradients made in forward), at 1.33 and 4 chunks.
fp32, torch's default threads, on the malloc the `unitune` command runs on (unitune/malloc.py).
"""

import argparse
import importlib.util
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])
from unitune.malloc import preload  # noqa: E402

preload()


def timed(fn, repeats: int) -> float:
    """Milliseconds per call: the best of three means over `repeats` calls, after two warm-up calls."""
    fn(), fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t) / repeats * 1e3)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--baseline", default="", help="a checkout whose unitune/objectives/head.py to time against")
    args = p.parse_args()

    import torch

    from unitune.objectives.head import token_logps

    torch.manual_seed(0)
    w = torch.randn(args.vocab, args.hidden) * 0.02
    h = torch.randn(args.rows, args.hidden)
    y = torch.randint(0, args.vocab, (args.rows,))
    rows = torch.arange(args.rows)
    grad_w = torch.zeros_like(w)

    def frozen(vocab_major: bool):
        z = torch.mm(w, h.T) if vocab_major else torch.mm(h, w.T)
        d = 0 if vocab_major else 1
        top = z.amax(d, keepdim=True)
        p = z.sub_(top).exp_()
        p = p.div_(p.sum(d, keepdim=True))
        if vocab_major:
            p[y, rows] -= 1.0
            return torch.mm(p.T, w)
        p[rows, y] -= 1.0
        return torch.mm(p, w)

    def trained(vocab_major: bool):
        z = torch.mm(w, h.T) if vocab_major else torch.mm(h, w.T)
        d = 0 if vocab_major else 1
        g = z.sub_(z.logsumexp(d, keepdim=True)).exp_()
        if vocab_major:
            g[y, rows] -= 1.0
            grad_w.addmm_(g, h)
            return torch.mm(g.T, w)
        g[rows, y] -= 1.0
        grad_w.addmm_(g.T, h)
        return torch.mm(g, w)

    assert torch.allclose(frozen(True), frozen(False), atol=1e-5)
    print(f"{args.rows} rows, head {args.vocab} x {args.hidden}, fp32, {torch.get_num_threads()} threads: ms per chunk")
    for name, fn in (("frozen (logits, softmax, d logp / d h)", frozen), ("trained backward (+ weight gradient)", trained)):
        first, second = timed(lambda: fn(False), args.repeats), timed(lambda: fn(True), args.repeats)
        again = timed(lambda: fn(False), args.repeats)
        print(f"  {name}: [rows, vocab] {min(first, again):.0f} ({first:.0f}, {again:.0f})   "
              f"[vocab, rows] {second:.0f}   x{min(first, again) / second:.2f}")

    n = 4 * args.rows
    hidden = torch.randn(n, args.hidden, requires_grad=True)
    targets = torch.randint(0, args.vocab, (n,))
    versions = {"this checkout": token_logps}
    if args.baseline:
        spec = importlib.util.spec_from_file_location("baseline_head", Path(args.baseline) / "unitune/objectives/head.py")
        baseline = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(baseline)
        versions = {"baseline": baseline.token_logps, **versions}
    for name, trains in (("frozen head", False), ("trained head", True)):
        head = torch.nn.Linear(args.hidden, args.vocab, bias=False)
        head.weight.data.copy_(w)
        head.weight.requires_grad_(trains)

        def step(fn):
            logps, _ = fn(head, hidden, targets)
            logps.sum().backward()
            hidden.grad = head.weight.grad = None

        times = {label: [] for label in versions}
        for _ in range(3 if args.baseline else 1):
            for label, fn in versions.items():
                times[label].append(timed(lambda: step(fn), max(1, args.repeats // 4)))
        print(f"  token_logps, {n} rows, forward + backward, {name}: "
              + "   ".join(f"{label} {', '.join(f'{t:.0f}' for t in ts)} ms" for label, ts in times.items()))

    # the LM loss through a trained head: the per-token path (logits again in backward) against the summed
    # NLL (gradients made in forward, token_nll_sum), alternated three times, at one and at four chunks
    from unitune.objectives.head import token_nll_sum

    head = torch.nn.Linear(args.hidden, args.vocab, bias=False)
    head.weight.data.copy_(w)
    ways = {"per-token": lambda hh, yy: -token_logps(head, hh, yy)[0].sum(),
            "summed": lambda hh, yy: token_nll_sum(head, hh, yy)[0]}
    for n in (args.rows + args.rows // 3, 4 * args.rows):
        hidden = torch.randn(n, args.hidden, requires_grad=True)
        targets = torch.randint(0, args.vocab, (n,))

        def step(fn):
            (fn(hidden, targets) / n).backward()
            hidden.grad = head.weight.grad = None

        times = {label: [] for label in ways}
        for _ in range(3):
            for label, fn in ways.items():
                times[label].append(timed(lambda: step(fn), max(1, args.repeats // 4)))
        print(f"  LM loss, trained head, {n} rows, forward + backward: "
              + "   ".join(f"{label} {', '.join(f'{t:.0f}' for t in ts)} ms" for label, ts in times.items()))


if __name__ == "__main__":
    main()
