"""Planning: every row of a mixture decided up front from the seed, before anything is rendered.

A plan is a deterministic list of (leaf, example index, template type, template index, cot). Per-leaf and
per-template-type counts are exact (largest remainder), then one seeded shuffle orders the rows. Ties between
template types are drawn from the leaf's RNG (by position, every small task's extra row would go to zs_opt and add up
in the mixture's split); ties between leaves stay by position: each leaf is off by at most one row and the favoured
leaves are different tasks (in the fixture flan2022 build all tied leaves are T0 prompts of one component), so no
reported share adds them up. The plan does not depend on the number of processes that later render it, so neither
do the shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.mixture.resolve import Leaf
from flanmix.sources import stable_seed
from flanmix.task import Task

LARGE_SOURCE = 1_000_000  # rows above which a leaf draws its distinct examples without a full permutation
TIE_ULPS = 16  # remainders within this many float epsilons (times the total) are a tie


@dataclass
class Plan:
    """Every row of the mixture, in output order: leaf, example index, template type, template index, cot."""

    leaf: np.ndarray
    example: np.ndarray
    ttype: np.ndarray
    tidx: np.ndarray
    cot: np.ndarray
    fallbacks: dict[str, dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.leaf)


def largest_remainder(total: int, weights: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Integer counts summing to `total`, proportional to `weights` (Hamilton's method).

    Equal remainders that straddle the cut are broken by position (the first ones get the extra rows) or, given
    `rng`, by a seeded draw among them: then no position is favoured systematically. `rng` is drawn from only when
    such a tie exists."""
    weights = np.asarray(weights, dtype=np.float64)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short <= 0:
        return counts
    remainder = exact - counts
    order = np.lexsort((np.arange(len(exact)), -remainder))
    if rng is not None:
        # Remainders equal in exact arithmetic may differ in their last bits (total * w / sum is rounded).
        tol = TIE_ULPS * np.finfo(np.float64).eps * max(1, total)
        cut = remainder[order[short - 1]]
        above = remainder > cut + tol
        tied = np.flatnonzero(np.abs(remainder - cut) <= tol)
        inside = short - int(above.sum())  # extra rows left for the tied entries (1 <= inside <= len(tied))
        if inside < len(tied):
            counts[above] += 1
            counts[rng.choice(tied, size=inside, replace=False)] += 1
            return counts
    counts[order[:short]] += 1
    return counts


def epoch_size(leaves: list[Leaf]) -> int:
    """Rows until the first leaf runs out when each leaf gets its share (seqio's stop at first exhaustion)."""
    probs = np.array([leaf.rate for leaf in leaves])
    probs = probs / probs.sum()
    return int(min(len(leaf.task.examples("train")) / p for leaf, p in zip(leaves, probs) if p > 0))


def _pick_templates(task: Task, cot: bool, m: int, inversion: float | None, rng: np.random.Generator,
                    template_type: str = "zs_opt") -> np.ndarray:
    every = task.template_indices(cot=cot, template_type=template_type)
    inverted = task.template_indices(cot=cot, inverted=True, template_type=template_type)
    normal = task.template_indices(cot=cot, inverted=False, template_type=template_type)
    if inversion is None or not inverted or not normal:
        return np.asarray(every, dtype=np.int16)[rng.integers(len(every), size=m)]
    use_inverted = rng.random(m) < inversion / (1.0 + inversion)
    out = np.asarray(normal, dtype=np.int16)[rng.integers(len(normal), size=m)]
    out[use_inverted] = np.asarray(inverted, dtype=np.int16)[rng.integers(len(inverted), size=int(use_inverted.sum()))]
    return out


def _move(ttype: np.ndarray, moves: tuple[tuple[int, int], ...], why: str, notes: dict[str, int]) -> None:
    """Turn template type `a` into `b` for each (a, b) in `moves`, noting how many rows moved and why."""
    for src, dst in moves:
        moved = int((ttype == src).sum())
        if moved:
            notes[f"{TEMPLATE_TYPES[src]}->{TEMPLATE_TYPES[dst]} ({why})"] = moved
            ttype[ttype == src] = dst


