"""The optimizer and the learning-rate schedule of the loop."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from flanmix.core.errors import FlanmixError
from trainers.config import LoopSettings


def lr_lambda(schedule: str, warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step `step` (0-based): linear warm-up, then decay."""
    if schedule not in ("cosine", "linear", "constant"):
        raise FlanmixError(f"unknown schedule {schedule!r}", field="schedule", expected="cosine | linear | constant")

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - (1.0 - min_ratio) * progress
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices only (not biases, norms, or 1-d params)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def adamw(groups: list[dict], cfg: LoopSettings) -> torch.optim.Optimizer:
    """AdamW, fused where torch has a fused kernel for the parameters' device (CPU and CUDA): the per-parameter
    Python loop of the default CPU implementation costs about as much as a tiny model's backward pass."""
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    devices = {p.device.type for g in groups for p in g["params"]}
    dtypes = {p.dtype for g in groups for p in g["params"]}
    if devices <= {"cpu", "cuda"} and dtypes <= {torch.float32, torch.float16, torch.bfloat16}:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # older torch without a fused kernel for this device
            pass
    return torch.optim.AdamW(groups, **kwargs)


def lr_scheduler(optimizer: torch.optim.Optimizer, cfg: LoopSettings, total_steps: int):
    """Warm-up then cosine / linear / constant decay over `total_steps` optimizer steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.schedule, cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
