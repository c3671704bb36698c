"""The grid: nested task subsets, the cells of a run (one grid point at one seed), and their folders on disk.

Task subsets are nested and deterministic: the training pool is put in one seeded order and a cell with n tasks
trains on the first n, so every larger subset contains every smaller one (with `cluster_counts`, whole clusters are
added in a seeded order, as in Flan 2021's cluster ablation). The order depends only on the subset seed and the
task names, never on discovery order.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flanmix.core.atomic import write_text
from flanmix.core.errors import FlanmixError
from flanmix.registry import Registry, in_flan_catalog
from flanmix.study.ablation.spec import AblationSpec, ModelEntry, load_spec
from flanmix.study.eval import EvalSet, build_eval_sets

# ================================================================================================ subsets


def _order_key(seed: int, name: str) -> str:
    return hashlib.sha256(f"flanmix-ablation:{seed}:{name}".encode()).hexdigest()


def seeded_order(items: Sequence[str], seed: int) -> list[str]:
    """`items` in a seeded order that depends only on the seed and the names (not on the input order)."""
    return sorted(set(items), key=lambda x: (_order_key(seed, x), x))


def task_order(pool: dict[str, str], seed: int, how: str = "random") -> list[str]:
    """Seeded order of the pool's tasks (`pool`: task name -> cluster). `round_robin` interleaves clusters (in a
    seeded cluster order, tasks in a seeded order within each) so small subsets span several clusters."""
    if how == "random":
        return seeded_order(list(pool), seed)
    by_cluster: dict[str, list[str]] = {}
    for name, cluster in pool.items():
        by_cluster.setdefault(cluster, []).append(name)
    queues = [seeded_order(by_cluster[c], seed) for c in seeded_order(list(by_cluster), seed)]
    out: list[str] = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def nested_subsets(pool: dict[str, str], counts: Sequence[int], seed: int, *, axis: str = "tasks",
                   how: str = "random") -> dict[int, list[str]]:
    """count -> sorted task names. With axis 'tasks' a subset is the first n tasks of the seeded order; with axis
    'clusters' it is every task of the first n clusters of the seeded cluster order. Larger subsets contain
    smaller ones; the same seed gives the same subsets."""
    if axis == "tasks":
        order = task_order(pool, seed, how)
        limit = len(order)

        def pick(n: int) -> list[str]:
            return order[:n]
    else:
        clusters = seeded_order(sorted(set(pool.values())), seed)
        limit = len(clusters)

        def pick(n: int) -> list[str]:
            return [t for t in pool if pool[t] in clusters[:n]]
    out = {}
    for n in sorted(counts):
        if n > limit:
            raise FlanmixError(f"{axis} count {n} exceeds the training pool ({limit} {axis})",
                               field=f"{'task' if axis == 'tasks' else 'cluster'}_counts",
                               expected=f"counts <= {limit}, or a larger pool")
        out[n] = sorted(pick(n))
    return out


# ================================================================================================ the plan

@dataclass
class Cell:
    """One grid point at one seed."""

    id: str
    seed: int
    count: int                       # tasks or clusters, per the axis (0: untrained baseline)
    tasks: list[str]
    clusters: list[str]
    model: str
    templates: int | None = None
    cot: float | None = None
    subset_seed: int = 0
    hash: str = ""


@dataclass
class Plan:
    """Everything a run needs, resolved and checked."""

    spec: AblationSpec
    spec_file: Path | None
    out: Path
    registry: Registry
    registry_dirs: list[str]
    pool: dict[str, str]                       # task -> cluster
    held_out: dict[str, str]                   # task -> cluster
    cells: list[Cell]
    models: dict[str, ModelEntry]
    _chance: float | None = field(default=None, repr=False)           # computed on first use
    _heldout_sets: list[EvalSet] | None = field(default=None, repr=False)

    def heldout_sets(self) -> list[EvalSet]:
        """The held-out eval sets, rendered once and scored for every cell."""
        if self._heldout_sets is None:
            options = self.spec.eval.options(seen=False, registry_dirs=self.registry_dirs, threads=self.spec.threads)
            self._heldout_sets = build_eval_sets(sorted(self.held_out), options)
        return self._heldout_sets

    def cell_dir(self, cell: Cell) -> Path:
        """The folder of one cell's files."""
        return self.out / "cells" / cell.id

    def chance(self) -> float | None:
        """Held-out score of uniform guessing among the answer options (rank classification items only), averaged
        the way `heldout_score` is (tasks -> clusters -> mean); None when no held-out item has options."""
        if self._chance is None:
            by_cluster: dict[str, list[float]] = {}
            for es in self.heldout_sets():
                items = es.items
                ranked = [1 / len(it.options) for it in items
                          if "rank_classification" in it.metrics and it.options]
                if ranked and all("rank_classification" in it.metrics for it in items):
                    by_cluster.setdefault(es.cluster, []).append(sum(ranked) / len(ranked))
            self._chance = (statistics.fmean(statistics.fmean(v) for v in by_cluster.values())
                            if by_cluster else float("nan"))
        return None if math.isnan(self._chance) else self._chance


