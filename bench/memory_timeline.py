"""Where a unitune run's peak resident memory comes from: RSS after imports, before the first step
(model, data, optimizer), and each step's peak (sampled every 10 ms) and what stays after it.

    .venv/bin/python bench/memory_timeline.py [--trim] [extra unitune sft flags, e.g. --train.gradient_checkpointing true]

--trim hands the heap's free pages back to the kernel after every step (glibc's malloc_trim(0)).

The benchmark's SFT LoRA workload (bench/.work/data/sft.jsonl, written by bench/run.py), fp32, 4 steps.
"""

import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)
proc = psutil.Process()


def rss() -> float:
    return proc.memory_info().rss / 2**30


class Peak:
    def __init__(self):
        self.value, self.stop = rss(), threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stop.wait(0.01):
            self.value = max(self.value, rss())

    def take(self) -> float:
        value, self.value = self.value, rss()
        return value


def main(argv: list[str]) -> None:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from unitune.cli import main as cli
    from unitune.train import loop
    from unitune.train.allocator import trim_heap

    print(f"after imports: {rss():.2f} GiB")
    peak = Peak()
    original = loop.Trainer.train_step
    state = {"step": 0}

    trim = "--trim" in argv
    argv = [a for a in argv if a != "--trim"]

    def train_step(self):
        if state["step"] == 0:
            print(f"before the first step (model, data, optimizer): {rss():.2f} GiB, peak so far {peak.take():.2f}")
        began = time.perf_counter()
        row = original(self)
        if trim:
            trim_heap()
        state["step"] += 1
        print(f"step {state['step']}: {time.perf_counter() - began:.2f} s, peak {peak.take():.2f} GiB, after {rss():.2f} GiB")
        return row

    loop.Trainer.train_step = train_step
    data = ROOT / "bench/.work/data/sft.jsonl"
    args = ["sft", "--model.name", "smollm2-135m-instruct", "--data.train", str(data),
                    "--data.max_length", "512", "--train.max_steps", "4", "--train.batch_size", "4",
                    "--lora.r", "8", "--lora.alpha", "16", "--train.progress", "false", "--train.plot", "false",
                    "--train.tensorboard", "false", "--train.output_dir", "/tmp/memory-timeline", *argv]
    started = time.perf_counter()
    cli(args)
    print(f"whole run: peak {max(peak.take(), rss()):.2f} GiB, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
