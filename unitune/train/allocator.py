"""The CPU memory allocator while training: keep freed memory for reuse, or hand it back.

glibc's malloc serves every block over 32 MiB with mmap and returns it to the kernel on free,
and trims the top of its heap whenever enough of it is free. A training step allocates and
frees the same large tensors every step — in full fine-tuning the [vocab, hidden] embedding
gradient, its bf16 copies under autocast, every weight's gradient, the LM head's logit chunks —
so each step takes those pages back from the kernel as fresh, zero-filled page faults: 20-30%
of a full fine-tuning step on the benchmark machine went to the kernel (bench/memory_timeline.py,
BENCHMARKS.md). `keep` tells malloc to serve everything from its heap and never trim it while
training runs, so freed blocks are reused (as the CUDA caching allocator reuses them); the
process's resident memory then stays near its peak until training ends, when the free part is
handed back. `release` leaves glibc's defaults. `trim` leaves them too and hands the heap's free
pages back after every optimizer step (`malloc_trim(0)`), so memory freed within a step is not held
into the next one: under bf16 the resident set otherwise creeps up step after step (a 33-step
checkpointed LoRA run: step peak 2.26 -> 1.77 GiB, +6% time; in fp32 it barely moves the peak).
`auto` trims for any run with gradient checkpointing (one that chose memory over speed: checkpointed
full fine-tuning with `train.optimizer_in_backward` peaked at 2.6 GiB trimmed against 3.15 kept, 11% slower;
with clipping, 3.10 against 3.07 at the same speed), keeps for full fine-tuning otherwise, and for LoRA
otherwise keeps under mimalloc (below) and releases under glibc, where LoRA's steps allocate little that is
large (keep: no gain, a peak 0.1-0.3 GiB higher; trim: -0.2 GiB for 7-20% of the step).

These are glibc's knobs (`mallopt`). The `unitune` command runs on mimalloc where it is installed
(unitune/malloc.py), which reuses memory by itself but hands freed pages back to the kernel 10 ms
after they are freed: the same page faults, ~20% of a full fine-tuning step (6 steps: 81-83 s against
63-68 s never handing back; BENCHMARKS.md). Never handing back, though, keeps every block a longer
batch once needed: over 8 steps of varying length the peak reached 3.08 GiB where what was live peaked
at ~2.9. So under mimalloc `keep` sets its purge delay to 3 s while training runs: what a step frees
is in use again within the step or the next (activations become gradients, then the next forward's
activations), and what stays free longer goes back. The same 8 steps, two alternating runs each:
62-69 s at a 2.97-2.98 GiB peak, against 64-66 s at 3.08 never handing back (1 s: 67-70 s, 2.95).
`trim` and `release` leave mimalloc's delay as it is.
Elsewhere (macOS, musl, jemalloc, tcmalloc) the setting does nothing.

oneDNN, which runs bf16 matmuls on CPU, builds a kernel for every new shape and caches up to 1024 of
them, and PyTorch's layer over it (ideep) keeps its own cache of up to 1024 more; each holds ~0.25 MiB
per matmul shape. Every batch has a new length, so over a run both only grow: a checkpointed bf16
LoRA run's step peak went from 1.07 to 1.77 GiB over 33 steps, and an unpacked one's memory in use
after a step from 0.39 to 0.70 GiB over 21. A step needs a few dozen kernels (its shapes in forward
and backward), so `cap_kernel_cache` keeps 64 in each, at the same speed (BENCHMARKS.md). A capacity
already set in the environment (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`, `LRU_CACHE_CAPACITY`) is left as it is.
"""

import ctypes
import functools
import os
import sys
from contextlib import contextmanager

from unitune.malloc import active

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's defaults, restored after training
_DEFAULT_MMAP_MAX = 65536


KERNEL_CACHE = 64  # kernels kept in each cache (their default: 1024)
KERNEL_CACHES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY",  # oneDNN's own
                 "LRU_CACHE_CAPACITY")  # ideep's, PyTorch's layer over oneDNN


