"""train.cpu_allocator: with `keep`, memory freed during training stays in the process and is
reused, instead of being handed back to the kernel and faulted in again page by page."""

import subprocess
import sys

import pytest

from unitune.train.allocator import _glibc, keeps

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

with cpu_allocator(sys.argv[1], device_type="cpu", full_finetune=True) as kept:
    inside = [cycle() for _ in range(12)]
print(kept, *inside, cycle(), flush=True)
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


def test_auto_keeps_only_for_full_finetuning_on_cpu():
    assert keeps("auto", device_type="cpu", full_finetune=True)
    assert not keeps("auto", device_type="cpu", full_finetune=False)
    assert not keeps("auto", device_type="cuda", full_finetune=True)
    assert keeps("keep", device_type="cpu", full_finetune=False)
    assert not keeps("release", device_type="cpu", full_finetune=True)
