"""The training loop: the only one in unitune.

It owns devices and distribution (through accelerate), mixed precision,
gradient accumulation, clipping, the optimizer and schedule, evaluation,
checkpointing, logging and progress. Objectives own only their math (see
objectives/base.py).

Data order is a pure function of (seed, epoch): every epoch is a seeded
permutation of the rows cut into micro-batches, and optimizer step s takes
micro-batches [s*GA*W, (s+1)*GA*W) with rank r taking its GA of them. So a
resumed run needs only the step number to continue exactly, and W ranks with
GA micro-batches each see the same data as one process with GA*W.

The loss of each micro-batch is its sum divided by the unit count of the whole
step (all micro-batches, all ranks), times W because DDP averages gradients.
So a micro-batch can also run as several forward/backward passes over parts of
its rows (train.max_tokens_per_forward) with the same gradient, where the
objective's loss is a sum of per-row terms (`rows_independent`); an objective
that makes its own batches (RL's generation phase) cuts them itself.
"""

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from unitune.errors import UnituneError
from unitune.train import checkpoint
from unitune.train.metrics import MetricsLog
from unitune.train.optim import StepInBackward, build_optimizer, build_scheduler


def epoch_batches(lengths: list[int], epoch: int, batch_size: int, seed: int, group_by_length: bool) -> list[list[int]]:
    """Micro-batches of row indices for one epoch; with grouping, similar lengths share a batch."""
    order = list(range(len(lengths)))
    rng = random.Random(seed * 1_000_003 + epoch)
    rng.shuffle(order)
    if group_by_length:
        mega = batch_size * 32
        order = [i for k in range(0, len(order), mega)
                 for i in sorted(order[k:k + mega], key=lambda i: -lengths[i])]
    batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def split_by_tokens(batch: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """`batch` (row indices, in order) cut into consecutive parts of at most `budget` padded tokens
    (rows x the longest row); a row longer than the budget is a part of its own."""
    parts, part, longest = [], [], 0
    for i in batch:
        if part and max(longest, lengths[i]) * (len(part) + 1) > budget:
            parts.append(part)
            part, longest = [], 0
        part.append(i)
        longest = max(longest, lengths[i])
    return parts + [part] if part else parts


CPU_TOKENS_PER_FORWARD = 768  # what train.max_tokens_per_forward auto is for LoRA on CPU in fp32
CPU_TOKENS_PER_FORWARD_AUTOCAST = 1024  # ... and under bf16 / fp16 autocast (activations of half the bytes)
CUT_BY_THE_LOOP = ("pt", "sft", "dpo", "rm")  # verbs whose micro-batches the loop may cut: a loss summed over rows


def tokens_per_forward(setting: int | str, *, verb: str, device_type: str, lora: bool, checkpointing: bool,
                       in_backward: bool, autocast: bool) -> int:
    """What train.max_tokens_per_forward = setting is in this run: the padded tokens of one pass, 0 for one
    pass per micro-batch.

    auto cuts a LoRA micro-batch on CPU into passes of at most 768 padded tokens in fp32, 1024 under
    autocast. LoRA's gradients are small, so the passes cost little, and a step holds one pass's
    activations instead of the whole batch's. In the benchmark's fp32 SFT LoRA cell (batches of 4 rows
    of 150-300 tokens) on a Zen 4, with the linears through oneDNN (models/onednn_linear.py), two repeats
    alternating: passes of 1024 tokens peaked at 1.86 GiB at 220 / 220 tokens/s, of 768 at 1.65 GiB at
    229 / 222, of 512 at 1.45 GiB at 225 / 204 (BENCHMARKS.md). Under bf16 autocast a token's
    activations take half the bytes and 1024 leaves that cell at 0.63-0.66x the lightest peer's peak.
    Everywhere else auto is 0: on a GPU longer passes run faster; in full fine-tuning the first pass's
    gradients, as large as the weights, would stay beside the next pass's activations; checkpointing
    already keeps little; stepping inside backward needs one pass; kto's loss couples its rows; and
    grpo cuts its own generated batches."""
    if setting != "auto":
        return setting
    cut = (device_type == "cpu" and lora and verb in CUT_BY_THE_LOOP and not checkpointing and not in_backward)
    if not cut:
        return 0
    return CPU_TOKENS_PER_FORWARD_AUTOCAST if autocast else CPU_TOKENS_PER_FORWARD


@dataclass
class Schedule:
    """How many steps, and which micro-batches each step and rank gets."""
    lengths: list[int]
    batch_size: int
    grad_accum: int
    world: int
    seed: int
    group_by_length: bool
    repeat: int = 1  # optimizer steps per step's worth of data (RL: num_iterations over one generation batch)

    @property
    def per_step(self) -> int:
        return self.grad_accum * self.world

    @property
    def steps_per_epoch(self) -> int:
        return self._data_steps * self.repeat

    @property
    def _data_steps(self) -> int:
        n = math.ceil(len(self.lengths) / self.batch_size)
        return max(1, math.ceil(n / self.per_step))

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        epoch, k = divmod(step // self.repeat, self._data_steps)
        batches = epoch_batches(self.lengths, epoch, self.batch_size, self.seed, self.group_by_length)
        # the last step of an epoch wraps around to fill its micro-batches (as DistributedSampler pads)
        picked = [batches[(k * self.per_step + j) % len(batches)] for j in range(self.per_step)]
        return picked[rank * self.grad_accum:(rank + 1) * self.grad_accum]


def check_in_backward(cfg, accelerator) -> None:
    """What train.optimizer_in_backward needs: nothing that must see all gradients before the step."""
    needs = []
    if cfg.max_grad_norm > 0:
        needs.append(f"train.max_grad_norm 0 (clipping by the global norm needs every gradient first; it is "
                     f"{cfg.max_grad_norm})")
    if cfg.grad_accum > 1:
        needs.append(f"train.grad_accum 1 (it is {cfg.grad_accum}: accumulated gradients must add up first)")
    if cfg.max_tokens_per_forward:
        needs.append(f"train.max_tokens_per_forward 0 (it is {cfg.max_tokens_per_forward}: a step's passes "
                     "must add up first)")
    if accelerator.num_processes > 1:
        needs.append(f"one process (there are {accelerator.num_processes}: gradients are averaged across them "
                     "after backward)")
    if getattr(accelerator, "scaler", None) is not None:
        needs.append("no fp16 loss scaling (train.mixed_precision fp16 unscales every gradient first; use bf16 or no)")
    if needs:
        raise UnituneError("train.optimizer_in_backward steps each parameter inside backward, so it needs "
                           + "; ".join(needs))


def total_steps(cfg, schedule: Schedule) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * schedule.steps_per_epoch))


