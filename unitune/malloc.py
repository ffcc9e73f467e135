"""Which malloc a unitune process runs on, chosen before it starts.

On CPU, PyTorch takes every activation, gradient and logit chunk of a step from the C library's
malloc and gives it back by the end of the step. glibc's malloc keeps what is freed in its heap, and
because every batch has a new length the blocks seldom fit the next step's requests: in the
benchmark's fp32 SFT LoRA step ~0.8 GiB is in use at the peak and 3.0 GiB is resident
(BENCHMARKS.md). Allocators built around size classes and returning memory as they go
(mimalloc, jemalloc, tcmalloc) reuse those blocks instead: the same step peaks at 1.9 GiB under
each of the three, and runs no slower.

A malloc can only be chosen before the process starts, so the `unitune` command (and
`python -m unitune`) re-executes itself once, at start-up, with it preloaded (`LD_PRELOAD`).
`UNITUNE_MALLOC` says which:

  auto     (the default) mimalloc from the cmeel-mimalloc wheel, which unitune depends on under
           Linux; else jemalloc or tcmalloc where the system has one; else the C library's own
  mimalloc | jemalloc | tcmalloc    that one, or an error saying it is not installed
  system   the C library's own malloc
  PATH     the shared library at PATH

A malloc the user preloaded already is left as it is. A program that uses the Python API gets
the same by calling `unitune.malloc.preload()` before anything else (examples/demo.py does); the
run log says which malloc is in use. Only Linux is concerned; elsewhere nothing changes.
"""

import ctypes.util
import os
import sys
from importlib import metadata
from pathlib import Path

from unitune.errors import UnituneError

NAMES = ("mimalloc", "jemalloc", "tcmalloc")
_PRELOADED = "UNITUNE_MALLOC_PRELOADED"  # set in the re-executed process, so it does not re-execute again


def library(name: str) -> str | None:
    """The shared library of the malloc called `name`, or None where it is not installed."""
    if name == "mimalloc":
        try:
            files = metadata.distribution("cmeel-mimalloc").files or []
        except metadata.PackageNotFoundError:
            files = []
        for file in sorted(files, key=lambda f: len(f.name)):  # libmimalloc.so before its versioned names
            if file.name.startswith("libmimalloc.so") and (path := Path(file.locate())).exists():
                return str(path)
    # jemalloc, tcmalloc, or mimalloc from the system; tcmalloc's lighter build first (no heap profiler)
    for lib in {"tcmalloc": ("tcmalloc_minimal", "tcmalloc")}.get(name, (name,)):
        if found := ctypes.util.find_library(lib):
            return found
    return None


def choose(setting: str) -> str | None:
    """The library that UNITUNE_MALLOC=setting preloads; None for the C library's own malloc."""
    if setting == "system":
        return None
    if setting == "auto":
        return next(filter(None, map(library, NAMES)), None)
    if setting in NAMES:
        if found := library(setting):
            return found
        raise UnituneError(f"UNITUNE_MALLOC={setting}: {setting} is not installed here "
                           f"({'pip install cmeel-mimalloc' if setting == 'mimalloc' else 'install it with the system packages'}"
                           f", or set UNITUNE_MALLOC=auto or system)")
    if os.sep in setting:
        if Path(setting).is_file():
            return setting
        raise UnituneError(f"UNITUNE_MALLOC={setting}: no such file")
    raise UnituneError(f"UNITUNE_MALLOC={setting}: expected auto, system, {', '.join(NAMES)} "
                       "or the path of a shared library")


def active() -> str:
    """The malloc this process runs on: a preloaded one's name (or file name), else 'system'."""
    preloaded = os.environ.get("LD_PRELOAD", "").replace(":", " ").split()
    if not preloaded or not sys.platform.startswith("linux"):
        return "system"
    try:
        mapped = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    for entry in preloaded:
        base = os.path.basename(entry)
        if base and base in mapped:
            return next((name for name in NAMES if name in base), base)
    return "system"


def preload() -> None:
    """Re-execute this process with the malloc UNITUNE_MALLOC names preloaded, once; returns only where
    nothing is to change (not Linux, `system`, already preloaded, nothing installed)."""
    if not sys.platform.startswith("linux") or os.environ.get(_PRELOADED):
        return
    setting = os.environ.get("UNITUNE_MALLOC", "auto").strip() or "auto"
    user_preload = os.environ.get("LD_PRELOAD", "")
    if setting == "auto" and any(name in user_preload for name in NAMES):
        return  # the user chose a malloc already
    path = choose(setting)
    if path is None:
        return
    env = {**os.environ, "LD_PRELOAD": " ".join(filter(None, (path, user_preload))), _PRELOADED: path}
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError as err:  # e.g. no interpreter path: go on with the malloc we have
        print(f"unitune: could not restart with {path} preloaded ({err}); running on the system's malloc",
              file=sys.stderr)
