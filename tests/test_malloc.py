"""The `unitune` command re-executes itself once with mimalloc preloaded (UNITUNE_MALLOC), leaves a
malloc the user preloaded alone, and names the setting when it is wrong."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unitune.malloc import library

MIMALLOC = library("mimalloc")
needs_mimalloc = pytest.mark.skipif(MIMALLOC is None, reason="cmeel-mimalloc is installed on Linux x86-64/arm64 only")

# what a process started the way the `unitune` command starts sees after choosing its malloc
PROBE = "import os, unitune.malloc as m; m.preload(); print(m.active(), os.environ.get('LD_PRELOAD', ''))"


def run(code: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "UNITUNE_MALLOC", "UNITUNE_MALLOC_PRELOADED")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env}, timeout=60)


@needs_mimalloc
def test_auto_restarts_on_mimalloc():
    proc = run(PROBE + "; print(open('/proc/self/maps').read().count('libmimalloc'))")
    assert proc.returncode == 0, proc.stderr
    first, mapped = proc.stdout.splitlines()
    name, preload = first.split(maxsplit=1)
    assert name == "mimalloc" and preload == MIMALLOC
    assert int(mapped) > 0  # the library is loaded, not merely named


def test_system_keeps_the_c_librarys_malloc():
    proc = run(PROBE, UNITUNE_MALLOC="system")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "system" and "malloc" not in proc.stdout


@needs_mimalloc
def test_a_malloc_the_user_preloaded_is_left_alone():
    proc = run(PROBE, LD_PRELOAD=MIMALLOC)
    assert proc.returncode == 0, proc.stderr
    name, preload = proc.stdout.split(maxsplit=1)
    assert name == "mimalloc" and preload.strip() == MIMALLOC  # not preloaded twice


@needs_mimalloc
def test_a_path_is_preloaded_as_given():
    # another file than the one `auto` picks (libmimalloc.so), so a path taken for `auto` would fail here
    given = next(str(p) for p in sorted(Path(MIMALLOC).parent.glob("libmimalloc.so.*")))
    proc = run(PROBE, UNITUNE_MALLOC=given)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(maxsplit=1) == ["mimalloc", given + "\n"]


@pytest.mark.parametrize("setting, message", [
    ("bogus", "UNITUNE_MALLOC=bogus: expected auto, system, mimalloc, jemalloc, tcmalloc or the path"),
    ("/no/such/libmalloc.so", "UNITUNE_MALLOC=/no/such/libmalloc.so: no such file"),
])
def test_a_wrong_setting_is_one_line_naming_it(setting, message):
    proc = run("import sys; from unitune.cli import main; sys.exit(main())", UNITUNE_MALLOC=setting)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"unitune: error: {message}")
