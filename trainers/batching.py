"""What each optimizer step trains on: seeded (optionally length-grouped) row order, this process's micro-batches,
and the data position that makes resume exact."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from flanmix.core.errors import FlanmixError
from trainers.config import LoopSettings
from trainers.protocol import LoopContext, Stage


class IndexStream:
    """Row indices of a map-style dataset as an endless stream of seeded per-epoch permutations.

    The rows of global step s are positions [s*G, (s+1)*G): a pure function of (seed, position), so resuming only
    needs the position. With `lengths` and `group` (= G), each epoch's permutation is length-grouped: it is cut
    into windows of GROUP_WINDOW steps, each window is sorted by length and cut into steps, and the steps of a
    window are shuffled, so a step holds rows of similar length (little padding) while the epoch stays random.
    """

    GROUP_WINDOW = 32

    def __init__(self, n: int, seed: int, lengths: Sequence[int] | None = None, group: int = 0):
        self.n, self.seed = n, seed
        self.lengths, self.group = lengths, group
        self._epoch, self._perm = -1, None

    def perm(self, epoch: int) -> list[int]:
        """The row order of one epoch (cached: consecutive steps mostly read the same epoch)."""
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            if self.lengths is not None and self.group > 0:
                perm = self._grouped(perm, g)
            self._epoch, self._perm = epoch, perm
        return self._perm

    def _grouped(self, perm: list[int], g: torch.Generator) -> list[int]:
        out: list[int] = []
        window = self.group * self.GROUP_WINDOW
        for start in range(0, len(perm), window):
            chunk = sorted(perm[start:start + window], key=lambda i: -self.lengths[i])
            steps = [chunk[k:k + self.group] for k in range(0, len(chunk), self.group)]
            for j in torch.randperm(len(steps), generator=g).tolist():
                out.extend(steps[j])
        return out

    def take(self, start: int, count: int) -> list[int]:
        """Row indices at stream positions [start, start + count)."""
        return [self.perm(p // self.n)[p % self.n] for p in range(start, start + count)]


def total_steps(cfg: LoopSettings, dataset: Sequence | None, world: int) -> int:
    """Optimizer steps of the run: max_steps, else epochs over the dataset at the global batch size."""
    if dataset is None:
        if cfg.max_steps is None:
            raise FlanmixError("a stage that makes its own batches needs max_steps", field="max_steps")
        return cfg.max_steps
    if len(dataset) == 0:
        raise FlanmixError("training dataset is empty", field="data")
    global_rows = cfg.batch_size * cfg.grad_accum * world
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * len(dataset) / global_rows))


class StepBatches:
    """This process's `grad_accum` micro-batches of each step, from the stage's dataset (shuffled by a seeded
    `IndexStream`, cut into global batches, each process taking its share) or from `stage.batches(ctx)`.

    `position` counts rows (or stage-made micro-batches) consumed so far; it is saved in checkpoints.
    """

    def __init__(self, stage: Stage, ctx: LoopContext, dataset: Sequence | None, position: int = 0):
        cfg, acc = ctx.cfg, ctx.accelerator
        self.stage, self.dataset, self.position = stage, dataset, position
        self.grad_accum, self.batch_size = cfg.grad_accum, cfg.batch_size
        self.world, self.rank = acc.num_processes, acc.process_index
        self.global_rows = cfg.batch_size * cfg.grad_accum * self.world
        self.lengths = stage.lengths() if dataset is not None else None
        self.stream: IndexStream | None = None
        self.made: Iterator[dict] | None = None
        if dataset is None:
            self.made = iter(stage.batches(ctx))
        else:
            grouping = self.lengths if cfg.group_by_length else None
            self.stream = IndexStream(len(dataset), cfg.seed, grouping, self.global_rows)

    @property
    def epoch(self) -> float | None:
        return self.position / len(self.dataset) if self.dataset is not None else None

    def next_step(self) -> list[dict]:
        """This process's micro-batches of the next step (CPU tensors)."""
        if self.made is not None:
            micro = [next(self.made) for _ in range(self.grad_accum)]
            self.position += self.grad_accum
            return micro
        idx = self.stream.take(self.position, self.global_rows)
        self.position += self.global_rows
        if self.lengths is not None:
            # Rows of similar length share a micro-batch (less padding); the step's loss does not depend on it.
            lengths = self.lengths
            idx.sort(key=lambda i: -lengths[i])
        size = self.batch_size
        chunks = [idx[k * size:(k + 1) * size] for k in range(self.grad_accum * self.world)]
        return [self.stage.collate([self.dataset[i] for i in chunks[k]])
                for k in range(self.rank, len(chunks), self.world)]


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch with its tensors on `device` (other values as they are)."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def num_tokens(batch: dict) -> int:
    """Tokens in a batch, for throughput: `num_tokens` if the collator set it, else attended or all positions."""
    if "num_tokens" in batch:
        return int(batch["num_tokens"])
    am = batch.get("attention_mask")
    if isinstance(am, torch.Tensor) and am.ndim == 2:
        return int(am.sum())
    ids = batch.get("input_ids")
    return int(ids.numel()) if isinstance(ids, torch.Tensor) else 0
