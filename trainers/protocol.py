"""The stage protocol: what a training method (SFT, RM, DPO, RRHF, PPO) gives the shared loop.

A stage subclasses `Stage` and supplies what is specific to its method; `trainers.loop.train(stage, settings)` does
everything else: optimisation, gradient accumulation, mixed precision, LR schedule, clipping, eval, logging,
checkpoints and exact resume. Every hook below has a default, so a stage overrides only what it needs.

Required:
    name: str                                   # "sft", "rm", ... (used in logs and the progress bar)
    model: torch.nn.Module                      # the ONE module the loop optimises (PPO wraps policy + value in
                                                # one nn.Module); frozen models stay attributes of the stage
    loss(model, batch) -> (loss, metrics)       # loss: scalar tensor, the MEAN over `count(batch)` units;
                                                # metrics: dict[str, float | 0-d tensor], also means (logged)
    and either
    train_dataset() -> Sequence                 # map-style rows; the loop shuffles (seeded), batches, resumes
    collate(rows: list) -> dict[str, Tensor]    # CPU tensors; the loop moves them to the device
    or
    batches(ctx) -> Iterator[dict]              # (train_dataset() returns None) the stage makes its own
                                                # micro-batches (PPO rollouts); grad_accum of them per step

Optional:
    count(batch) -> int | float                 # units the mean in loss() is over (SFT: completion tokens; DPO:
                                                # pairs). Default: rows. The loop weights micro-batches (and
                                                # processes) by it, so a step's loss is sum(loss_i * count_i) /
                                                # sum(count_i) over the global batch: packed == unpacked, 2
                                                # processes == 1.
    eval_dataset() -> Sequence | None           # eval uses the same collate() and loss() under no_grad
    evaluate(ctx) -> dict | None                # extra eval metrics at each eval point, on every process;
                                                # None: the stage has none
    setup(ctx)                                  # once after accelerator.prepare (move frozen models to ctx.device)
    param_groups(model) -> list[dict] | None    # custom optimizer groups; None: all trainable params, no weight
                                                # decay on biases/norms
    state_dict() -> dict | None, load_state_dict(d)  # extra state in every checkpoint (PPO rollout buffer and
                                                # counters), restored BEFORE batches(ctx); None: no extra state
    save(ctx, out_dir)                          # write the final model; default: save_pretrained of the model
                                                # (+ tokenizer). Called on EVERY process (ZeRO-3 gathers weights
                                                # collectively): write files only if ctx.is_main
    lengths() -> Sequence[int] | None           # row lengths; rows of similar length share micro-batches

`ctx` is a `LoopContext`: ctx.accelerator, ctx.model (prepared/wrapped), ctx.unwrapped (the plain module, use it
for generate()), ctx.device, ctx.step (optimizer steps done), ctx.cfg (the LoopSettings), ctx.is_main, ctx.log(dict)
(extra metrics into the JSONL/TensorBoard stream).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainers.config import LoopSettings


@dataclass
class LoopContext:
    """What the loop hands to stage hooks."""

    accelerator: Any
    model: torch.nn.Module
    unwrapped: torch.nn.Module
    cfg: LoopSettings
    step: int = 0
    log: Callable[[dict], None] = lambda record: None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


@dataclass
class TrainResult:
    """What `trainers.loop.train` returns (stages may attach more, e.g. PPO's `rollouts`)."""

    steps: int
    history: list[dict]
    final_dir: str | None
    last_checkpoint: str | None


class Stage:
    """Base class of every stage, with the protocol's defaults (see the module docstring)."""

    name = "stage"
    model: torch.nn.Module
    tokenizer: Any = None

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def train_dataset(self) -> Sequence | None:
        return None

    def collate(self, rows: list) -> dict:
        raise NotImplementedError(f"{type(self).__name__} has a train_dataset() but no collate()")

    def batches(self, ctx: LoopContext) -> Iterator[dict]:
        raise NotImplementedError(f"{type(self).__name__} needs train_dataset() + collate(), or batches()")

    def count(self, batch: dict) -> float:
        for v in batch.values():
            if isinstance(v, torch.Tensor):
                return v.shape[0]
        raise ValueError("batch has no tensor to count rows from")

    def eval_dataset(self) -> Sequence | None:
        return None

    def evaluate(self, ctx: LoopContext) -> dict | None:
        return None

    def setup(self, ctx: LoopContext) -> None:
        pass

    def param_groups(self, model: torch.nn.Module) -> list[dict] | None:
        return None

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict) -> None:
        pass

    def lengths(self) -> Sequence[int] | None:
        return None

    def save(self, ctx: LoopContext, out_dir: Path) -> None:
        acc = ctx.accelerator
        state = acc.get_state_dict(ctx.model)
        unwrapped = acc.unwrap_model(ctx.model)
        if hasattr(unwrapped, "config") and getattr(unwrapped.config, "use_cache", None) is False:
            unwrapped.config.use_cache = True
        unwrapped.save_pretrained(out_dir, state_dict=state, is_main_process=acc.is_main_process,
                                  save_function=acc.save, safe_serialization=True)
        if acc.is_main_process and self.tokenizer is not None:
            self.tokenizer.save_pretrained(out_dir)