class Trainer:
    """Runs `objective` on `model` over `rows` (features, or packed lists of features)."""

    def __init__(self, *, model, objective, rows, val_rows, cfg, accelerator, output_dir: Path,
                 fingerprint: str = "", row_lengths=None, group_by_length: bool = False):
        self.acc, self.cfg, self.objective = accelerator, cfg, objective
        self.rows, self.val_rows, self.output_dir = rows, val_rows, output_dir
        self.fingerprint = fingerprint
        lengths = row_lengths or [1] * len(rows)
        self.schedule = Schedule(lengths, cfg.batch_size, cfg.grad_accum, accelerator.num_processes,
                                 cfg.seed, group_by_length, getattr(objective, "steps_per_batch", 1))
        if not isinstance(cfg.max_tokens_per_forward, int) or cfg.max_tokens_per_forward < 0:
            raise UnituneError(f"train.max_tokens_per_forward must be 0 (off) or positive, got "
                               f"{cfg.max_tokens_per_forward!r} (auto is the session's to resolve: tokens_per_forward)")
        if cfg.max_tokens_per_forward and not getattr(objective, "rows_independent", False):
            raise UnituneError(f"train.max_tokens_per_forward: the {objective.name} loss is not a sum of per-row terms, "
                               "so splitting a micro-batch would change it; lower train.batch_size and raise "
                               "train.grad_accum instead")
        self.total = total_steps(cfg, self.schedule)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total)
        self.model = accelerator.prepare(model)
        self.in_backward = None  # train.optimizer_in_backward: the optimizer steps inside backward
        if cfg.optimizer_in_backward:
            check_in_backward(cfg, accelerator)
            self.in_backward = StepInBackward(self.optimizer)
        self.step = 0
        self.log = MetricsLog(output_dir, cfg.tensorboard) if accelerator.is_main_process else None
        self.after_step = None  # called after every optimizer step (e.g. the allocator's trim)

    @property
    def unwrapped(self):
        return self.acc.unwrap_model(self.model)

    # ---- one optimizer step -------------------------------------------------------------------
    def train_step(self) -> dict | None:
        acc, model = self.acc, self.model
        model.train()
        micro = self.schedule.micro_batches(self.step, acc.process_index)
        budget = self.cfg.max_tokens_per_forward
        if budget and not hasattr(self.objective, "step_batches"):  # a step_batches hook makes (and cuts) its own
            parts = [part for mb in micro for part in split_by_tokens(mb, self.schedule.lengths, budget)]
            if self.step == 0:
                acc.print(f"unitune: train.max_tokens_per_forward {budget}: step 1 runs its {len(micro)} "
                          f"micro-batch(es) as {len(parts)} forward/backward passes")
            micro = parts
        micro = [[self.rows[i] for i in mb] for mb in micro]
        batches, step_metrics = self._make_batches(micro)
        units = self._global_sum(sum(self.objective.count(b) for b in batches))
        if units == 0:  # nothing to train on (e.g. every completion masked); still report how the batch was made
            if not step_metrics:
                return None
            self.step += 1
            return {"skipped_empty": 1, **step_metrics}
        if self.in_backward is not None and len(batches) > 1:
            raise UnituneError(f"train.optimizer_in_backward: step {self.step + 1} has {len(batches)} forward/backward "
                               f"passes, whose gradients must add up before the optimizer steps; the {self.objective.name} "
                               "objective makes them itself, so lower its batch or set train.optimizer_in_backward false")
        loss_sum, metric_sums, tokens = 0.0, {}, 0
        for k, batch in enumerate(batches):
            batch = {key: v.to(acc.device) for key, v in batch.items()}
            tokens += int(batch.get("num_tokens", 0))
            sync = nullcontext() if k == len(batches) - 1 else acc.no_sync(model)
            with sync, acc.autocast():
                loss, metrics = self.objective.loss(model, batch)
                # stepping inside backward cannot be undone: a non-finite loss skips the backward instead
                if self.in_backward is None or math.isfinite(float(loss.detach())):
                    with self.in_backward or nullcontext():
                        acc.backward(loss * acc.num_processes / units)
            loss_sum += float(loss.detach())
            _accumulate(metric_sums, metrics)
        totals = self._global_sums({"loss": loss_sum, **metric_sums, "_tokens": tokens})
        loss_value = totals.pop("loss") / units
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            if self.cfg.on_nan == "stop":
                raise UnituneError(f"loss is {loss_value} at step {self.step + 1}; lower train.lr, check the data, "
                                   "or pass --train.on_nan skip to skip such steps")
            self.step += 1
            self.acc.print(f"unitune: step {self.step}: loss is {loss_value}, step skipped (train.on_nan=skip)")
            return {"skipped_nan": 1}
        if self.in_backward is not None:  # already stepped, parameter by parameter
            grad_norm = self.in_backward.grad_norm()
        else:
            grad_norm = self._clip()
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        row = {"loss": loss_value, "grad_norm": grad_norm, "tokens": int(totals.pop("_tokens"))}
        row.update(_means(totals, units))
        row.update(step_metrics)
        return row

    def _make_batches(self, micro: list[list]) -> tuple[list[dict], dict]:
        """The step's micro-batches, and metrics of making them. An objective with a `step_batches(model,
        micro_rows, step) -> (batches, metrics)` hook makes them itself (RL: generate with the current
        weights and score); otherwise each micro-batch's rows are collated."""
        hook = getattr(self.objective, "step_batches", None)
        if hook is None:
            return [self.objective.collate(rows) for rows in micro], {}
        return hook(self.unwrapped, micro, self.step)

    def _clip(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.max_grad_norm > 0:
            return float(self.acc.clip_grad_norm_(params, self.cfg.max_grad_norm))
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))) if params else 0.0

    def _global_sum(self, value: float) -> float:
        return self._global_sums({"v": value})["v"]

    def _global_sums(self, values: dict) -> dict:
        if self.acc.num_processes == 1:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self.acc.device)
        t = self.acc.reduce(t, reduction="sum")
        return dict(zip(values, t.tolist()))

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        rank, world, size = self.acc.process_index, self.acc.num_processes, self.cfg.batch_size
        mine = self.val_rows[rank::world]
        if hasattr(self.objective, "evaluate"):  # its own evaluation (RL: generate and score): {name: (sum, count)}
            sums = {}
            _accumulate(sums, self.objective.evaluate(self.unwrapped, mine))
            return {f"eval_{k}": v for k, v in _means(self._global_sums(sums), 1).items()}
        loss_sum, units, metric_sums = 0.0, 0, {}
        for k in range(0, len(mine), size):
            batch = {key: v.to(self.acc.device) for key, v in self.objective.collate(mine[k:k + size]).items()}
            with self.acc.autocast():
                loss, metrics = self.objective.loss(self.model, batch)
            loss_sum += float(loss)
            units += self.objective.count(batch)
            _accumulate(metric_sums, metrics)
        totals = self._global_sums({"loss": loss_sum, "_units": units, **metric_sums})
        n = max(1.0, totals.pop("_units"))
        return {f"eval_{name}": value for name, value in _means({"loss": totals.pop("loss"), **totals}, n).items()}

    # ---- the run ------------------------------------------------------------------------------
    def resume(self, spec: str) -> None:
        path = checkpoint.find(spec, self.output_dir / "checkpoints")
        state = checkpoint.load(path, self.unwrapped, self.optimizer, self.scheduler)
        if state.get("fingerprint") != self.fingerprint:
            raise UnituneError(f"cannot resume from {path}: it was trained on different data "
                               f"(fingerprint {state.get('fingerprint')} != {self.fingerprint})")
        self.step = state["step"]
        if self.log:
            self.log.resume_from(self.step)
        self.acc.print(f"unitune: resumed from {path} at step {self.step}")

    def save_checkpoint(self) -> None:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            checkpoint.save(self.output_dir / "checkpoints", self.step, self.unwrapped, self.optimizer,
                            self.scheduler, {"fingerprint": self.fingerprint}, self.cfg.save_total_limit)
        self.acc.wait_for_everyone()

    def fit(self) -> dict:
        cfg, acc = self.cfg, self.acc
        bar = None
        if cfg.progress and acc.is_main_process:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total, initial=self.step, desc=self.objective.name, unit="step", dynamic_ncols=True)
        if self.val_rows and cfg.eval_every and self.step == 0:
            start = {"step": 0, "epoch": 0.0, **self.evaluate()}  # the starting point of the eval curve
            if self.log:
                self.log.log(start)
        t_last, seen = time.perf_counter(), 0
        spe = self.schedule.steps_per_epoch
        while self.step < self.total:
            row = self.train_step()
            if self.after_step:
                self.after_step()
            if row is None:
                self.step += 1
                continue
            seen += row.get("tokens", 0)
            if bar:
                bar.update(1)
            evaluate = self.val_rows and (
                (cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == self.total)
            log = self.step % cfg.log_every == 0 or self.step == self.total or evaluate
            if log:  # throughput of training alone, measured before any evaluation
                now = time.perf_counter()
                row.update({"step": self.step, "epoch": round(self.step / spe, 4),
                            "lr": self.scheduler.get_last_lr()[0], "tokens_per_s": seen / max(now - t_last, 1e-9)})
            if evaluate:
                row.update(self.evaluate())
            if log:
                t_last, seen = time.perf_counter(), 0
                if self.log:
                    self.log.log(_ordered(row))
                if bar and "loss" in row:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.total:
                self.save_checkpoint()
        if bar:
            bar.close()
        final = {k: v for k, v in (self.log.rows[-1] if self.log and self.log.rows else {}).items()}
        return final


def _accumulate(sums: dict, metrics: dict) -> None:
    """Add a micro-batch's metrics: a value is a sum over the step's units, or a (sum, count)
    pair for means over something else (e.g. the desirable examples of a KTO batch)."""
    for name, value in metrics.items():
        if isinstance(value, tuple):
            sums[name] = sums.get(name, 0.0) + float(value[0])
            sums[f"{name}#count"] = sums.get(f"{name}#count", 0.0) + float(value[1])
        else:
            sums[name] = sums.get(name, 0.0) + float(value)


def _means(totals: dict, units: float) -> dict:
    """Global sums -> means; (sum, count) metrics with no count this step are left out."""
    out = {}
    for name, value in totals.items():
        if name.endswith("#count"):
            continue
        count = totals.get(f"{name}#count", units)
        if count:
            out[name] = value / count
    return out


def _ordered(row: dict) -> dict:
    head = ["step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s"]
    return {**{k: row[k] for k in head if k in row}, **{k: v for k, v in row.items() if k not in head}}
