"""train.cpu_allocator: with `keep`, memory freed during training stays in the process and is
reused, instead of being handed back to the kernel and faulted in again page by page; with `trim`,
the heap's free pages go back after every step."""

import ctypes
import os
import subprocess
import sys

import pytest

from unitune.malloc import library
from unitune.train.allocator import KEEP_PURGE_DELAY_MS, _glibc, choose

pytestmark = pytest.mark.skipif(_glibc() is None, reason="the allocator knobs are glibc's")

PROBE = """
import resource, sys, torch
from unitune.train.allocator import cpu_allocator

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def cycle():  # page faults of allocating, filling and freeing a 64 MiB tensor (and a small one)
    before = faults()
    big, small = torch.ones(16 * 2**20), torch.ones(1000)
    del big, small
    return faults() - before

with cpu_allocator(sys.argv[1], device_type="cpu", full_finetune=True) as mode:
    inside = [cycle() for _ in range(12)]
print(mode == "keep", *inside, cycle(), flush=True)
"""

PAGES = 16 * 2**20 * 4 // 4096  # pages of the 64 MiB tensor


def probe(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    kept, *faults = out.stdout.split()
    return kept == "True", [int(f) for f in faults[:-1]], int(faults[-1])


def test_keep_reuses_freed_memory_then_restores_the_default():
    kept, inside, after = probe("keep")
    assert kept
    assert sum(inside[-4:]) < PAGES // 10, inside  # once the heap has grown, freed blocks are reused
    assert after >= PAGES, after  # after training, large blocks are mapped and returned again


def test_release_faults_every_page_in_again():
    kept, inside, _ = probe("release")
    assert not kept
    assert all(f >= PAGES for f in inside), inside


def test_auto_keeps_for_full_finetuning_and_for_lora_on_mimalloc_and_trims_checkpointed_runs():
    assert choose("auto", device_type="cpu", full_finetune=True) == "keep"
    assert choose("auto", device_type="cpu", full_finetune=True, checkpointing=True) == "trim"
    assert choose("auto", device_type="cpu", full_finetune=False, malloc="system") == "release"
    assert choose("auto", device_type="cpu", full_finetune=False, malloc="mimalloc") == "keep"  # only a purge delay
    assert choose("auto", device_type="cpu", full_finetune=False, checkpointing=True, malloc="mimalloc") == "trim"
    assert choose("auto", device_type="cpu", full_finetune=False, checkpointing=True) == "trim"
    assert choose("auto", device_type="cuda", full_finetune=True) == "release"
    assert choose("auto", device_type="cuda", full_finetune=False, checkpointing=True) == "release"
    assert choose("keep", device_type="cpu", full_finetune=False) == "keep"
    assert choose("release", device_type="cpu", full_finetune=True) == "release"


TRIM = """
import sys, psutil, torch
from unitune.train.allocator import trim_heap

rss = lambda: psutil.Process().memory_info().rss
blocks = [torch.ones(16 * 1024) for _ in range(4000)]  # 64 KiB each, below malloc's mmap threshold: the heap
pin = torch.ones(16 * 1024)  # allocated last, it keeps the heap's top from shrinking on its own
del blocks
before = rss()
trim_heap()
print(before - rss(), flush=True)
"""


def test_trim_hands_the_heaps_free_pages_back():
    """Freed blocks in the middle of the heap stay resident under glibc's defaults; trim returns them."""
    out = subprocess.run([sys.executable, "-c", TRIM], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 200 * 2**20, out.stdout  # most of the 250 MiB freed


KERNELS = """
import os, sys, torch
from unitune.train.allocator import cap_kernel_cache

os.environ.pop("ONEDNN_PRIMITIVE_CACHE_CAPACITY", None)
os.environ.pop("LRU_CACHE_CAPACITY", None)
if sys.argv[1] == "cap":
    assert cap_kernel_cache(1) == ["ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"]
    assert cap_kernel_cache(5) == []  # set already: left alone
os.environ["ONEDNN_VERBOSE"] = "all"
a, b = torch.randn(64, 64, dtype=torch.bfloat16), torch.randn(32, 64, dtype=torch.bfloat16)
for x in (a, b, a):  # the first shape again after a second one
    x @ a
"""


def test_the_kernel_cache_cap_takes_effect_when_set_before_the_first_matmul():
    """oneDNN builds a kernel per bf16 matmul shape; capped at 1, a shape seen two kernels ago is
    built again (a cache miss), where by default it is found."""
    def lookups(mode):
        out = subprocess.run([sys.executable, "-c", KERNELS, mode], capture_output=True, text=True, check=True)
        return [word.split(":")[1] for word in out.stdout.split(",") if word.startswith("create:cache_")]

    default = lookups("default")
    if len(default) != 3:
        pytest.skip("bf16 matmuls do not run through oneDNN on this CPU")
    assert default == ["cache_miss", "cache_miss", "cache_hit"]
    assert lookups("cap") == ["cache_miss", "cache_miss", "cache_miss"]


SHAPES = """
import ctypes, os, sys, torch
from unitune.train.allocator import KERNEL_CACHES, cap_kernel_cache

for name in KERNEL_CACHES:
    os.environ.pop(name, None)
if sys.argv[1] == "cap":
    cap_kernel_cache(16)


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
in_use = lambda: (libc.mallinfo2().uordblks + libc.mallinfo2().hblkhd) / 2**20
w = torch.randn(256, 128, dtype=torch.bfloat16)
torch.randn(8, 256, dtype=torch.bfloat16) @ w
before = in_use()
for rows in range(16, 400):  # a new length every time, as every batch has
    torch.randn(rows, 256, dtype=torch.bfloat16) @ w
print(in_use() - before)
"""


def test_capped_kernel_caches_stop_growing_with_every_new_shape():
    """384 bf16 matmul shapes: by default both caches keep a kernel for each (~0.25 MiB apiece);
    capped, what stays allocated afterwards does not grow with the number of shapes."""
    try:
        ctypes.CDLL(None).mallinfo2  # noqa: B018 - glibc >= 2.33
    except AttributeError:
        pytest.skip("needs glibc's mallinfo2")

    def growth(mode):
        out = subprocess.run([sys.executable, "-c", SHAPES, mode], capture_output=True, text=True, check=True)
        return float(out.stdout)

    default = growth("default")
    if default < 50:
        pytest.skip("bf16 matmuls do not run through oneDNN's caches on this CPU")
    assert growth("cap") < default / 5


MI_PROBE = """
import ctypes, sys
from unitune.train.allocator import MI_OPTION_PURGE_DELAY, cpu_allocator
mi = ctypes.CDLL(None)
mi.mi_option_get.restype = ctypes.c_long
with cpu_allocator(sys.argv[1], device_type="cpu", full_finetune=True) as mode:
    inside = mi.mi_option_get(MI_OPTION_PURGE_DELAY)
print(mode, inside, mi.mi_option_get(MI_OPTION_PURGE_DELAY))
"""


@pytest.mark.skipif(library("mimalloc") is None, reason="mimalloc is not installed")
@pytest.mark.parametrize("mode,want", [("keep", f"keep {KEEP_PURGE_DELAY_MS} 10"), ("release", "release 10 10")])
def test_keep_holds_mimalloc_freed_pages_for_a_few_seconds_while_training(mode, want):
    env = {**os.environ, "LD_PRELOAD": library("mimalloc"), "MIMALLOC_PURGE_DELAY": "10"}
    out = subprocess.run([sys.executable, "-c", MI_PROBE, mode], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == want.split()