def load_plan(spec: AblationSpec | str | Path, out: str | Path, *, registry_dirs: Sequence[str] = ()) -> Plan:
    """The plan of a spec file (or a spec object) writing into `out`."""
    spec_file = None
    if isinstance(spec, (str, Path)):
        spec_file = Path(spec)
        spec, _ = load_spec(spec_file)
    return make_plan(spec, out, spec_file=spec_file, registry_dirs=registry_dirs)


def make_plan(spec: AblationSpec, out: str | Path, *, spec_file: str | Path | None = None,
              registry_dirs: Sequence[str] = (), registry: Registry | None = None) -> Plan:
    """Resolve the pool, held-out set and cells, and run the structural guards (overlap, counts)."""
    base = Path(spec_file).parent if spec_file else Path.cwd()
    if registry is None:
        dirs = [str((base / d) if not Path(d).is_absolute() else Path(d)) for d in spec.registry] + list(registry_dirs)
        registry = Registry.discover(dirs)
    else:
        dirs = list(registry_dirs)
    pool, held = _pool_and_held_out(spec, registry, spec_file)
    cells = _cells(spec, pool, spec_file)
    plan = Plan(spec, Path(spec_file) if spec_file else None, Path(out), registry, dirs, pool, held, cells,
                {m.name: m for m in spec.models})
    for cell in cells:
        cell.hash = _hash(cell_config(plan, cell))
    return plan


