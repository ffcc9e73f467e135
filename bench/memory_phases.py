"""Where in a training step the resident-memory peak falls: forward, the LM head's backward, the
decoder's backward, or the optimizer step. Each phase's peak is exact: the kernel's high-water mark
(VmHWM) is reset as the phase starts and read as it ends (Linux: /proc/self/clear_refs).

    .venv/bin/python bench/memory_phases.py [dpo] [--purge-delay MS] [--census] [--split-forward]
        [--collect-before-step] [--backward-purge-delay MS] [extra unitune flags, e.g. --lora.enabled false]

Run with `--purge-delay 0` (mimalloc hands freed pages back at once), resident memory is what is
live, so the phases show what each one holds; with the malloc's usual settings they show what it
also keeps. `--purge-delay MS` sets mimalloc's purge delay before every step, over whatever
`train.cpu_allocator` set (it needs the `unitune` command's mimalloc: unitune/malloc.py).

The benchmark's SFT workload (bench/.work/data/sft.jsonl, written by bench/run.py; batch 4) or with
`dpo` first its DPO workload (batch 2); fp32, LoRA r=8 unless `--lora.enabled false`, 4 steps.
Each step prints `phase: peak (resident before -> after)` in GiB. `--census` adds, after each step,
what is resident by kind (/proc/self/smaps: anonymous, file-backed) beside the bytes of the tensors
Python can reach (weights, optimizer state, every other tensor storage the garbage collector
tracks): anonymous memory above the tensors is the libraries', the interpreter's or the malloc's.
`--collect-before-step` hands every freed page back (`mi_collect`) as each step begins, and
`--backward-purge-delay MS` sets mimalloc's purge delay within backward only (both mimalloc): what the
allocator holds above what is live, by where in the step it was freed.
`--split-forward` (sft) also reads forward's two parts: the decoder (the final hidden states) and the LM
head (the summed NLL, whose trained head makes its gradients in forward). The high-water mark is reset as
each part begins, so `forward` then reads the peak since the head began; the decoder's forward only adds
activations, so its own end is its peak.
"""

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)
from unitune.malloc import active, preload  # noqa: E402

preload()  # the malloc the `unitune` command runs on


