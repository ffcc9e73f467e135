"""Where a unitune run's peak resident memory comes from: RSS after imports, before the first step
(model, data, optimizer), and each step's peak (sampled every 10 ms) and what stays after it.

    .venv/bin/python bench/memory_timeline.py [dpo] [--trim] [extra unitune flags, e.g. --train.gradient_checkpointing true]

--trim hands the heap's free pages back to the kernel after every step (glibc's malloc_trim(0)).
It runs on the malloc the `unitune` command runs on (unitune/malloc.py: mimalloc where installed);
under UNITUNE_MALLOC=system, glibc's, it also reports what malloc has in use, not only what is resident.

The benchmark's SFT LoRA workload (bench/.work/data/sft.jsonl, written by bench/run.py; batch 4), or with
`dpo` first its DPO LoRA workload (dpo.jsonl, batch 2); fp32, 4 steps.
"""

import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)
from unitune.malloc import active, preload  # noqa: E402

preload()  # the malloc the `unitune` command runs on (UNITUNE_MALLOC=system: glibc's)
proc = psutil.Process()


def rss() -> float:
    return proc.memory_info().rss / 2**30


def resident_split() -> str:
    """Anonymous (heap, stacks, mmapped blocks) and file-backed (code, the mapped weight file) resident memory."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    anon, file = (int(status[k].split()[0]) / 2**20 for k in ("RssAnon", "RssFile"))
    return f"anon {anon:.2f} + file {file:.2f}"


def in_use() -> float:
    """What glibc's malloc has handed out and not had back (heap + mmapped blocks); RSS minus this
    is free memory the allocator keeps. Unknown (nan) under another malloc."""
    if active() != "system":
        return float("nan")
    heap = psutil.heap_info()
    return (heap.heap_used + heap.mmap_used) / 2**30


class Peak:
    def __init__(self):
        self.value, self.used, self.stop = rss(), in_use(), threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stop.wait(0.01):
            self.value, self.used = max(self.value, rss()), max(self.used, in_use())

    def take(self) -> tuple[float, float]:
        """The highest resident and in-use memory since the last take."""
        value, used = self.value, self.used
        self.value, self.used = rss(), in_use()
        return value, used


def main(argv: list[str]) -> None:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from unitune.cli import main as cli
    from unitune.train import loop
    from unitune.train.allocator import trim_heap

    print(f"malloc: {active()}")
    print(f"after imports: {rss():.2f} GiB ({in_use():.2f} in use; {resident_split()})")
    peak = Peak()
    original = loop.Trainer.train_step
    state = {"step": 0}

    trim = "--trim" in argv
    argv = [a for a in argv if a != "--trim"]

    def train_step(self):
        if state["step"] == 0:
            print(f"before the first step (model, data, optimizer): {rss():.2f} GiB ({in_use():.2f} in use; "
                  f"{resident_split()}), peak so far {peak.take()[0]:.2f}")
        began = time.perf_counter()
        row = original(self)
        if trim:
            trim_heap()
        state["step"] += 1
        step_peak, step_used = peak.take()
        print(f"step {state['step']}: {time.perf_counter() - began:.2f} s, peak {step_peak:.2f} GiB "
              f"({step_used:.2f} in use), after {rss():.2f} GiB ({in_use():.2f} in use; {resident_split()})")
        return row

    loop.Trainer.train_step = train_step
    verb = argv.pop(0) if argv and argv[0] == "dpo" else "sft"
    data = ROOT / f"bench/.work/data/{verb}.jsonl"
    args = [verb, "--model.name", "smollm2-135m-instruct", "--data.train", str(data), "--data.max_length", "512",
            "--train.max_steps", "4", "--train.batch_size", "2" if verb == "dpo" else "4",
            "--lora.r", "8", "--lora.alpha", "16", "--train.progress", "false", "--train.plot", "false",
            "--train.tensorboard", "false", "--train.output_dir", "/tmp/memory-timeline", *argv]
    started = time.perf_counter()
    cli(args)
    print(f"whole run: peak {max(peak.take()[0], rss()):.2f} GiB, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
