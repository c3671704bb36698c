"""Rendering plan chunks into shard files, in this process or in forked worker processes.

A `ShardRenderer` holds everything a worker needs (leaves with their loaded tasks, the plan, the output folder,
filters). Workers are forked and receive it through the pool initializer's arguments, so tasks and examples are
inherited (copy-on-write), not pickled, and Python-registered tasks and generators work in workers too.

A FLAN few-shot row left without exemplars is replaced by a row of the same task and template type from another
example (`ShardRenderer.replacement`), drawn from the seed and the row's plan position, so the realized template-type
split is the plan's and shards do not depend on how the plan is cut.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.dedup import contaminated, first_occurrence_mask, row_keys
from flanmix.fewshot import FewShotDropped
from flanmix.mixture.plan import Plan, planned_rows
from flanmix.mixture.resolve import Leaf
from flanmix.prompts import Rendered
from flanmix.sources import stable_seed
from flanmix.task import Example
from flanmix.writer import ShardStats, make_table, shard_name, write_shard

FEWSHOT_REPLACEMENT_ATTEMPTS = 8  # other examples tried in place of a dropped FLAN few-shot row


class FewShotCounts(NamedTuple):
    """FLAN few-shot rows of a chunk left without exemplars: replaced by another example's row, or dropped."""

    replaced: int
    dropped: int


def row_error(task: str, example: Example, err: Exception) -> FlanmixError:
    """A rendering failure as one error naming the task and row (a FlanmixError keeps its file, line and field)."""
    if isinstance(err, FlanmixError):
        return FlanmixError(f"task {task!r}, row {example.example_id}: {err.message}", file=err.file,
                            line=err.line, field=err.field, expected=err.expected)
    return FlanmixError(f"task {task!r}, row {example.example_id}: {type(err).__name__}: {err}")