def _status(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(text.split(f"{field}:")[1].split()[0]) / 2**20  # kB -> GiB


class Phases:
    """Peak resident memory of named phases, in the order they ran."""

    def __init__(self):
        self.rows, self.started = [], {}

    def begin(self, name: str) -> None:
        self.started[name] = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS

    def end(self, name: str) -> None:
        self.rows.append(f"{name}: {_status('VmHWM'):.2f} ({self.started.pop(name):.2f} -> {_status('VmRSS'):.2f})")

    def wrap(self, name: str, fn):
        def wrapped(*args, **kwargs):
            self.begin(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self.end(name)
        return wrapped

    def take(self) -> str:
        rows, self.rows = self.rows, []
        return " | ".join(rows)


def census(trainer) -> str:
    """Resident memory by kind beside the tensors Python can reach, in GiB, between two steps."""
    import gc

    import torch

    rss = anon = 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line.startswith("Rss:"):
            rss += int(line.split()[1])
        elif line.startswith("Anonymous:"):
            anon += int(line.split()[1])
    weights = sum(p.untyped_storage().nbytes() for p in trainer.unwrapped.parameters())
    state = sum(t.untyped_storage().nbytes() for s in trainer.optimizer.state.values() for t in s.values()
                if torch.is_tensor(t))
    seen, tensors = set(), 0
    for obj in gc.get_objects():
        if torch.is_tensor(obj) and obj.layout == torch.strided and obj.device.type != "meta":
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                tensors += storage.nbytes()
    gib = 2**20  # smaps counts kB
    return (f"  resident {rss / gib:.2f} (anonymous {anon / gib:.2f}, file-backed {(rss - anon) / gib:.2f}); tensors "
            f"{tensors / 2**30:.2f}, of them weights {weights / 2**30:.2f} and optimizer state {state / 2**30:.2f}")


def main(argv: list[str]) -> None:
    import torch  # noqa: F401

    from unitune.cli import main as cli
    from unitune.train import loop
    from unitune.train.allocator import MI_OPTION_PURGE_DELAY, _mimalloc

    purge = None
    if "--purge-delay" in argv:
        at = argv.index("--purge-delay")
        purge = int(argv[at + 1])
        del argv[at:at + 2]
        if _mimalloc() is None:
            raise SystemExit("--purge-delay needs mimalloc as the malloc in use (unitune/malloc.py)")
    take_census = "--census" in argv
    if take_census:
        argv.remove("--census")
    split = "--split-forward" in argv
    if split:
        argv.remove("--split-forward")
    collect = "--collect-before-step" in argv
    if collect:
        argv.remove("--collect-before-step")
        if _mimalloc() is None:
            raise SystemExit("--collect-before-step needs mimalloc as the malloc in use (unitune/malloc.py)")
    backward_purge = None
    if "--backward-purge-delay" in argv:
        at = argv.index("--backward-purge-delay")
        backward_purge = int(argv[at + 1])
        del argv[at:at + 2]
        if _mimalloc() is None:
            raise SystemExit("--backward-purge-delay needs mimalloc as the malloc in use (unitune/malloc.py)")
    phases = Phases()
    init, train_step = loop.Trainer.__init__, loop.Trainer.train_step

    def patched_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.objective.loss = phases.wrap("forward", self.objective.loss)
        self.acc.backward = phases.wrap("backward", self.acc.backward)
        if backward_purge is not None:  # mimalloc's purge delay within backward only
            inner = self.acc.backward

            def backward(*args, **kwargs):
                mi = _mimalloc()
                delay = mi.mi_option_get(MI_OPTION_PURGE_DELAY)
                mi.mi_option_set(MI_OPTION_PURGE_DELAY, backward_purge)
                try:
                    return inner(*args, **kwargs)
                finally:
                    mi.mi_option_set(MI_OPTION_PURGE_DELAY, delay)

            self.acc.backward = backward
        self.optimizer.step = phases.wrap("optimizer", self.optimizer.step)
        model = self.unwrapped
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # the LM head's backward ends where the final norm's begins: the peak up to then is the head's
        base.get_decoder().norm.register_full_backward_pre_hook(
            lambda *_: phases.rows.append(f"  head's backward: {_status('VmHWM'):.2f}"))

    def patched_step(self):
        if purge is not None:  # after train.cpu_allocator set its own
            _mimalloc().mi_option_set(MI_OPTION_PURGE_DELAY, purge)
        began = time.perf_counter()
        if collect:  # every freed page back to the kernel now, before the step's first allocation
            _mimalloc().mi_collect(True)
        row = train_step(self)
        print(f"step {self.step} ({time.perf_counter() - began:.1f} s) {phases.take()}", flush=True)
        if take_census:
            print(census(self), flush=True)
        return row

    loop.Trainer.__init__, loop.Trainer.train_step = patched_init, patched_step
    if split:
        from unitune.objectives import lm  # the SFT objective looks both up in its module at each call

        lm.final_hidden = phases.wrap("decoder", lm.final_hidden)
        lm.token_nll_sum = phases.wrap("head", lm.token_nll_sum)
    verb = argv.pop(0) if argv and argv[0] == "dpo" else "sft"
    print(f"malloc: {active()}" + (f", purge delay {purge} ms" if purge is not None else ""))
    cli([verb, "--model.name", "smollm2-135m-instruct", "--data.train", str(ROOT / f"bench/.work/data/{verb}.jsonl"),
         "--data.max_length", "512", "--train.max_steps", "4", "--train.batch_size", "2" if verb == "dpo" else "4",
         "--lora.r", "8", "--lora.alpha", "16", "--train.progress", "false", "--train.plot", "false",
         "--train.tensorboard", "false", "--train.output_dir", "/tmp/memory-phases", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