def _pool_and_held_out(spec: AblationSpec, registry: Registry,
                       spec_file: str | Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """(training pool, held-out set), each task -> cluster; the held-out clusters must be untouched by the pool."""
    clusters = registry.clusters()
    for c in spec.held_out.clusters:
        if c not in clusters:
            close = difflib.get_close_matches(c, clusters, n=3)
            raise FlanmixError(f"unknown held-out cluster {c!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                                    else ""),
                               file=spec_file, field="held_out.clusters", expected=" | ".join(sorted(clusters)))
    held = _select(registry, [f"cluster:{c}" for c in spec.held_out.clusters] + list(spec.held_out.tasks),
                   "held_out")
    held_clusters = set(spec.held_out.clusters) | set(held.values())
    if spec.pool is None:
        # The FLAN catalog (hub data) joins a pool only when `pool:` names it (e.g. "collection:Flan2021").
        pool = {t.name: t.cluster for t in registry
                if t.cluster not in held_clusters and t.name not in held and not in_flan_catalog(t)}
    else:
        pool = _select(registry, spec.pool, "pool")
        # Flan's handle_overlap='error': a held-out cluster must be untouched by every training subset.
        overlap = sorted(t for t, c in pool.items() if t in held or c in held_clusters)
        if overlap:
            shown = ", ".join(f"{t} ({pool[t]})" for t in overlap[:6]) + (" ..." if len(overlap) > 6 else "")
            raise FlanmixError(f"the training pool overlaps the held-out set: {shown}", file=spec_file,
                               field="pool", expected="pool tasks outside the held-out clusters and tasks")
    if not pool:
        raise FlanmixError("the training pool is empty", file=spec_file, field="pool",
                           expected="at least one task outside the held-out set")
    return pool, held


def _select(registry: Registry, selectors: Sequence[str], field_name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for sel in selectors:
        try:
            tasks = registry.select(sel)
        except FlanmixError as err:
            raise err.with_context(field=field_name) from None
        for t in tasks:
            out[t.name] = t.cluster
    return out


def _cells(spec: AblationSpec, pool: dict[str, str], spec_file: str | Path | None) -> list[Cell]:
    """Every cell of the grid, seed by seed (baselines first), without hashes."""
    cells: list[Cell] = []
    for seed in spec.seeds:
        subset_seed = seed if spec.subset_seed is None else spec.subset_seed
        try:
            subsets = nested_subsets(pool, spec.counts, subset_seed, axis=spec.axis, how=spec.subset_order)
        except FlanmixError as err:
            raise err.with_context(file=spec_file) from None
        if spec.baseline:
            for m in spec.models:
                cells.append(Cell(_cell_id(spec.axis, 0, m.name, None, None, seed), seed, 0, [], [], m.name,
                                  subset_seed=subset_seed))
        for count, tasks in subsets.items():
            for m in spec.models:
                for tpl in spec.templates_per_task:
                    for cot in spec.cot_share:
                        cells.append(Cell(_cell_id(spec.axis, count, m.name, tpl, cot, seed), seed, count, tasks,
                                          sorted({pool[t] for t in tasks}), m.name, tpl, cot, subset_seed))
    return cells


def _cell_id(axis: str, count: int, model: str, templates: int | None, cot: float | None, seed: int) -> str:
    head = "base" if count == 0 else f"{'n' if axis == 'tasks' else 'c'}{count:03d}"
    parts = [head, model]
    if templates is not None:
        parts.append(f"tpl{templates}")
    if cot is not None:
        parts.append("cot" + f"{cot:g}".replace(".", "p"))
    parts.append(f"s{seed}")
    return "-".join(parts)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The eval settings every run has hashed since the first release. Options added later join a cell's hash only when
# set away from their default, so cells finished before an option existed are still found on a rerun.
_HASHED_EVAL_KEYS = ("limit", "variant", "metrics", "seen", "seen_limit", "seen_metrics", "batch_size",
                     "max_new_tokens")


def eval_identity(settings: Any) -> dict:
    """The part of the eval settings that decides a cell's result, as it enters the cell hash."""
    changed = settings.model_dump(exclude_defaults=True)
    return {k: v for k, v in settings.model_dump().items() if k in _HASHED_EVAL_KEYS or k in changed}


def model_facts(plan: Plan, cell: Cell) -> dict:
    """What the results record about a cell's model besides its size: its architecture (`model_type`, from the
    ladder's arch or the folder's config.json) and whether the cell trains a LoRA adapter (a `peft:` block in
    `train:` or in the preference stage's config)."""
    m = plan.models[cell.model]
    mtype: str | None = m.arch
    if m.path is not None:
        path = Path(m.path)
        if not path.is_absolute() and plan.spec_file is not None:
            path = plan.spec_file.parent / path
        try:
            mtype = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError):
            mtype = None
    pref = plan.spec.preference
    lora = cell.count > 0 and bool(plan.spec.train.get("peft") or (pref is not None and pref.config.get("peft")))
    return {"model_type": mtype, "lora": lora}


def model_identity(m: ModelEntry) -> dict:
    """A model entry as it enters the cell hash: `arch` only when it is not the original ladder's llama, so cells
    finished before archs existed keep their hashes."""
    return m.model_dump(exclude={"arch"} if m.arch == "llama" else None)


def cell_config(plan: Plan, cell: Cell) -> dict:
    """Everything that determines a cell's result (its hash decides whether a stored result is reused)."""
    spec = plan.spec
    m = plan.models[cell.model]
    return {"cell": {k: v for k, v in asdict(cell).items() if k != "hash"},
            "model": model_identity(m), "vocab_size": spec.vocab_size, "budget": spec.budget.model_dump(),
            "mixture": spec.mixture, "train": spec.train,
            "preference": spec.preference.model_dump() if spec.preference else None,
            "eval": eval_identity(spec.eval), "held_out": sorted(plan.held_out)}


# ================================================================================================ cell folders

def write_record(path: Path, obj: Any) -> None:
    """Write one JSON record of the run folder atomically (non-JSON values such as dates as strings)."""
    write_text(path, json.dumps(obj, indent=1, default=str))


def read_result(plan: Plan, cell: Cell) -> dict | None:
    """The stored result of a cell if it is complete and was made with the same cell config."""
    path = plan.cell_dir(cell) / "result.json"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return result if result.get("cell_hash") == cell.hash else None


def start_cell_dir(plan: Plan, cell: Cell) -> Path:
    """Create the cell folder for a (re)run. Leftovers of an attempt with a different cell config (checkpoints,
    mixture, a stale result) are removed first, so SFT's resume never continues someone else's run."""
    cdir = plan.cell_dir(cell)
    stamp = cdir / "cell.json"
    if cdir.exists():
        try:
            old = json.loads(stamp.read_text(encoding="utf-8")).get("cell_hash")
        except (OSError, json.JSONDecodeError):
            old = None
        if old != cell.hash:
            shutil.rmtree(cdir)
    cdir.mkdir(parents=True, exist_ok=True)
    write_record(stamp, {"cell_hash": cell.hash, **cell_config(plan, cell)})
    return cdir
