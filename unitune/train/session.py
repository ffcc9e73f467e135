"""One training run from a config: data -> features -> model -> loop -> outputs.

Outputs in `train.output_dir`: config.yaml (feed it back with --config to
repeat the run), metrics.jsonl, tb/, checkpoints/step-N/, final/ (loads with
transformers, carrying tokenizer and chat template), loss.png and a run card
README.md.
"""

import sys
import time
from dataclasses import replace
from pathlib import Path

from unitune.config import Config, to_yaml
from unitune.data import load_splits
from unitune.errors import UnituneError
from unitune.malloc import active
from unitune.models.load import X86, load_model, load_tokenizer, slow_dtype_warning, slow_on_this_cpu
from unitune.models.lora import (count_parameters, frozen_base_dtype, lower_frozen_base, prepare_for_training,
                                 restore_frozen_base)
from unitune.objectives import build_objective
from unitune.templates import resolve_chat_template
from unitune.train.allocator import cap_kernel_cache, cpu_allocator, trim_heap
from unitune.train.loop import Trainer, check_in_backward, tokens_per_forward
from unitune.train.metrics import plot_loss
from unitune.train.runcard import fingerprint, save_final, write_run_card


def train_session(verb: str, cfg: Config) -> dict:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    started = time.perf_counter()
    cap_kernel_cache()  # before any matmul runs
    asked = cfg.train.mixed_precision
    if asked == "auto":  # from here on (config.yaml included) the run's own choice
        cfg = replace(cfg, train=replace(cfg.train, mixed_precision=auto_mixed_precision(_no_gpu())))
    AcceleratorState._reset_state()  # several runs in one process (the Python API) may differ in precision
    acc = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=_no_gpu())
    if cfg.train.max_tokens_per_forward == "auto":  # like mixed_precision: config.yaml records the choice
        budget = tokens_per_forward("auto", verb=verb, device_type=acc.device.type, lora=cfg.lora.enabled,
                                    checkpointing=cfg.train.gradient_checkpointing,
                                    in_backward=cfg.train.optimizer_in_backward,
                                    autocast=cfg.train.mixed_precision != "no")
        cfg = replace(cfg, train=replace(cfg.train, max_tokens_per_forward=budget))
        if budget:
            acc.print(f"unitune: train.max_tokens_per_forward auto: {budget} (LoRA on {acc.device.type}: a batch "
                      f"longer than {budget} padded tokens trains as several passes, with the same gradients)")
    if cfg.train.optimizer_in_backward:  # before the data and the model load, not after
        check_in_backward(cfg.train, acc)
    set_seed(cfg.train.seed)
    low = {"bf16": "bfloat16", "fp16": "float16"}.get(cfg.train.mixed_precision)
    if asked == "auto":
        acc.print(f"unitune: train.mixed_precision auto: {cfg.train.mixed_precision} "
                  f"({'bf16 arithmetic' if low else 'no bf16 arithmetic'} on this {acc.device.type})")
    elif low and acc.device.type == "cpu" and slow_on_this_cpu(low) and acc.is_main_process:
        print(slow_dtype_warning(f"train.mixed_precision {cfg.train.mixed_precision}", low,
                                 "--train.mixed_precision no"), file=sys.stderr)
    out = Path(cfg.train.output_dir)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(f"# unitune {verb}: repeat with `unitune {verb} --config config.yaml`\n"
                                         + to_yaml(cfg))
    tokenizer = load_tokenizer(cfg.model.name)
    chat_template = resolve_chat_template(tokenizer, cfg.template.name)
    tokenizer.chat_template = chat_template

    train_ex, val_ex, notes = load_splits(cfg.data, verb)
    objective = build_objective(verb, cfg, tokenizer)
    rows, train_notes = objective.rows(train_ex, "train")
    val_rows, val_notes = objective.rows(val_ex, "val") if val_ex else ([], [])
    notes += train_notes + val_notes
    for line in notes:
        acc.print(f"unitune: {line}")
    if not rows:
        raise UnituneError("no training example is left after rendering and truncation (see the counts above)")

    base_dtype = frozen_base_dtype(cfg, verb)

    def load_base():
        if hasattr(objective, "load_model"):  # e.g. rm: a sequence classifier
            return objective.load_model(acc)
        return load_model(cfg.model.name, dtype=cfg.model.dtype, device_type=acc.device.type,
                          attn_implementation=cfg.model.attn_implementation,
                          trust_remote_code=cfg.model.trust_remote_code)

    if cfg.train.compile:
        from torch._dynamo.utils import counters

        from unitune.models.compile import check_compiler

        check_compiler(acc.device.type)
        graphs_before = counters["stats"]["unique_graphs"]  # the process's count: an API caller may train twice
    model = prepare_for_training(load_base(), cfg.lora, cfg.train)
    trainable, total = count_parameters(model)
    acc.print(f"unitune: {cfg.model.name}: {trainable:,} of {total:,} parameters trainable "
              f"({'LoRA r=%d' % cfg.lora.r if cfg.lora.enabled else 'full fine-tuning'}), "
              f"{acc.num_processes} process(es) on {acc.device.type}")
    if budget := cfg.train.checkpoint_above_tokens:
        acc.print(f"unitune: train.checkpoint_above_tokens {budget}: a pass of T > {budget} padded tokens runs the "
                  f"first ceil(L (1 - {budget}/T)) of its L decoder layers checkpointed (the same gradients)")
    if cfg.train.compile:
        acc.print(f"unitune: train.compile: decoder layers compiled for training (the first steps compile them), "
                  f"keeping at most {cfg.train.compile_memory_budget:g} of the activations compile would keep "
                  "(train.compile_memory_budget)")
    if base_dtype is not None and (moved := lower_frozen_base(model, base_dtype)):
        acc.print(f"unitune: frozen base weights stored in {str(base_dtype).removeprefix('torch.')}, the dtype "
                  f"autocast computes them in ({moved:,} parameters; lora.base_dtype)")

    if hasattr(objective, "prepare"):  # e.g. a reference model, or reference log-probs precomputed
        objective.prepare(model, acc, rows, val_rows)
    trainer = Trainer(model=model, objective=objective, rows=rows, val_rows=val_rows, cfg=cfg.train,
                      accelerator=acc, output_dir=out, fingerprint=fingerprint(train_ex),
                      row_lengths=[objective.length(r) for r in rows],
                      group_by_length=cfg.data.group_by_length and not cfg.data.packing)
    if cfg.train.resume:
        trainer.resume(cfg.train.resume)
    with cpu_allocator(cfg.train.cpu_allocator, device_type=acc.device.type, full_finetune=not cfg.lora.enabled,
                       checkpointing=cfg.train.gradient_checkpointing) as allocator:
        if acc.device.type == "cpu":
            malloc = "the C library's" if active() == "system" else active()
            acc.print(f"unitune: malloc: {malloc} (UNITUNE_MALLOC; unitune/malloc.py)")
        if allocator == "keep":
            acc.print("unitune: CPU allocator keeps freed memory for reuse while training (train.cpu_allocator)")
        elif allocator == "trim":
            trainer.after_step = trim_heap
            acc.print("unitune: CPU allocator hands freed memory back after every step (train.cpu_allocator)")
        metrics = trainer.fit()
    if cfg.train.compile:
        acc.print(f"unitune: train.compile: {counters['stats']['unique_graphs'] - graphs_before} graph(s) compiled "
                  "(a new one for each input shape or kind the dynamic ones do not cover)")
    acc.wait_for_everyone()
    if acc.is_main_process:
        merge = cfg.lora.enabled and cfg.lora.merge
        if merge and base_dtype is not None:  # merge into the original weights, not their bf16 copies
            restore_frozen_base(trainer.unwrapped, load_base())
        save_final(trainer.unwrapped, tokenizer, out / "final", merge=merge)
        if cfg.train.plot and trainer.log.rows:
            plot_loss(trainer.log.rows, out / "loss.png", f"unitune {verb}: {cfg.model.name}")
            if hasattr(objective, "plot"):  # the objective's own curves (grpo: reward.png)
                objective.plot(trainer.log.rows, out)
        trainer.log.close()
        write_run_card(out, verb, cfg, notes, metrics, {"train": fingerprint(train_ex), "val": fingerprint(val_ex)},
                       time.perf_counter() - started)
        acc.print(f"unitune: done in {time.perf_counter() - started:.0f}s; final model in {out / 'final'}")
    acc.wait_for_everyone()
    return metrics


def auto_mixed_precision(cpu: bool) -> str:
    """What `train.mixed_precision auto` runs: bf16 autocast where the hardware computes bf16 (a GPU that
    supports it; a CPU with AVX-512 BF16 or AMX, where a LoRA step ran ~1.5x fp32's rate), else none:
    a CPU without it emulates bf16 at a twentieth of fp32's speed (BENCHMARKS.md)."""
    import platform

    import torch

    if cpu:  # off x86 the probe cannot tell, so stay in fp32
        return "bf16" if platform.machine().lower() in X86 and not slow_on_this_cpu("bfloat16") else "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "no"


def _no_gpu() -> bool:
    import torch

    return not torch.cuda.is_available()