def cap_kernel_cache(capacity: int = KERNEL_CACHE) -> list[str]:
    """Bound oneDNN's and ideep's kernel caches, each unless the environment sets it; the variables set.
    Both are read when the first kernel is built, so this must run before the process's first bf16 matmul."""
    capped = [name for name in KERNEL_CACHES if name not in os.environ]
    for name in capped:
        os.environ[name] = str(capacity)
    return capped


@functools.cache  # looked up once: trim_heap runs after every step
def _glibc():
    """The C library, where it is glibc and its malloc is the one in use; else None."""
    if not sys.platform.startswith("linux") or active() != "system":
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own C library
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        return libc
    except (OSError, AttributeError):
        return None


MI_OPTION_PURGE_DELAY = 15  # mimalloc.h's mi_option_purge_delay (its place since mimalloc 2.0)
KEEP_PURGE_DELAY_MS = 3000  # keep: freed pages go back to the kernel after 3 s unused (mimalloc's default: 10 ms)


@functools.cache
def _mimalloc():
    """mimalloc's API, where it is the malloc in use (2.0 or later); else None."""
    if not sys.platform.startswith("linux") or active() != "mimalloc":
        return None
    try:
        lib = ctypes.CDLL(None)
        lib.mi_option_get.restype = ctypes.c_long
        lib.mi_option_set.argtypes = (ctypes.c_int, ctypes.c_long)
        return lib if lib.mi_version() >= 200 else None
    except (OSError, AttributeError):
        return None


def choose(mode: str, *, device_type: str, full_finetune: bool, checkpointing: bool = False,
           malloc: str | None = None) -> str:
    """What `train.cpu_allocator` = mode does in this run: keep, trim or release. `malloc`: the one in use
    (`unitune.malloc.active()` unless given). Under mimalloc `keep` only delays handing freed pages back, so
    LoRA keeps too: its steps' fresh buffers (a rank-8 product's [tokens, 1536] output, the scaled copies
    peft makes) otherwise come back as page faults, 10x a product's own time on an Intel CPU with AMX, where
    keeping took fp32 SFT LoRA from 326 to 367 tokens/s at +0.01 GiB (BENCHMARKS.md). Under glibc's malloc
    it holds the whole heap instead, for no gain in LoRA and a peak 0.1-0.3 GiB higher, so LoRA releases."""
    if mode != "auto":
        return mode
    if device_type != "cpu":
        return "release"
    if checkpointing:
        return "trim"
    return "keep" if full_finetune or (malloc or active()) == "mimalloc" else "release"


def trim_heap() -> None:
    """Hand the heap's free pages back to the kernel now (glibc); elsewhere nothing."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@contextmanager
def cpu_allocator(mode: str, *, device_type: str, full_finetune: bool, checkpointing: bool = False):
    """Within the block, malloc keeps freed memory for reuse when the mode is keep; yields what it does
    ("keep", "trim": the caller trims after every step, or "release"), "release" where the malloc in use
    is neither glibc's nor mimalloc (and "release" for trim under mimalloc)."""
    chosen = choose(mode, device_type=device_type, full_finetune=full_finetune, checkpointing=checkpointing)
    mi = _mimalloc()
    if mi is not None and chosen == "keep":
        delay = mi.mi_option_get(MI_OPTION_PURGE_DELAY)
        mi.mi_option_set(MI_OPTION_PURGE_DELAY, KEEP_PURGE_DELAY_MS)
        try:
            yield "keep"
        finally:
            mi.mi_option_set(MI_OPTION_PURGE_DELAY, delay)
        return
    libc = _glibc()
    if libc is None or chosen == "release":
        yield "release"
        return
    if chosen == "trim":
        yield "trim"
        return
    kept = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    try:
        yield "keep" if kept else "release"
    finally:
        libc.mallopt(M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)  # hand the heap's free memory back now that training is over