@dataclass(frozen=True)
class ShardRenderer:
    """Renders plan chunk `index` (rows [index·R, (index+1)·R)) into shard file `index` of `out`."""

    leaves: list[Leaf]
    plan: Plan
    seed: int
    rows_per_shard: int
    out: Path
    fmt: str
    messages: bool
    dedup: bool
    grams: set[int] | None  # n-gram hashes of evaluation data (decontamination), or None
    ngram: int
    tokenizer: Any = None  # a `tokenizers.Tokenizer` when token lengths are measured
    count_tokens: Callable[[str], int] | None = None  # measures few-shot budgets in tokens (mixture `tokenizer`)

    def render_rows(self, lo: int, hi: int) -> tuple[dict[str, list], int, FewShotCounts]:
        """Render plan rows [lo, hi); returns the columns, how many rows decontamination dropped and how many FLAN
        few-shot rows were replaced or dropped for want of exemplars (see `replacement`)."""
        plan = self.plan
        # Per-leaf lookups done once per chunk, not once per row (this loop is the hot path of a build).
        leaves = [(leaf.task.render_full, leaf.task.examples("train"), leaf.task.name, leaf.task.spec.collection,
                   leaf.settings.randomize_options) for leaf in self.leaves]
        inputs: list[str] = []
        targets: list[str] = []
        task_names: list[str] = []
        sources: list[str] = []
        ttypes: list[str] = []
        tidxs: list[int] = []
        example_ids: list[str] = []
        cots: list[bool] = []
        grams, n, seed = self.grams, self.ngram, self.seed
        dropped = fewshot_replaced = fewshot_dropped = 0
        count_tokens = self.count_tokens
        rows = zip(plan.leaf[lo:hi].tolist(), plan.example[lo:hi].tolist(), plan.ttype[lo:hi].tolist(),
                   plan.tidx[lo:hi].tolist(), plan.cot[lo:hi].tolist())
        for position, (leaf_i, ex_i, tt_i, tidx, cot) in enumerate(rows, lo):
            render, examples, name, source, randomize = leaves[leaf_i]
            example = examples[ex_i]
            ttype = TEMPLATE_TYPES[tt_i]
            try:
                out = render(example, template_type=ttype, template_idx=tidx, cot=cot, seed=seed,
                             randomize_options=randomize, count_tokens=count_tokens)
            except FewShotDropped:  # FLAN drops a few-shot row when no exemplar is left: render another in its place
                found = self.replacement(position, leaf_i, ex_i, ttype, tidx, cot)
                if found is None:
                    fewshot_dropped += 1
                    continue
                fewshot_replaced += 1
                example, tidx, out = found
            except Exception as err:  # noqa: BLE001 - report any failure with the task and row it happened on
                raise row_error(name, example, err) from None
            if grams is not None and (contaminated(out.inputs, grams, n) or contaminated(out.targets, grams, n)):
                dropped += 1
                continue
            inputs.append(out.inputs)
            targets.append(out.targets)
            task_names.append(name)
            sources.append(source)
            ttypes.append(ttype)
            tidxs.append(tidx)
            example_ids.append(example.example_id)
            cots.append(cot)
        cols = {"inputs": inputs, "targets": targets, "task_name": task_names, "task_source": sources,
                "template_type": ttypes, "template_idx": tidxs, "example_id": example_ids, "cot": cots}
        return cols, dropped, FewShotCounts(fewshot_replaced, fewshot_dropped)

    def replacement(self, position: int, leaf_i: int, ex_i: int, ttype: str, tidx: int, cot: bool
                    ) -> tuple[Example, int, Rendered] | None:
        """(example, template index, rendered row) in place of plan row `position`, a FLAN few-shot row left without
        exemplars; None when all `FEWSHOT_REPLACEMENT_ATTEMPTS` candidates were dropped too.

        In FLAN each template type is its own (sub)mixture sampled at its rate, so a dropped few-shot row is simply
        absent from that dataset and the mixture still yields few-shot rows at their rate. Here the row is replaced
        by one of the same leaf, template type and cot: candidates are other training examples with the same
        template index (which keeps the plan's per-task, per-type and per-template counts); a task with fewer
        other examples than attempts (a row's render is fixed by its example and template, so retrying one is
        pointless) fills the remaining attempts with (example, other template of the type) pairs, uniformly. The
        candidates are drawn from the seed and the row's plan position alone, so a shard's bytes do not depend on
        how the plan is split into shards, processes or machines."""
        leaf = self.leaves[leaf_i]
        task = leaf.task
        examples = task.examples("train")
        rng = random.Random(stable_seed(self.seed, "fewshot-replacement", position))
        attempts, others = FEWSHOT_REPLACEMENT_ATTEMPTS, len(examples) - 1
        candidates = [(k + (k >= ex_i), tidx) for k in rng.sample(range(others), min(others, attempts))]
        spare = attempts - len(candidates)
        if spare > 0:
            templates = [t for t in task.template_indices(cot=cot, template_type=ttype) if t != tidx]
            pairs = len(examples) * len(templates)
            candidates += [(j // len(templates), templates[j % len(templates)])
                           for j in rng.sample(range(pairs), min(pairs, spare))]
        for k, t in candidates:
            example = examples[k]
            try:
                return example, t, task.render_full(example, template_type=ttype, template_idx=t, cot=cot,
                                                    seed=self.seed, randomize_options=leaf.settings.randomize_options,
                                                    count_tokens=self.count_tokens)
            except FewShotDropped:
                continue
            except Exception as err:  # noqa: BLE001 - report any failure with the task and row it happened on
                raise row_error(task.name, example, err) from None
        return None

    def render_shard(self, index: int) -> dict:
        """Render chunk `index`, drop in-shard duplicates, write its shard file; return keys and counters."""
        lo = index * self.rows_per_shard
        hi = min(len(self.plan), lo + self.rows_per_shard)
        cols, decontaminated, fewshot = self.render_rows(lo, hi)
        keys = row_keys(cols["inputs"], cols["targets"]) if self.dedup else np.zeros(0, dtype=np.uint64)
        duplicates = 0
        if self.dedup:
            mask = first_occurrence_mask(keys)
            duplicates = int((~mask).sum())
            if duplicates:
                keep = mask.tolist()
                cols = {k: [v for v, m in zip(values, keep) if m] for k, values in cols.items()}
                keys = keys[mask]
        table = make_table(cols, self.messages)
        write_shard(table, self.out / shard_name(index, self.fmt), self.fmt)
        stats = ShardStats.of_table(table, self.tokenizer)
        return {"index": index, "planned": planned_rows(len(self.plan), self.rows_per_shard, index),
                "keys": keys.tobytes(), "duplicates": duplicates, "decontaminated": decontaminated,
                "fewshot_replaced": fewshot.replaced, "fewshot_dropped": fewshot.dropped, "stats": stats}


# The renderer of this pool worker process: set once by `_init_worker` in each forked worker, never in the process
# that builds. A pool calls a module-level function by name, so the worker's renderer has to live here.
_worker_renderer: ShardRenderer | None = None


def _init_worker(renderer: ShardRenderer) -> None:
    global _worker_renderer
    _worker_renderer = renderer


def _render_in_worker(index: int) -> dict:
    assert _worker_renderer is not None, "pool worker without a renderer"
    return _worker_renderer.render_shard(index)


def render_shards(renderer: ShardRenderer, indices: list[int], num_proc: int,
                  consume: Callable[[Iterable[dict]], None]) -> None:
    """Render shards `indices` and pass their results to `consume` in index order.

    With `num_proc` > 1 (and fork available) they render in forked workers; otherwise (one process, or Windows)
    here, one after the other: the same bytes either way.
    """
    pa.array(["warm-up"], type=pa.string())  # pyarrow's first string conversion probes for pandas: pay it once
    with _quiet_gc():
        if num_proc > 1 and len(indices) > 1 and "fork" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("fork")
            with context.Pool(min(num_proc, len(indices)), initializer=_init_worker, initargs=(renderer,)) as pool:
                consume(pool.imap(_render_in_worker, indices))
        else:
            consume(map(renderer.render_shard, indices))


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    """Move everything alive now (the loaded tasks and examples, which live for the whole build) out of the garbage
    collector's sight while rendering: scanning them again and again is wasted time, and in forked workers it
    touches their pages and defeats copy-on-write sharing. Undone at the end. If the caller has frozen objects
    itself, nothing is frozen (`gc.unfreeze` would thaw theirs too)."""
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
