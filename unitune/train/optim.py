"""The optimizer (AdamW, or Adafactor for a smaller state) and the learning-rate schedule: linear warmup,
then cosine, linear or constant."""

import math

import torch


def build_optimizer(model, cfg) -> torch.optim.Optimizer:
    """`train.optimizer` over the trainable parameters; no weight decay on biases and norms (1-D tensors).

    adamw: the fused kernel (one pass over all parameters) where torch has it for every parameter's device
    and dtype: on CPU, torch's default is a Python loop over the tensors, ~8x slower per step for a 135M
    model (BENCHMARKS.md); the numbers are the same (tests/train/test_optim.py).

    adafactor: transformers' Adafactor with the settings the HF Trainer gives `optim="adafactor"` (so
    TRL, ms-swift and LLaMA-Factory too): the learning rate as given (no relative step, no parameter
    scaling), no first moment, and the second moment of a matrix factored into its row and column
    means. Its state is ~1 MB for SmolLM2-135M where AdamW's is 1.0 GiB (two fp32 copies of the weights);
    its step is a Python loop over the tensors (~0.5 s a step for 135M parameters on 2 cores against
    fused AdamW's 0.05)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=cfg.lr, scale_parameter=False, relative_step=False)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas), fused=fused or None)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer, cfg, total_steps: int):
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg.scheduler))


class StepInBackward:
    """The optimizer applied to each parameter inside backward, the moment its gradient is complete (a
    post-accumulate-grad hook), after which that gradient is freed: the model's gradients never all exist
    at once (torchtune's `optimizer_in_bwd`, LOMO). That lowers the peak only where the gradients are at
    it: under gradient checkpointing (SmolLM2-135M full FT: in-use peak 1.76 -> 1.53 GiB); without it the
    peak is the end of the forward, before any gradient exists (BENCHMARKS.md). It is the same optimizer
    object, so its state, the learning-rate schedule and checkpoints are those of an ordinary step, and so are the updates: AdamW is elementwise, and
    while a backward runs every other gradient is None, so `optimizer.step()` moves only the parameter
    whose hook fired. What it rules out is anything that needs all gradients first: clipping by their
    global norm, accumulating over micro-batches or passes (the trainer checks).

    The hooks step only inside `with step_in_backward:`, which also sums the gradients' squared norm."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer, self.active, self.sq = optimizer, False, None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for p in params:
            p.register_post_accumulate_grad_hook(self._step)

    def _step(self, param: torch.Tensor) -> None:
        if not self.active:
            return
        sq = param.grad.detach().float().square().sum()
        self.sq = sq if self.sq is None else self.sq + sq
        self.optimizer.step()
        param.grad = None

    def __enter__(self):
        self.active, self.sq = True, None
        return self

    def __exit__(self, *exc) -> None:
        self.active = False

    def grad_norm(self) -> float:
        """The global gradient norm of the last backward (as `clip_grad_norm_` would have reported it)."""
        return float(self.sq.sqrt()) if self.sq is not None else 0.0