def _plan_leaf(leaf: Leaf, count: int, seed: int, replacement: bool, notes: dict[str, int]
               ) -> tuple[np.ndarray, ...]:
    """Example, template type, template index and cot of a leaf's `count` rows (from the leaf's own RNG)."""
    task = leaf.task
    rng = np.random.default_rng(stable_seed(seed, "plan", leaf.component, task.name))
    n = len(task.examples("train"))
    if replacement:
        example = rng.integers(n, size=count)
    elif count < n and n > LARGE_SOURCE:
        # Distinct rows without permuting the whole source: a permutation of a 50M-row dataset (WMT) would take
        # seconds and gigabytes for a few thousand rows. Smaller sources keep the permutation (and their plans).
        example = rng.choice(n, size=count, replace=False)
    else:
        # Every example once before any repeats (seqio's repeat-then-shuffle).
        passes = -(-count // n)
        example = np.concatenate([rng.permutation(n) for _ in range(passes)])[:count]
    # Ties between template types (e.g. 5 rows over four equal types) are drawn from the leaf's RNG: by position,
    # zs_opt would get every tiny leaf's extra row and skew the mixture's split.
    split = largest_remainder(count, np.array(leaf.settings.template_types), rng)
    ttype = np.repeat(np.arange(4, dtype=np.int8), split)
    rng.shuffle(ttype)
    if not task.has_opt_variants:
        _move(ttype, ((0, 1), (2, 3)), "no options", notes)
    if n < 2:
        _move(ttype, ((2, 0), (3, 1)), "too few rows", notes)
    has_zero_shot = task.num_templates(cot=False) > 0
    if has_zero_shot and task.num_templates(template_type="fs_noopt") == 0:  # a set with no few-shot patterns
        _move(ttype, ((2, 0), (3, 1)), "no few-shot templates", notes)
    if task.has_cot and has_zero_shot:
        cot = np.zeros(count, dtype=bool)
        cot[:int(round(count * leaf.settings.cot))] = True
        rng.shuffle(cot)
    else:
        cot = np.full(count, not has_zero_shot, dtype=bool)
        if leaf.settings.cot > 0 and not task.has_cot:
            notes["cot->non-cot (no cot templates)"] = int(round(count * leaf.settings.cot))
    tidx = np.zeros(count, dtype=np.int16)
    for flag in (False, True):
        sel = cot == flag
        if sel.any() and task.same_templates_in_every_variant(flag):
            tidx[sel] = _pick_templates(task, flag, int(sel.sum()), leaf.settings.inversion, rng)
        elif sel.any():  # per-variant template lists (FLAN's): each row's index is into its variant's own list
            for t, name in enumerate(TEMPLATE_TYPES):
                part = sel & (ttype == t)
                if part.any():
                    tidx[part] = _pick_templates(task, flag, int(part.sum()), leaf.settings.inversion, rng, name)
    return example.astype(np.int32), ttype, tidx, cot


def make_plan(leaves: list[Leaf], total: int, seed: int, replacement: bool) -> Plan:
    """Plan `total` rows: exact per-leaf and per-template-type counts, then one seeded global shuffle."""
    counts = largest_remainder(total, np.array([leaf.rate for leaf in leaves]))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("leaf", "example", "ttype", "tidx", "cot")}
    fallbacks: dict[str, dict[str, int]] = {}
    for i, (leaf, count) in enumerate(zip(leaves, counts)):
        count = int(count)
        if count == 0:
            continue
        notes: dict[str, int] = {}
        example, ttype, tidx, cot = _plan_leaf(leaf, count, seed, replacement, notes)
        if notes:
            fallbacks[f"{leaf.component} {leaf.task.name}"] = notes
        parts["leaf"].append(np.full(count, i, dtype=np.int32))
        parts["example"].append(example)
        parts["ttype"].append(ttype)
        parts["tidx"].append(tidx)
        parts["cot"].append(cot)
    order = np.random.default_rng(stable_seed(seed, "order")).permutation(total)
    arrays = {k: np.concatenate(v)[order] for k, v in parts.items()}
    return Plan(arrays["leaf"], arrays["example"], arrays["ttype"], arrays["tidx"], arrays["cot"], fallbacks)


def part_range(num_files: int, num_parts: int, part: int) -> range:
    """The shard indices of part `part` of `num_parts` (contiguous, as even as possible)."""
    return range(num_files * part // num_parts, num_files * (part + 1) // num_parts)


def planned_rows(total: int, rows_per_shard: int, index: int) -> int:
    """Planned rows of shard `index` when `total` rows are cut into chunks of `rows_per_shard`."""
    return min(total, (index + 1) * rows_per_shard) - index * rows_per_shard
