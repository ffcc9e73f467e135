"""unitune against its peers on one workload, in alternation, in one run; prints one table with ratios.

    .venv/bin/python bench/run.py                          # everything (fp32, and bf16 where the CPU has it)
    .venv/bin/python bench/run.py --only sft_lora --precision fp32 --steps 4 --warmup 1   # a smoke run
    .venv/bin/python bench/run.py --report bench/.work/results-STAMP.jsonl              # the table again

Each (task, precision) cell runs every framework that supports the task, one after another in
an order that rotates with the repeat, each in its own process (`bench/peers/<framework>_run.py
SPEC.json`, from that framework's own environment, see setup_peers.sh). Per run:

  tokens/s   trained (non-padding) tokens of the timed steps / their wall time, a step timed from
             the end of the one before to its own end (warm-up steps are not timed)
  peak RSS   the largest sum of resident memory over the process and its children, sampled every 0.2 s
  start-up   process start to the start of the first optimizer step
  loss       the mean of the last 5 steps' reported losses
  MFU        model FLOPs per token x tokens/s / the highest matmul rate measured in the run (one
             measurement at the start of every cell; contention only lowers it):
             6N (full), 4N (frozen-base LoRA: no weight gradients), +2N for DPO's reference
             forward, plus attention 6 L d E[T] (causal, forward + backward; E[T] token-weighted)
  GRPO       seconds per timed step, and rollout tokens/s (generated tokens / generation time)

Only ratios from the same run count: the machine is shared and noisy. Raw results go to
`--out/results-STAMP.jsonl`, one line per run; the table is made from that file.

Adding a framework or a task is an entry in FRAMEWORKS or TASKS below.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LORA = {"r": 8, "alpha": 16}


@dataclass
class Task:
    data: str  # the workload file (sft, dpo, grpo)
    batch_size: int
    steps: int  # timed optimizer steps
    warmup: int  # untimed steps before them
    lr: float
    lora: dict | None
    flops_n: int  # FLOPs per token per parameter (6 full, 4 LoRA, + 2 for a reference forward)
    attn_passes: int = 6  # attention FLOPs per token: attn_passes * L * d * E[T]
    extra: dict = field(default_factory=dict)


TASKS = {
    "sft_lora": Task("sft", 4, 30, 3, 2e-4, LORA, 4),
    "sft_full": Task("sft", 4, 30, 3, 2e-5, None, 6),
    "dpo_lora": Task("dpo", 2, 20, 3, 5e-5, LORA, 6, 8, {"beta": 0.1}),
    "grpo_lora": Task("grpo", 4, 5, 1, 1e-5, LORA, 0, 0,
                      {"grpo": {"num_generations": 4, "max_completion_length": 64, "temperature": 1.0, "beta": 0.0}}),
}


@dataclass
class Framework:
    python: str  # the interpreter of its environment, relative to the repo root
    script: str
    tasks: tuple
    options: dict = field(default_factory=dict)  # extra settings passed in the spec (unitune: CLI flags)
    peer: bool = True  # False: a unitune row, compared against the peers
    default: bool = True  # run without being named in --frameworks
    env: dict = field(default_factory=dict)  # extra environment (a baseline's PYTHONPATH)


FRAMEWORKS = {
    "unitune": Framework(".venv/bin/python", "bench/peers/unitune_run.py",
                         ("sft_lora", "sft_full", "dpo_lora", "grpo_lora"), peer=False),
    "unitune+packing": Framework(".venv/bin/python", "bench/peers/unitune_run.py", ("sft_lora", "sft_full"),
                                 {"data.packing": "true"}, peer=False),
    # unitune's memory-saving switch (the peers' default): recompute activations in backward
    "unitune+gc": Framework(".venv/bin/python", "bench/peers/unitune_run.py",
                            ("sft_lora", "sft_full", "dpo_lora", "grpo_lora"),
                            {"train.gradient_checkpointing": "true"}, peer=False),
    # unitune's other memory switch: each batch as forward/backward passes of <= 600 padded tokens, same gradients
    "unitune+split": Framework(".venv/bin/python", "bench/peers/unitune_run.py",
                               ("sft_lora", "sft_full", "dpo_lora", "grpo_lora"),
                               {"train.max_tokens_per_forward": "600"}, peer=False, default=False),
    # full fine-tuning, memory first: checkpointing, and each parameter stepped inside backward (so no clipping)
    "unitune+gc+inbwd": Framework(".venv/bin/python", "bench/peers/unitune_run.py", ("sft_full",),
                                  {"train.gradient_checkpointing": "true", "train.optimizer_in_backward": "true",
                                   "train.max_grad_norm": "0"}, peer=False, default=False),
    # full fine-tuning, memory first with the peers' optimizer (clipping kept): a pass over 512 padded tokens
    # checkpoints as many decoder layers as keep it at a 512-token pass's activations, and mimalloc hands
    # freed pages back after its own 10 ms (unitune/models/partial_checkpoint.py)
    "unitune+budget": Framework(".venv/bin/python", "bench/peers/unitune_run.py", ("sft_full",),
                                {"train.checkpoint_above_tokens": "512", "train.cpu_allocator": "release"},
                                peer=False, default=False),
    # LoRA told to keep: what auto does under mimalloc since 2026-12-02 (freed pages back after 3 s, not 10 ms); the
    # A/B that led to it, and the way to force it under glibc's malloc (where keep holds the whole heap)
    "unitune+keep": Framework(".venv/bin/python", "bench/peers/unitune_run.py",
                              ("sft_lora", "dpo_lora", "grpo_lora"), {"train.cpu_allocator": "keep"},
                              peer=False, default=False),
    # decoder layers compiled for training (torch.compile, unitune/models/compile.py), at the default memory budget;
    # unitune+compileB (e.g. unitune+compile0.75): at budget B
    "unitune+compile": Framework(".venv/bin/python", "bench/peers/unitune_run.py",
                                 ("sft_lora", "sft_full", "dpo_lora", "grpo_lora"), {"train.compile": "true"},
                                 peer=False, default=False),
    # fp32 decoder linears through oneDNN whatever the CPU (auto: AMD with AVX-512 only; unitune/models/onednn_linear.py)
    "unitune+onednn": Framework(".venv/bin/python", "bench/peers/unitune_run.py",
                                ("sft_lora", "sft_full", "dpo_lora", "grpo_lora"), {"train.onednn_linears": "true"},
                                peer=False, default=False),
    # unitune on glibc's malloc, as before unitune/malloc.py (the command now runs on mimalloc where installed)
    "unitune+system": Framework(".venv/bin/python", "bench/peers/unitune_run.py",
                                ("sft_lora", "sft_full", "dpo_lora", "grpo_lora"), {}, peer=False, default=False,
                                env={"UNITUNE_MALLOC": "system"}),
    # unitune+splitN (any N, e.g. unitune+split300: fp32 takes twice bf16's bytes per token): passes of <= N tokens
    # PEER+mimalloc (any peer, e.g. ms-swift+mimalloc): that peer with unitune's malloc preloaded, to tell the
    # allocator's share from the rest; compared against the peers as they ship, as a unitune row is
    # X+adafactor (any framework, e.g. unitune+adafactor, ms-swift+adafactor): Adafactor for AdamW (add_optimizer)
    # DPO as before dpo.shared_prompt: two rows per pair, the prompt computed twice (for before/after)
    "unitune-unshared": Framework(".venv/bin/python", "bench/peers/unitune_run.py", ("dpo_lora",),
                                  {"dpo.shared_prompt": "false"}, peer=False, default=False),
    "trl": Framework("bench/.venv-peers/bin/python", "bench/peers/trl_run.py",
                     ("sft_lora", "sft_full", "dpo_lora", "grpo_lora")),
    # TRL's packing is padding-free (position_ids only): exact with flash-attention kernels, not with CPU sdpa
    "trl+packing": Framework("bench/.venv-peers/bin/python", "bench/peers/trl_run.py", ("sft_lora", "sft_full"),
                             {"packing": True}, default=False),
    "ms-swift": Framework("bench/.venv-swift/bin/python", "bench/peers/swift_run.py",
                          ("sft_lora", "sft_full", "dpo_lora")),
    "llama-factory": Framework("bench/.venv-lf/bin/python", "bench/peers/lf_run.py", ("sft_lora", "sft_full", "dpo_lora")),
}


def is_peer(name: str) -> bool:
    return name in FRAMEWORKS and FRAMEWORKS[name].peer  # unitune@REV (a baseline) never is


# ---- preparation ------------------------------------------------------------------------------

PYTHON = str(ROOT / ".venv/bin/python")  # unitune's; --python replaces every framework's interpreter with one


def unitune_python(code: str) -> str:
    out = subprocess.run([PYTHON, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip()


def prepare(out: Path, model: str = "") -> tuple[str, Path, dict]:
    """(model folder, data folder, model shape): the built-in model as a plain HF folder (or `model`),
    and the workload rendered with that model's tokenizer."""
    model = model or unitune_python("from unitune.models.registry import ensure_builtin; "
                                    "print(ensure_builtin('smollm2-135m-instruct'))").splitlines()[-1]
    data = out / "data"
    if not (data / "stats.json").exists() or json.loads((data / "stats.json").read_text())["model"] != model:
        subprocess.run([PYTHON, str(BENCH / "workload.py"), str(data), model], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    config = json.loads((Path(model) / "config.json").read_text())
    shape = {"params": safetensors_params(Path(model)), "layers": config["num_hidden_layers"],
             "attn_width": config["num_attention_heads"] * config.get("head_dim", config["hidden_size"]
                                                                        // config["num_attention_heads"]),
             "stats": json.loads((data / "stats.json").read_text())}
    return model, data, shape


def safetensors_params(folder: Path) -> int:
    """Parameters in a model folder, from the safetensors headers (tied weights stored once)."""
    total = 0
    for path in folder.glob("*.safetensors"):
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for name, meta in header.items():
            if name != "__metadata__":
                n = 1
                for dim in meta["shape"]:
                    n *= dim
                total += n
    return total


THREADS: dict = {}  # {"OMP_NUM_THREADS": "N"} with --threads N, for every subprocess


def matmul_rates(device: str = "cpu") -> dict:
    out = subprocess.run([PYTHON, str(BENCH / "matmul.py"), device], check=True, capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, **THREADS})
    return json.loads(out.stdout)


# ---- one run ----------------------------------------------------------------------------------

def tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_one(name: str, task_name: str, precision: str, repeat: int, model: str, data: Path, out: Path,
            args) -> dict:
    fw, task = FRAMEWORKS[name], TASKS[task_name]
    tag = f"{task_name}-{precision}-{name}-r{repeat}"
    run_dir = out / "runs" / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = min(args.steps, task.steps) if args.steps else task.steps
    warmup = task.warmup if args.warmup is None else min(args.warmup, task.warmup)
    spec = {"task": task_name, "precision": precision, "model": model, "data": str(data), "out_dir": str(run_dir),
            "result": str(run_dir / "result.json"), "steps": steps + warmup, "warmup": warmup,
            "batch_size": args.batch_size or task.batch_size, "lr": task.lr, "lora": task.lora,
            "max_length": args.max_length, "seed": 42, "device": args.device,
            "model_dtype": "bfloat16" if args.device == "cuda" and precision == "bf16" else "float32",
            "options": fw.options, **task.extra}
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    (run_dir / "result.json").unlink(missing_ok=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "DISABLE_VERSION_CHECK": "1",
           "CUDA_VISIBLE_DEVICES": "" if args.device == "cpu" else os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
           **THREADS, **fw.env}
    peak, done = [0], threading.Event()
    started = time.time()
    with open(run_dir / "log.txt", "w") as log:
        python = args.python or str(ROOT / fw.python)
        proc = subprocess.Popen([python, str(ROOT / fw.script), str(run_dir / "spec.json")],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

        def sample():
            while not done.wait(0.2):
                peak[0] = max(peak[0], tree_rss(proc.pid))

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        try:
            rc = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
        done.set()
        watcher.join()
    row = {"framework": name, "task": task_name, "precision": precision, "repeat": repeat, "rc": rc,
           "threads": args.threads or "default",
           "wall_s": time.time() - started, "peak_rss": peak[0], "run_dir": str(run_dir), "warmup": warmup}
    result_path = run_dir / "result.json"
    if result_path.exists():
        row.update(summarize(json.loads(result_path.read_text()), started, warmup))
    if rc != 0 or "tokens_per_s" not in row:
        tail = (run_dir / "log.txt").read_text(errors="replace").strip().splitlines()[-3:]
        row["error"] = " | ".join(line[-200:] for line in tail)
    return row


def summarize(result: dict, started: float, warmup: int) -> dict:
    ends, tokens, losses = result["step_end"], result["tokens"], result["loss"]
    out = {"steps_done": len(ends), "extra": result.get("extra", {})}
    if result.get("first_step"):
        out["startup_s"] = result["first_step"] - started
    if len(ends) > warmup:
        t0 = ends[warmup - 1] if warmup > 0 else result["first_step"]
        seconds = ends[-1] - t0
        timed = len(ends) - warmup
        out.update(tokens_per_s=sum(tokens[warmup:]) / seconds, s_per_step=seconds / timed, timed_steps=timed,
                   timed_tokens=sum(tokens[warmup:]))
    if losses:
        out["loss"] = statistics.fmean(losses[-5:])
    if result.get("rollout_s"):
        out["rollout_tokens_per_s"] = result["rollout_tokens"] / result["rollout_s"]
        out["completion_mean"] = result["rollout_tokens"] / max(1, len(result["completion_lengths"]))
    return out


# ---- the table --------------------------------------------------------------------------------

def flops_per_token(task_name: str, shape: dict) -> float:
    task = TASKS[task_name]
    stats = shape["stats"].get(task.data, {})
    return task.flops_n * shape["params"] + task.attn_passes * shape["layers"] * shape["attn_width"] * stats.get(
        "attn_len", 0)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def table(rows: list[dict], shape: dict, rates: dict) -> str:
    """Markdown: one line per (task, precision, framework); medians over repeats; ratios from one repeat."""
    lines = ["| task | precision | framework | tokens/s | unitune × (speed) | peak RSS GiB | start-up s | loss (last 5) "
             "| MFU | s/step | rollout tok/s | runs |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cells = sorted({(r["task"], r["precision"]) for r in rows}, key=lambda c: (list(TASKS).index(c[0]), c[1]))
    for task_name, precision in cells:
        here = [r for r in rows if r["task"] == task_name and r["precision"] == precision]
        names = [n for n in FRAMEWORKS if any(r["framework"] == n for r in here)]
        names += sorted({r["framework"] for r in here} - set(names))  # unitune@REV baselines
        speed = "s_per_step" if task_name.startswith("grpo") else "tokens_per_s"
        for name in names:
            mine = [r for r in here if r["framework"] == name]
            ok = [r for r in mine if speed in r]
            if not ok:
                err = mine[0].get("error", "")[:160]
                lines.append(f"| {task_name} | {precision} | {name} | failed: {err} | | | | | | | | {len(mine)} |")
                continue
            tps = median([r.get("tokens_per_s") for r in ok])
            mfu = None  # over the highest matmul rate seen in the run: contention only ever lowers it
            rate = max([r.get("matmul", {}).get(precision) or 0 for r in rows] or [0]) or None
            if tps and rate and TASKS[task_name].flops_n:
                mfu = flops_per_token(task_name, shape) * tps / rate
            lines.append("| " + " | ".join([
                task_name, precision, name, "" if task_name.startswith("grpo") else _f(tps, "{:.0f}"),
                _ratio(here, name, speed, SPEED_GOAL["grpo" if task_name.startswith("grpo") else "other"]),
                _rss(here, name), _f(median([r.get("startup_s") for r in ok]), "{:.1f}"),
                _f(median([r.get("loss") for r in ok]), "{:.3f}"), _f(mfu and 100 * mfu, "{:.1f}%"),
                _f(median([r.get("s_per_step") for r in ok]), "{:.2f}") if task_name.startswith("grpo") else "",
                _f(median([r.get("rollout_tokens_per_s") for r in ok]), "{:.0f}"), str(len(ok))]) + " |")
    rate_lines = [f"matmul {k}: {max(v) / 1e9:.0f} GFLOP/s (highest of {len(v)}; median {statistics.median(v) / 1e9:.0f})"
                  for k, v in rates.items() if v]
    fpt = ", ".join(f"{t} {flops_per_token(t, shape) / 1e9:.2f} GFLOP/token" for t in TASKS if TASKS[t].flops_n)
    return "\n".join(lines) + "\n\n" + "; ".join(rate_lines) + f"\nmodel FLOPs: {fpt} (N = {shape['params']:,})\n"


SPEED_GOAL = {"grpo": 2.0, "other": 1.5}  # the goals: x the best peer's speed (GRPO: x TRL's step rate)
MEMORY_GOAL = 0.8  # x the lowest peer's peak memory; a unitune ratio meeting its goal is printed in bold


def _bold(text: str, met: bool) -> str:
    return f"**{text}**" if met else text


def _ratio(here: list[dict], name: str, speed: str, goal: float) -> str:
    """unitune rows: unitune / best peer (tokens/s; for GRPO, peer s/step / unitune s/step), the median over
    repeats of each repeat's ratio, in bold when it meets `goal`. Peer rows: unitune / this peer."""
    def value(r):
        return r.get(speed) if speed == "tokens_per_s" else (1 / r[speed] if r.get(speed) else None)

    ratios = []
    for rep in sorted({r["repeat"] for r in here}):
        same = {r["framework"]: value(r) for r in here if r["repeat"] == rep and value(r)}
        peers = {n: v for n, v in same.items() if is_peer(n)}
        if is_peer(name):
            if name in same and "unitune" in same:
                ratios.append(same["unitune"] / same[name])
        elif name in same and peers:
            ratios.append(same[name] / max(peers.values()))
    r = median(ratios)
    if r is None:
        return ""
    return f"{r:.2f}" if is_peer(name) else f"{_bold(f'{r:.2f}', r >= goal)} vs best peer"


def _rss(here: list[dict], name: str) -> str:
    """Median peak RSS in GiB; for unitune rows also its ratio to the lowest peer's median."""
    def rss(n):
        return median([r["peak_rss"] for r in here if r["framework"] == n and r.get("steps_done")])

    mine = rss(name)
    if mine is None:
        return ""
    peers = [v for n in {r["framework"] for r in here} if is_peer(n) and (v := rss(n))]
    if is_peer(name) or not peers:
        return f"{mine / 2**30:.2f}"
    ratio = mine / min(peers)
    return f"{mine / 2**30:.2f} ({_bold(f'{ratio:.2f}', ratio <= MEMORY_GOAL)}× lowest peer)"


def _f(value, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


# ---- main -------------------------------------------------------------------------------------

TOKEN_VARIANTS = {"split": "train.max_tokens_per_forward",  # unitune+splitN: passes of <= N padded tokens
                  "ckpt": "train.checkpoint_above_tokens"}  # unitune+ckptN: long passes' first layers checkpointed


def add_tokens_variant(name: str) -> None:
    """unitune+splitN or unitune+ckptN (or unitune@REV+..., a baseline's): that unitune with the TOKEN_VARIANTS
    option set to N (its allocator as it chooses: unitune+budget also hands pages back after 10 ms), made when
    first named."""
    found = re.fullmatch(rf"(unitune(?:@\w+)?)\+({'|'.join(TOKEN_VARIANTS)})(\d+)", name)
    if found and name not in FRAMEWORKS and found[1] in FRAMEWORKS:
        base = FRAMEWORKS[found[1]]
        FRAMEWORKS[name] = replace(base, options={**base.options, TOKEN_VARIANTS[found[2]]: found[3]}, default=False)


def add_compile(name: str) -> None:
    """unitune+compileB (or unitune@REV+compileB): that unitune compiled, with `train.compile_memory_budget B`."""
    found = re.fullmatch(r"(unitune(?:@\w+)?)\+compile(\d*\.?\d+)", name)
    if found and name not in FRAMEWORKS and found[1] in FRAMEWORKS:
        base = FRAMEWORKS[found[1]]
        FRAMEWORKS[name] = replace(base, options={**base.options, "train.compile": "true",
                                                  "train.compile_memory_budget": found[2]}, default=False)


def add_optimizer(name: str) -> None:
    """X+adafactor (any framework, e.g. unitune+adafactor, ms-swift+adafactor): X with Adafactor for AdamW, as the
    HF Trainer's optim="adafactor" builds it (unitune: train.optimizer adafactor). Run only against each other:
    a peer variant counts as a peer, so a run mixing optimizers would compare across them."""
    base = name.removesuffix("+adafactor")
    if name.endswith("+adafactor") and name not in FRAMEWORKS and base in FRAMEWORKS:
        fw = FRAMEWORKS[base]
        option = {"optim": "adafactor"} if fw.peer else {"train.optimizer": "adafactor"}
        FRAMEWORKS[name] = replace(fw, options={**fw.options, **option}, default=False)


def add_mimalloc(name: str) -> None:
    """PEER+mimalloc: that peer run with mimalloc (from unitune's environment) preloaded, made when first named."""
    peer = name.removesuffix("+mimalloc")
    if name.endswith("+mimalloc") and name not in FRAMEWORKS and is_peer(peer):
        found = unitune_python("from unitune.malloc import library; print(library('mimalloc') or '')").strip()
        if not found:
            sys.exit(f"{name}: cmeel-mimalloc is not installed in .venv")
        FRAMEWORKS[name] = replace(FRAMEWORKS[peer], peer=False, default=False,
                                   env={**FRAMEWORKS[peer].env, "LD_PRELOAD": found})


def add_baseline(rev: str, out: Path) -> str:
    """unitune as of `rev`, checked out once into a worktree, run by the same interpreter with that tree
    first on PYTHONPATH (ahead of the editable install of the working tree)."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], check=True, capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    tree = (out / f"baseline-{commit}").resolve()
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], check=True, cwd=ROOT)
    name = f"unitune@{commit}"
    FRAMEWORKS[name] = replace(FRAMEWORKS["unitune"], script=str(tree / "bench/peers/unitune_run.py"),
                                           env={"PYTHONPATH": str(tree)})
    return name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated tasks ({', '.join(TASKS)})")
    p.add_argument("--frameworks", default="",
                   help=f"comma-separated ({', '.join(FRAMEWORKS)}, unitune+splitN, unitune+ckptN, unitune+compileB, PEER+mimalloc, X+adafactor)")
    p.add_argument("--precision", default="", help="fp32, bf16 or fp32,bf16 (default: bf16 too where the CPU has it)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--steps", type=int, default=0, help="timed steps, at most (default: each task's)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps, at most (default: each task's)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    p.add_argument("--out", default=str(BENCH / ".work"))
    p.add_argument("--report", default="", help="print the table of earlier results files (comma-separated) and exit")
    p.add_argument("--python", default="", help="one interpreter for every framework (e.g. on a GPU machine)")
    p.add_argument("--model", default="", help="a model folder instead of the built-in SmolLM2-135M-Instruct")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=0, help="default: each task's")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--baseline", default="",
                   help="also run unitune at this git revision (a worktree under --out), as unitune@REV: before/after; "
                        "name unitune@REV+splitN in --frameworks to run it with N-token passes instead")
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for every run (default: torch's, all cores)")
    args = p.parse_args()
    if args.threads:
        THREADS["OMP_NUM_THREADS"] = str(args.threads)
    global PYTHON
    PYTHON = args.python or PYTHON
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model, data, shape = prepare(out, args.model)
    if args.report:  # one or more results files; a cell's ratios pair runs of the same file and repeat
        rows = []
        for k, path in enumerate(args.report.split(",")):
            for line in open(path):
                if line.strip():
                    rows.append({**json.loads(line), "file": k})
                    rows[-1]["repeat"] = f"{k}-{rows[-1]['repeat']}"
                    add_optimizer(rows[-1]["framework"])  # so that a peer's variant counts as a peer
        rates = {}
        for r in rows:
            for k, v in r.get("matmul", {}).items():
                if k in ("fp32", "bf16") and v:
                    rates.setdefault(k, []).append(v)
        print(table(rows, shape, {k: sorted(set(v)) for k, v in rates.items()}))
        return 0
    tasks = [t for t in (args.only.split(",") if args.only else TASKS) if t]
    baseline = add_baseline(args.baseline, out) if args.baseline else ""
    names = [n for n in (args.frameworks.split(",") if args.frameworks else
                         [n for n, fw in FRAMEWORKS.items() if fw.default]) if n]
    names += [baseline] if baseline and not any(n.split("+")[0] == baseline for n in names) else []
    for n in names:
        add_tokens_variant(n)
        add_compile(n)
        add_mimalloc(n)
        add_optimizer(n)
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown:
        p.error(f"unknown framework(s) {', '.join(unknown)}; known: {', '.join(FRAMEWORKS)}, unitune+splitN, unitune+ckptN, "
                "unitune+compileB, unitune@REV+splitN (with --baseline REV), PEER+mimalloc, X+adafactor")
    if not args.python:
        for n in names:
            if not (ROOT / FRAMEWORKS[n].python).exists():
                print(f"bench: {n} skipped: {FRAMEWORKS[n].python} is missing (bash bench/setup_peers.sh)")
        names = [n for n in names if (ROOT / FRAMEWORKS[n].python).exists()]
    first = matmul_rates(args.device)
    precisions = args.precision.split(",") if args.precision else ["fp32"] + (["bf16"] if first["bf16_cpu"] else [])
    if "bf16" in precisions and args.device == "cpu" and not first["bf16_cpu"]:
        print("bench: warning: this CPU has no bf16 arithmetic (AVX-512 BF16 or AMX); its bf16 cells measure "
              "PyTorch's emulation (an SFT step ~24x slower than fp32)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = out / f"results-{stamp}.jsonl"
    print(f"bench: {len(tasks)} task(s) x {precisions} x {names}, {args.repeats} repeat(s); raw results in {results}")
    rows, rates = [], {"fp32": [], "bf16": []}
    for repeat in range(args.repeats):
        for task_name in tasks:
            for precision in precisions:
                rate = matmul_rates(args.device)
                for k in rates:
                    if rate[k]:  # None: not measured (bf16 on a CPU that emulates it)
                        rates[k].append(rate[k])
                here = [n for n in names if task_name in FRAMEWORKS[n].tasks]
                k = repeat % max(1, len(here))
                for name in here[k:] + here[:k]:  # the order rotates with the repeat
                    row = run_one(name, task_name, precision, repeat, model, data, out, args)
                    row["matmul"] = {key: rate[key] for key in ("fp32", "bf16")}
                    rows.append(row)
                    with open(results, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    shown = (f"{row['tokens_per_s']:.0f} tok/s" if "tokens_per_s" in row else row.get("error", "?"))
                    print(f"bench: {task_name} {precision} {name} r{repeat}: {shown}, "
                          f"peak {row['peak_rss'] / 2**30:.2f} GiB, {row['wall_s']:.0f}s", flush=True)
    print()
    print(table(rows, shape, rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
