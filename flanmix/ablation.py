"""Scaling ablations: held-out performance over a grid of task count × model size (× templates per task × CoT
share) × seeds, as in Flan 2021 (Wei et al., §4.1-4.2) and the Flan 2022 scaling studies (Longpre et al.).

    flanmix ablate ablations/demo.yaml --out runs/ablate

A *cell* is one point of the grid and one seed. For each cell the runner builds a mixture of the cell's training
tasks (`flanmix.mixture.build`), runs SFT on it (`trainers.sft.train`, optionally a preference stage after it),
and evaluates the result (`flanmix.eval.evaluate`) on the held-out clusters — which no training subset touches —
and on the validation rows of the cell's own (seen) tasks. Every cell gets the same training budget (optimizer
steps or tokens; both are recorded).

Task subsets are *nested* and deterministic: the training pool is put in one seeded order and a cell with n tasks
trains on the first n, so every larger subset contains every smaller one (with `cluster_counts`, whole clusters
are added in a seeded order, as in Flan 2021's cluster ablation). The order depends only on the subset seed and
the task names, never on discovery order.

Resume: a cell is complete when `cells/<id>/result.json` exists (written atomically) and records the same cell
config hash; a rerun skips complete cells and reruns the rest (SFT resumes from its own checkpoints when
`train.save_every` is set). Changing the spec changes the affected cells' hashes, so those rerun.

Outputs in the run folder: `results.csv`, `results.jsonl` (one row per cell), `results.md` (mean ± std over
seeds), `plot_tasks.png` (score vs number of tasks, one line per model), `plot_size.png` (score vs model size,
one line per task count), and per cell its mixture manifest, training config and eval reports.

Grid mechanics (planning, guards, skipping, aggregation) are separate from the cell runner: `run(...)` takes any
`runner(cell, ctx) -> dict` so tests can exercise them without training; `run_cell` is the real runner.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flanmix.core.errors import FlanmixError
from flanmix.core.yamlio import YamlDoc

LADDER_DEFAULT_VOCAB = 4096
# Fields of the mixture and SFT configs that the ablation itself sets per cell; a spec may not override them.
_MIXTURE_OWNED = ("components", "size", "seed", "name")
_TRAIN_OWNED = ("model", "tokenizer", "data", "output_dir", "max_steps", "epochs", "batch_size", "packing",
                "max_length", "seed", "resume", "eval_data", "max_rows")
_PREF_OWNED = ("model", "data", "output_dir", "seed", "resume")


# ================================================================================================ the spec

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(_Strict):
    """One model of the size axis: a rung of the `flanmix init-model` ladder or a local model folder."""

    name: str = Field(description="label in tables and plots (and cell ids)")
    size: Optional[str] = Field(None, description="an init-model ladder size (nano, tiny, mini, ...)")
    path: Optional[str] = Field(None, description="a local transformers model folder (relative to the spec file)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            from trainers.init_model import SIZES

            if value in SIZES or not ("/" in value or "\\" in value or Path(value).exists()):
                return {"name": value, "size": value}  # an unknown size errors below, naming the ladder
            return {"name": Path(value).name, "path": value}
        return value

    @model_validator(mode="after")
    def _one(self) -> "ModelEntry":
        if (self.size is None) == (self.path is None):
            raise ValueError("give exactly one of size (an init-model ladder name) or path (a model folder)")
        if self.size is not None:
            from trainers.init_model import SIZES

            if self.size not in SIZES:
                raise ValueError(f"unknown model size {self.size!r} (expected one of {', '.join(SIZES)})")
        if not self.name or any(ch in self.name for ch in "/\\ "):
            raise ValueError(f"model name {self.name!r} must be non-empty without spaces or slashes")
        return self


class Budget(_Strict):
    """The training budget every cell gets: optimizer steps or tokens (prompt + target tokens seen)."""

    steps: Optional[int] = Field(None, gt=0)
    tokens: Optional[int] = Field(None, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(256, ge=8)
    packing: bool = True
    repeat: bool = Field(False, description="allow a small subset to repeat its examples to fill the budget")

    @model_validator(mode="after")
    def _one(self) -> "Budget":
        if (self.steps is None) == (self.tokens is None):
            raise ValueError("give exactly one of steps or tokens")
        return self


class HeldOut(_Strict):
    """Evaluation-only tasks: whole clusters (Flan's held-out clusters) and/or task selectors."""

    clusters: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list, description="names, globs or cluster:X")

    @model_validator(mode="after")
    def _some(self) -> "HeldOut":
        if not self.clusters and not self.tasks:
            raise ValueError("held_out needs clusters and/or tasks")
        return self


class EvalSettings(_Strict):
    """How cells are evaluated (passed to `flanmix.eval.evaluate`)."""

    limit: Optional[int] = Field(50, ge=1, description="examples per task (None: the whole validation split)")
    variant: Literal["zs_opt", "zs_noopt", "fs_opt", "fs_noopt"] = "zs_opt"
    metrics: Optional[list[str]] = Field(None, description="restrict metrics (default: each task's own)")
    seen: bool = Field(True, description="also evaluate the validation rows of the cell's training tasks")
    seen_limit: Optional[int] = Field(None, ge=1, description="examples per seen task (default: limit)")
    seen_metrics: Optional[list[str]] = Field(None, description="metrics for seen tasks (default: metrics)")
    batch_size: int = Field(32, ge=1)
    max_new_tokens: Optional[int] = Field(None, ge=1)


class PreferenceSettings(_Strict):
    """An optional preference stage after SFT, on verifiable preferences from the cell's training tasks."""

    stage: Literal["dpo", "rrhf"] = "dpo"
    examples: int = Field(200, ge=2, description="preference pairs/rankings generated per cell")
    k: int = Field(4, ge=2, description="responses per ranking (rrhf)")
    config: dict[str, Any] = Field(default_factory=dict, description="extra stage config fields (beta, lr, ...)")


class AblationSpec(_Strict):
    """An ablation YAML file."""

    name: str = "ablation"
    description: str = ""
    registry: list[str] = Field(default_factory=list, description="extra registry folders (relative to the file)")
    pool: Optional[list[str]] = Field(None, description="training pool selectors; default: every task not held out")
    held_out: HeldOut
    task_counts: Optional[list[int]] = None
    cluster_counts: Optional[list[int]] = None
    subset_order: Literal["random", "round_robin"] = Field(
        "random", description="random: one seeded shuffle of the pool; round_robin: interleave clusters")
    subset_seed: Optional[int] = Field(None, description="fixed order for every seed; default: each seed its own")
    models: list[ModelEntry] = Field(min_length=1)
    vocab_size: int = Field(LADDER_DEFAULT_VOCAB, ge=300, description="tokenizer size for ladder models")
    templates_per_task: list[Optional[int]] = Field(default_factory=lambda: [None])
    cot_share: list[Optional[float]] = Field(default_factory=lambda: [None])
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    baseline: bool = Field(False, description="also evaluate each untrained model (0 tasks)")
    budget: Budget
    mixture: dict[str, Any] = Field(default_factory=dict, description="extra mixture fields (template_types, ...)")
    train: dict[str, Any] = Field(default_factory=dict, description="extra SFT config fields (lr, warmup_steps, ...)")
    preference: Optional[PreferenceSettings] = None
    eval: EvalSettings = Field(default_factory=EvalSettings)
    keep_models: bool = Field(False, description="keep each cell's trained weights (otherwise deleted after eval)")
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (1 is fastest on a busy machine)")
    jobs: int = Field(1, ge=1, description="cells run at once (worker processes; use with threads: 1)")

    @model_validator(mode="after")
    def _check(self) -> "AblationSpec":
        if (self.task_counts is None) == (self.cluster_counts is None):
            raise ValueError("give exactly one of task_counts or cluster_counts")
        counts = self.counts
        if not counts or any(c < 1 for c in counts):
            raise ValueError("counts must be a non-empty list of integers >= 1")
        if len(set(counts)) != len(counts):
            raise ValueError("counts must not repeat")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique (got {names})")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must not repeat")
        for t in self.templates_per_task:
            if t is not None and t < 1:
                raise ValueError("templates_per_task values must be >= 1 (or null for all)")
        for c in self.cot_share:
            if c is not None and not 0 <= c <= 1:
                raise ValueError("cot_share values must be in [0, 1] (or null for the mixture's own)")
        return self

    @property
    def axis(self) -> str:
        return "tasks" if self.task_counts is not None else "clusters"

    @property
    def counts(self) -> list[int]:
        return sorted(self.task_counts if self.task_counts is not None else self.cluster_counts or [])


def load_spec(path: str | Path) -> tuple[AblationSpec, YamlDoc]:
    """Read and validate an ablation YAML file (errors name file, line and field)."""
    doc = YamlDoc.read(path)
    if not isinstance(doc.data, dict):
        raise FlanmixError("an ablation spec must be a YAML mapping", file=path, line=1,
                           expected="keys held_out, task_counts, models, budget, ...")
    spec = doc.validate(AblationSpec)
    _check_passthrough(spec, doc)
    return spec, doc


def _check_passthrough(spec: AblationSpec, doc: YamlDoc | None) -> None:
    """Validate the `mixture:`, `train:` and `preference.config:` pass-through fields against their owners' schemas
    now, so a typo fails before any cell runs."""
    from pydantic import ValidationError

    from flanmix.core.yamlio import validation_error

    def where(loc: list) -> dict:
        return {"file": doc.path if doc else None, "line": doc.line_of(loc) if doc else None}

    def owned(section: dict, names: Sequence[str], loc: list) -> None:
        for key in section:
            if key in names:
                raise FlanmixError("set by the ablation for each cell; it cannot be overridden here",
                                   field=".".join(map(str, loc + [key])), **where(loc + [key]))

    owned(spec.mixture, _MIXTURE_OWNED, ["mixture"])
    if any(c is not None for c in spec.cot_share):
        owned(spec.mixture, ("cot",), ["mixture"])
    from flanmix.mixture import MixtureSpec

    try:
        MixtureSpec.model_validate({**spec.mixture, "components": [{"task": "x"}]})
    except ValidationError as err:
        raise validation_error(err, path=doc.path if doc else None,
                               line_of=(lambda loc: doc.line_of(["mixture", *loc])) if doc else None,
                               prefix=["mixture"]) from None

    owned(spec.train, _TRAIN_OWNED, ["train"])
    try:
        from trainers.sft import SFTConfig
    except ImportError:  # data-only install: checked when a cell trains
        SFTConfig = None
    if SFTConfig is not None:
        try:
            SFTConfig.model_validate({**spec.train, "model": "m", "data": "d", "output_dir": "o"})
        except ValidationError as err:
            raise validation_error(err, path=doc.path if doc else None,
                                   line_of=(lambda loc: doc.line_of(["train", *loc])) if doc else None,
                                   prefix=["train"]) from None
    if spec.preference is not None:
        owned(spec.preference.config, _PREF_OWNED, ["preference", "config"])
        try:
            import importlib

            module = importlib.import_module(f"trainers.{spec.preference.stage}")
            config_cls = getattr(module, f"{spec.preference.stage.upper()}Config")
        except (ImportError, AttributeError):  # checked when the stage runs
            config_cls = None
        if config_cls is not None:
            try:
                config_cls.model_validate({**spec.preference.config, "model": "m", "data": "d", "output_dir": "o"})
            except ValidationError as err:
                raise validation_error(
                    err, path=doc.path if doc else None,
                    line_of=(lambda loc: doc.line_of(["preference", "config", *loc])) if doc else None,
                    prefix=["preference", "config"]) from None


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
        pick = lambda n: order[:n]  # noqa: E731
    else:
        clusters = seeded_order(sorted(set(pool.values())), seed)
        limit = len(clusters)
        pick = lambda n: [t for t in pool if pool[t] in clusters[:n]]  # noqa: E731
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
    templates: Optional[int] = None
    cot: Optional[float] = None
    subset_seed: int = 0
    hash: str = ""

    @property
    def group(self) -> tuple:
        """The grid point without the seed (cells of one group are averaged)."""
        return (self.count, self.model, self.templates, self.cot)


@dataclass
class Plan:
    """Everything a run needs, resolved and checked."""

    spec: AblationSpec
    spec_file: Path | None
    out: Path
    registry: Any
    registry_dirs: list[str]
    pool: dict[str, str]                       # task -> cluster
    held_out: dict[str, str]                   # task -> cluster
    cells: list[Cell]
    models: dict[str, ModelEntry]
    notes: list[str] = field(default_factory=list)
    _chance: Any = None
    _heldout_sets: Any = None

    def heldout_sets(self) -> list:
        """The held-out eval sets, rendered once and scored for every cell (`flanmix.eval.build_eval_sets`)."""
        if self._heldout_sets is None:
            from flanmix.eval import build_eval_sets

            e = self.spec.eval
            self._heldout_sets = build_eval_sets(sorted(self.held_out), registry_dirs=self.registry_dirs,
                                                 split="validation", variant=e.variant, limit=e.limit,
                                                 metrics=e.metrics)
        return self._heldout_sets

    def cell_dir(self, cell: Cell) -> Path:
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


def _resolve_registry(spec: AblationSpec, base: Path, registry_dirs: Sequence[str]) -> tuple[Any, list[str]]:
    from flanmix.registry import Registry

    dirs = [str((base / d) if not Path(d).is_absolute() else Path(d)) for d in spec.registry] + list(registry_dirs)
    return Registry.discover(dirs), dirs


def _select(registry, selectors: Sequence[str], field_name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for sel in selectors:
        try:
            tasks = registry.select(sel)
        except FlanmixError as err:
            raise err.with_context(field=field_name) from None
        for t in tasks:
            out[t.name] = t.cluster
    return out


def _fmt_share(x: float) -> str:
    return f"{x:g}".replace(".", "p")


def _cell_id(axis: str, count: int, model: str, templates: int | None, cot: float | None, seed: int) -> str:
    head = "base" if count == 0 else f"{'n' if axis == 'tasks' else 'c'}{count:03d}"
    parts = [head, model]
    if templates is not None:
        parts.append(f"tpl{templates}")
    if cot is not None:
        parts.append(f"cot{_fmt_share(cot)}")
    parts.append(f"s{seed}")
    return "-".join(parts)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_plan(spec: AblationSpec, out: str | Path, *, spec_file: str | Path | None = None,
              registry_dirs: Sequence[str] = (), registry=None) -> Plan:
    """Resolve the pool, held-out set and cells, and run the structural guards (overlap, counts)."""
    base = Path(spec_file).parent if spec_file else Path.cwd()
    if registry is None:
        registry, dirs = _resolve_registry(spec, base, registry_dirs)
    else:
        dirs = list(registry_dirs)
    clusters = registry.clusters()
    for c in spec.held_out.clusters:
        if c not in clusters:
            import difflib

            close = difflib.get_close_matches(c, clusters, n=3)
            raise FlanmixError(f"unknown held-out cluster {c!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                                    else ""),
                               file=spec_file, field="held_out.clusters", expected=" | ".join(sorted(clusters)))
    held = _select(registry, [f"cluster:{c}" for c in spec.held_out.clusters] + list(spec.held_out.tasks),
                   "held_out")
    held_clusters = set(spec.held_out.clusters) | set(held.values())
    if spec.pool is None:
        pool = {t.name: t.cluster for t in registry if t.cluster not in held_clusters and t.name not in held}
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
    models = {m.name: m for m in spec.models}
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
    plan = Plan(spec, Path(spec_file) if spec_file else None, Path(out), registry, dirs, pool, held, cells, models)
    for cell in cells:
        cell.hash = _hash(_cell_config(plan, cell))
    return plan


def _cell_config(plan: Plan, cell: Cell) -> dict:
    """Everything that determines a cell's result (its hash decides whether a stored result is reused)."""
    spec = plan.spec
    m = plan.models[cell.model]
    return {"cell": {k: v for k, v in asdict(cell).items() if k != "hash"},
            "model": m.model_dump(), "vocab_size": spec.vocab_size, "budget": spec.budget.model_dump(),
            "mixture": spec.mixture, "train": spec.train,
            "preference": spec.preference.model_dump() if spec.preference else None,
            "eval": spec.eval.model_dump(), "held_out": sorted(plan.held_out)}


# ================================================================================================ budget guard

def _tokenizer_for(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def estimate_row_tokens(registry, tasks: Sequence[str], tokenizer, *, seed: int = 0, samples: int = 24,
                        template_types: dict | None = None) -> dict[str, float]:
    """Mean tokens (inputs + targets + BOS/EOS) per rendered training row of each task, from a few seeded renders
    spread over the template types the mixture uses."""
    from flanmix.core.constants import TEMPLATE_TYPES

    weights = template_types or {t: 1.0 for t in TEMPLATE_TYPES}
    out = {}
    for name in tasks:
        task = registry.get(name)
        examples = task.examples("train")
        kinds = [k for k in TEMPLATE_TYPES if weights.get(k, 0) > 0 and k in task.variants()] or ["zs_noopt"]
        idx = task.template_indices() or task.template_indices(cot=True)
        cot = not task.template_indices()
        texts = []
        for i in range(min(samples, len(examples))):
            ex = examples[(i * 7919) % len(examples)]
            kind = kinds[i % len(kinds)]
            if kind.startswith("fs") and len(examples) < 2:
                kind = "zs_noopt"
            row = task.render(ex, template_type=kind, template_idx=idx[i % len(idx)], cot=cot, seed=seed)
            texts.append((row["inputs"], row["targets"]))
        lens = [len(tokenizer(a)["input_ids"]) + len(tokenizer(b, add_special_tokens=False)["input_ids"]) + 1
                for a, b in texts]
        out[name] = sum(lens) / max(1, len(lens))
    return out


def _rows_per_item(mean_tokens: float, budget: Budget) -> float:
    """Training rows (examples) one batch item holds: several when packed, one otherwise."""
    if not budget.packing:
        return 1.0
    return max(1.0, math.floor(budget.max_length / max(1.0, min(mean_tokens, budget.max_length))))


def cell_needs(plan: Plan, cell: Cell, row_tokens: dict[str, float]) -> dict:
    """Rows and tokens the cell's budget needs vs what its tasks can supply without repeating an example."""
    b = plan.spec.budget
    mean = sum(row_tokens[t] for t in cell.tasks) / len(cell.tasks)
    supply_rows = sum(len(plan.registry.get(t).examples("train")) for t in cell.tasks)
    if b.tokens is not None:
        rows = math.ceil(b.tokens / mean)
        tokens = b.tokens
    else:
        rows = math.ceil(b.steps * b.batch_size * _rows_per_item(mean, b))
        tokens = int(rows * mean)
    return {"rows": rows, "tokens": tokens, "mean_row_tokens": mean, "supply_rows": supply_rows,
            "supply_tokens": int(supply_rows * mean)}


def check_budget(plan: Plan, tokenizer) -> dict[str, dict]:
    """The budget guard: every trained cell must get its budget from its own tasks without repeating examples
    (unless budget.repeat). Raises one error listing the cells that cannot; returns each cell's needs."""
    trained = [c for c in plan.cells if c.count > 0]
    names = sorted({t for c in trained for t in c.tasks})
    row_tokens = estimate_row_tokens(plan.registry, names, tokenizer,
                                     template_types=plan.spec.mixture.get("template_types"))
    needs = {c.id: cell_needs(plan, c, row_tokens) for c in trained}
    short = [(c, needs[c.id]) for c in trained if needs[c.id]["rows"] > needs[c.id]["supply_rows"]]
    if short and not plan.spec.budget.repeat:
        c, n = min(short, key=lambda x: x[1]["supply_rows"] / x[1]["rows"])
        what = "tokens" if plan.spec.budget.tokens is not None else "steps"
        raise FlanmixError(
            f"{len(short)} cell(s) cannot fit the budget: e.g. {c.id} trains on {len(c.tasks)} task(s) "
            f"({', '.join(c.tasks[:4])}{' ...' if len(c.tasks) > 4 else ''}) with {n['supply_rows']} training rows "
            f"(~{n['supply_tokens']:,} tokens), but the {what} budget needs ~{n['rows']} rows (~{n['tokens']:,} "
            f"tokens)", file=plan.spec_file, field="budget",
            expected="a smaller budget, larger task counts, or budget.repeat: true")
    return needs


# ================================================================================================ running

@dataclass
class Context:
    """What a cell runner gets besides the cell."""

    plan: Plan
    cell_dir: Path
    model_dir: Path | None = None              # the initial model for this cell (None in fake runners)
    needs: dict | None = None
    log: Callable[[str], None] = lambda msg: None


Runner = Callable[[Cell, Context], dict]


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


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
    _write_json_atomic(stamp, {"cell_hash": cell.hash, **_cell_config(plan, cell)})
    return cdir


def _stderr(msg: str) -> None:
    print(f"[ablate] {msg}", file=sys.stderr, flush=True)


def prepare_models(plan: Plan, *, log=_stderr) -> dict[tuple[str, int], Path]:
    """(model name, seed) -> initial model folder. Ladder sizes are created once per seed under `models/` (the
    seed sets the random init; the tokenizer is trained on the bundled task text and is the same for all)."""
    from trainers.init_model import init_model

    out: dict[tuple[str, int], Path] = {}
    corpus = None
    seeds = sorted({c.seed for c in plan.cells})
    for m in plan.spec.models:
        for seed in seeds:
            if m.path is not None:
                path = Path(m.path)
                if not path.is_absolute() and plan.spec_file is not None:
                    path = plan.spec_file.parent / path
                if not (path / "config.json").is_file():
                    raise FlanmixError("model folder not found (no config.json)", file=path,
                                       field=f"models.{m.name}.path", expected="a local transformers model folder")
                out[(m.name, seed)] = path
                continue
            path = plan.out / "models" / f"{m.size}-v{plan.spec.vocab_size}-s{seed}"
            if not (path / "config.json").is_file():
                if corpus is None:
                    from flanmix.corpus import bundled_corpus

                    corpus = bundled_corpus(extra_dirs=tuple(plan.registry_dirs))
                info = init_model(m.size, path, vocab_size=plan.spec.vocab_size, texts=corpus, seed=seed,
                                  overwrite=True)
                log(f"init {m.name}: {info['params']:,} params -> {path}")
            out[(m.name, seed)] = path
    return out


def model_params(path: Path) -> int | None:
    """Parameter count of a model folder, from its config (meta device, no weights loaded)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(path))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - a count is a nicety; a model that cannot be built fails later anyway
        return None


def run(spec: AblationSpec | str | Path, out: str | Path, *, runner: Runner | None = None,
        registry_dirs: Sequence[str] = (), only: str | None = None, dry_run: bool = False,
        prepare: bool | None = None, threads: int | None = None, jobs: int | None = None,
        log: Callable[[str], None] = _stderr) -> dict:
    """Run (or resume) an ablation grid into `out`; returns {"plan", "rows", "ran", "skipped"}.

    `runner` defaults to `run_cell` (real mixture build, SFT, eval). `only` is a glob over cell ids. With
    `dry_run` the plan and guards run but no cell. `prepare` (default: only with the real runner) creates the
    ladder models and runs the token-based budget guard. `threads` (default: the spec's) sets torch's CPU threads;
    `jobs` (default: the spec's) runs that many cells at once in worker processes (real runner only).
    """
    spec_file = None
    if isinstance(spec, (str, Path)):
        spec_file = Path(spec)
        spec, _ = load_spec(spec_file)
    out = Path(out)
    plan = make_plan(spec, out, spec_file=spec_file, registry_dirs=registry_dirs)
    real = runner is None
    runner = runner or run_cell
    prepare = real if prepare is None else prepare
    cells = [c for c in plan.cells if only is None or fnmatch.fnmatchcase(c.id, only)]
    if not cells:
        raise FlanmixError(f"no cell matches {only!r}", field="only",
                           expected="a glob over cell ids such as n004-*-s0")
    log(f"{spec.name}: {len(plan.cells)} cells ({len(cells)} selected); pool {len(plan.pool)} tasks in "
        f"{len(set(plan.pool.values()))} clusters; held out {len(plan.held_out)} tasks in "
        f"{len(set(plan.held_out.values()))} clusters ({', '.join(sorted(set(plan.held_out.values())))})")
    out.mkdir(parents=True, exist_ok=True)
    model_dirs: dict[tuple[str, int], Path] = {}
    needs: dict[str, dict] = {}
    if real and (threads or spec.threads):
        import torch

        torch.set_num_threads(threads or spec.threads)
    if prepare:
        model_dirs = prepare_models(plan, log=log)
        first = model_dirs[(spec.models[0].name, spec.seeds[0])]
        needs = check_budget(plan, _tokenizer_for(first))
    _write_json_atomic(out / "plan.json", {
        "spec": spec.model_dump(mode="json"), "spec_file": str(spec_file) if spec_file else None,
        "pool": plan.pool, "held_out": plan.held_out, "heldout_chance": plan.chance() if prepare else None,
        "cells": [{**asdict(c), "needs": needs.get(c.id)} for c in plan.cells]})
    if dry_run:
        for c in cells:
            n = needs.get(c.id)
            extra = f"; ~{n['rows']} rows, ~{n['tokens']:,} tokens of {n['supply_rows']} rows" if n else ""
            log(f"  {c.id}: {len(c.tasks)} tasks{extra}")
        return {"plan": plan, "rows": [], "ran": [], "skipped": []}
    ran, skipped = [], []
    t_start = time.perf_counter()
    todo = []
    for cell in cells:
        if read_result(plan, cell) is not None:
            skipped.append(cell.id)
        else:
            todo.append(cell)

    def finish(cell: Cell, metrics: dict, seconds: float) -> None:
        result = {"cell": cell.id, "cell_hash": cell.hash, "seed": cell.seed, "axis": spec.axis,
                  "count": cell.count, "n_tasks": len(cell.tasks), "model": cell.model,
                  "templates_per_task": cell.templates, "cot_share": cell.cot, "subset_seed": cell.subset_seed,
                  "tasks": cell.tasks, "clusters": cell.clusters, **metrics, "seconds": round(seconds, 2)}
        _write_json_atomic(plan.cell_dir(cell) / "result.json", result)
        ran.append(cell.id)
        log(f"done {cell.id} ({len(ran)}/{len(todo)}): held-out {_f(result.get('heldout_score'))}, seen "
            f"{_f(result.get('seen_score'))} ({seconds:.0f}s; {time.perf_counter() - t_start:.0f}s so far)")
        write_reports(plan, plots=False)  # tables track progress; plots once at the end

    def announce(cell: Cell, log=log) -> None:
        start_cell_dir(plan, cell)
        log(f"cell {cell.id}: {len(cell.tasks)} tasks ({', '.join(cell.tasks[:4])}"
            f"{' ...' if len(cell.tasks) > 4 else ''})")

    jobs = max(1, jobs or spec.jobs)
    if jobs > 1 and real and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        init = (spec.model_dump(mode="json"), str(spec_file) if spec_file else None, str(out), list(registry_dirs),
                threads or spec.threads or 1)
        # spawn, not fork: a forked torch with live thread pools can deadlock.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                 initargs=init) as pool:
            pending = {}
            log(f"{len(todo)} cells on {jobs} worker processes")
            for cell in todo:
                announce(cell, log=lambda msg: None)
                fut = pool.submit(_work, cell.id, str(model_dirs[(cell.model, cell.seed)]), needs.get(cell.id))
                pending[fut] = cell
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        cell = pending.pop(fut)
                        metrics, seconds = fut.result()
                        finish(cell, metrics, seconds)
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    else:
        for cell in todo:
            announce(cell)
            ctx = Context(plan, plan.cell_dir(cell), model_dirs.get((cell.model, cell.seed)), needs.get(cell.id),
                          log)
            t0 = time.perf_counter()
            metrics = runner(cell, ctx)
            finish(cell, metrics, time.perf_counter() - t0)
    if skipped:
        log(f"skipped {len(skipped)} complete cell(s)")
    rows = write_reports(plan)
    log(f"results in {out}/results.md ({len(rows)} cells)")
    return {"plan": plan, "rows": rows, "ran": ran, "skipped": skipped}


_WORKER: dict = {}


def _init_worker(spec: dict, spec_file: str | None, out: str, registry_dirs: list[str], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["plan"] = make_plan(AblationSpec.model_validate(spec), out, spec_file=spec_file,
                                registry_dirs=registry_dirs)


def _work(cell_id: str, model_dir: str, needs: dict | None) -> tuple[dict, float]:
    plan: Plan = _WORKER["plan"]
    cell = next(c for c in plan.cells if c.id == cell_id)
    _stderr(f"start {cell.id}: {len(cell.tasks)} tasks ({', '.join(cell.tasks[:4])}"
            f"{' ...' if len(cell.tasks) > 4 else ''})")
    t0 = time.perf_counter()
    metrics = run_cell(cell, Context(plan, plan.cell_dir(cell), Path(model_dir), needs, _stderr))
    return metrics, time.perf_counter() - t0


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


# ================================================================================================ the real runner

def _mixture_spec(plan: Plan, cell: Cell, rows: int) -> dict:
    spec: dict[str, Any] = {"name": cell.id, "seed": cell.seed, "size": {"examples": rows},
                            "components": [{"tasks": list(cell.tasks)}]}
    spec.update(plan.spec.mixture)
    if cell.cot is not None:
        spec["cot"] = cell.cot
    if plan.spec.budget.repeat:
        spec.setdefault("dedup", False)  # repeats are intended; dedup would drop them again
    return spec


def _limited_registry(registry, tasks: Sequence[str], k: int):
    """A registry whose tasks keep only their first k templates (non-inverted first), for the template axis."""
    from flanmix.registry import Registry
    from flanmix.task import Task

    out = []
    for name in tasks:
        task = registry.get(name)
        tset = task.templates
        normal = [t for t in tset.zero_shot if not t.inverted]
        inverted = [t for t in tset.zero_shot if t.inverted]
        zs = (normal + inverted)[:k]
        out.append(Task(task.spec, tset.model_copy(update={"zero_shot": zs, "cot": list(tset.cot)[:k]}),
                        spec_file=task.spec_file, template_file=task.template_file))
    return Registry(out)


def _evaluate(plan: Plan, model_dir: Path, tasks: Sequence[Any], out: Path, *, seen: bool = False) -> dict:
    from flanmix.eval import evaluate

    e = plan.spec.eval
    limit = (e.seen_limit or e.limit) if seen else e.limit
    metrics = (e.seen_metrics or e.metrics) if seen else e.metrics
    return evaluate(str(model_dir), list(tasks), split="validation", variant=e.variant, limit=limit,
                    batch_size=e.batch_size, max_new_tokens=e.max_new_tokens, registry_dirs=plan.registry_dirs,
                    metrics=metrics, samples=2, out=out, threads=plan.spec.threads)


def _scores(report: dict, prefix: str) -> dict:
    out = {f"{prefix}_score": report["overall"].get("cluster_macro" if prefix == "heldout" else "score")}
    for name, c in report.get("clusters", {}).items():
        out[f"{prefix}:{name}"] = c.get("score")
    return out


def _preference_stage(plan: Plan, cell: Cell, cdir: Path, model_dir: Path, log) -> Path:
    from flanmix.preferences import preference_rows
    from trainers.stages import run_stage

    pref = plan.spec.preference
    assert pref is not None
    kind = "rankings" if pref.stage == "rrhf" else "pairs"
    per_task = max(1, pref.examples // len(cell.tasks))
    pairs = []
    for name in cell.tasks:
        task = plan.registry.get(name)
        for row in task.iter_renders(split="train", template_type="zs_noopt", seed=cell.seed, limit=per_task):
            pairs.append((row["inputs"], row["targets"]))
    rows = preference_rows(pairs, kind=kind, k=pref.k, seed=cell.seed)
    data = cdir / "preferences.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    cfg = {"progress": False, "tensorboard": False, **pref.config, "model": str(model_dir), "data": str(data),
           "output_dir": str(cdir / pref.stage), "seed": cell.seed, "resume": "auto"}
    _write_json_atomic(cdir / f"{pref.stage}_config.json", cfg)
    log(f"  {pref.stage}: {len(rows)} {kind}")
    result = run_stage(pref.stage, cfg)
    if not result.final_dir:
        raise FlanmixError(f"{pref.stage} wrote no final model", file=cdir / pref.stage)
    return Path(result.final_dir)


def _tokens_seen(metrics_file: Path) -> int | None:
    """Tokens the loop trained on: the sum of its per-log-window `tokens` (a resumed run's repeated steps counted
    once)."""
    windows: dict[int, int] = {}
    try:
        for line in metrics_file.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if "loss" in rec and isinstance(rec.get("tokens"), (int, float)) and "step" in rec:
                windows[int(rec["step"])] = int(rec["tokens"])
    except (OSError, json.JSONDecodeError):
        return None
    return sum(windows.values()) or None


def run_cell(cell: Cell, ctx: Context) -> dict:
    """The real cell runner: build the mixture, SFT (+ preference stage), evaluate held-out and seen tasks."""
    plan, cdir, log = ctx.plan, ctx.cell_dir, ctx.log
    spec, budget = plan.spec, plan.spec.budget
    assert ctx.model_dir is not None, "run_cell needs the prepared model folder"
    metrics: dict[str, Any] = {"model_params": model_params(ctx.model_dir), "model_dir": str(ctx.model_dir)}
    final = ctx.model_dir
    if cell.count > 0:
        # 1. mixture (reused when a previous attempt built the same one)
        from flanmix.mixture import build

        needs = ctx.needs or {}
        rows = int(math.ceil(needs.get("rows", budget.batch_size * (budget.steps or 1)) * 1.15)) + budget.batch_size
        if not budget.repeat:
            rows = min(rows, needs.get("supply_rows", rows))
        mspec = _mixture_spec(plan, cell, rows)
        mdir = cdir / "mixture"
        t0 = time.perf_counter()
        stamp = cdir / "mixture_spec.json"
        if not ((mdir / "manifest.json").is_file() and stamp.is_file() and any(mdir.rglob("*.parquet"))
                and json.loads(stamp.read_text()) == mspec):
            registry = plan.registry if cell.templates is None else _limited_registry(plan.registry, cell.tasks,
                                                                                      cell.templates)
            build(mspec, mdir, registry=registry, overwrite=True, progress=False)
            _write_json_atomic(stamp, mspec)
        metrics["build_seconds"] = round(time.perf_counter() - t0, 2)

        # 2. SFT with the cell's budget
        from trainers.data import read_rows, tokenize_rows
        from trainers.models import load_model_and_tokenizer  # noqa: F401 - fail early if training is absent
        from trainers.packing import pack_greedy
        from trainers.sft import train

        # Rows that do not fit max_length are dropped rather than cut (a cut target teaches a wrong answer), unless
        # the spec's train.truncation says otherwise; SFT and this count use the same setting.
        truncation = spec.train.get("truncation", "drop")
        tokenizer = _tokenizer_for(ctx.model_dir)
        examples, stats = tokenize_rows(tokenizer, read_rows(mdir), max_length=budget.max_length,
                                        truncation=truncation, source=mdir)
        lengths = [len(e["input_ids"]) for e in examples]
        items = len(pack_greedy(lengths, budget.max_length)) if budget.packing else len(lengths)
        tokens_per_item = sum(lengths) / max(1, items)
        if budget.steps is not None:
            steps = budget.steps
        else:
            steps = max(1, round(budget.tokens / (tokens_per_item * budget.batch_size)))
        sft_dir = cdir / "sft"
        cfg = {"progress": False, "tensorboard": False, "log_every": max(1, steps // 10), "truncation": truncation,
               **spec.train,
               "model": str(ctx.model_dir), "data": str(mdir), "output_dir": str(sft_dir),
               "max_steps": steps, "batch_size": budget.batch_size, "packing": budget.packing,
               "max_length": budget.max_length, "seed": cell.seed, "resume": "auto"}
        _write_json_atomic(cdir / "train_config.json", cfg)
        done = cdir / "sft_done.json"
        t0 = time.perf_counter()
        if done.is_file() and (sft_dir / "final" / "config.json").is_file():
            sft_info = json.loads(done.read_text())
        else:
            result = train(cfg)
            if not result.final_dir:
                raise FlanmixError("SFT wrote no final model", file=sft_dir)
            last = next((h for h in reversed(result.history) if "loss" in h), {})
            sft_info = {"final_dir": result.final_dir, "steps": result.steps, "final_loss": last.get("loss"),
                        "tokens_seen": _tokens_seen(sft_dir / "metrics.jsonl"),
                        "seconds": round(time.perf_counter() - t0, 2)}
            _write_json_atomic(done, sft_info)
        final = Path(sft_info["final_dir"])
        # Tokens seen as the loop counted them; else steps × batch items × mean tokens per item.
        metrics.update({"steps": sft_info["steps"],
                        "train_tokens": sft_info.get("tokens_seen") or int(sft_info["steps"] * budget.batch_size
                                                                           * tokens_per_item),
                        "mixture_rows": stats.rows, "mixture_tokens": sum(lengths),
                        "epochs": round(sft_info["steps"] * budget.batch_size / max(1, items), 3),
                        "final_loss": sft_info.get("final_loss"), "sft_seconds": sft_info.get("seconds")})
        if spec.preference is not None:
            t0 = time.perf_counter()
            final = _preference_stage(plan, cell, cdir, final, log)
            metrics["preference_seconds"] = round(time.perf_counter() - t0, 2)

    # 3. evaluation
    t0 = time.perf_counter()
    held = _evaluate(plan, final, plan.heldout_sets(), cdir / "eval_heldout.json")
    metrics.update(_scores(held, "heldout"))
    if spec.eval.seen and cell.tasks:
        seen = _evaluate(plan, final, cell.tasks, cdir / "eval_seen.json", seen=True)
        metrics.update(_scores(seen, "seen"))
        metrics["seen_task_scores"] = {k: v.get("score") for k, v in seen["tasks"].items()}
    else:
        metrics["seen_score"] = None
    metrics["heldout_task_scores"] = {k: v.get("score") for k, v in held["tasks"].items()}
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 2)
    if cell.count > 0 and not spec.keep_models:
        for sub in ("sft", spec.preference.stage if spec.preference else None):
            if sub:
                for name in ("final", "checkpoints"):
                    shutil.rmtree(cdir / sub / name, ignore_errors=True)
        (cdir / "sft_done.json").unlink(missing_ok=True)
    return metrics


# ================================================================================================ reports

BASE_COLUMNS = ["cell", "seed", "axis", "count", "n_tasks", "model", "model_params", "templates_per_task",
                "cot_share", "heldout_score", "seen_score", "steps", "train_tokens", "mixture_rows", "epochs",
                "final_loss", "sft_seconds", "eval_seconds", "seconds", "tasks"]


def collect(plan: Plan) -> list[dict]:
    """Results of every complete cell of the plan, in plan order."""
    return [r for r in (read_result(plan, c) for c in plan.cells) if r is not None]


def aggregate(rows: Sequence[dict], metric: str = "heldout_score") -> list[dict]:
    """Mean ± std (sample std; 0 with one seed) of `metric` per grid point (count, model, templates, cot)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["count"], r["model"], r.get("templates_per_task"), r.get("cot_share")), []).append(r)
    out = []
    for (count, model, tpl, cot), rs in groups.items():
        vals = [r[metric] for r in rs if r.get(metric) is not None]
        out.append({"count": count, "model": model, "templates_per_task": tpl, "cot_share": cot,
                    "model_params": rs[0].get("model_params"), "n": len(vals),
                    "mean": statistics.fmean(vals) if vals else None,
                    "std": statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None),
                    "seeds": sorted(r["seed"] for r in rs)})
    return out


def _order_models(plan: Plan) -> dict[str, int]:
    return {m.name: i for i, m in enumerate(plan.spec.models)}


def write_reports(plan: Plan, *, plots: bool = True) -> list[dict]:
    """Write results.csv / .jsonl / .md (and the plots) from the complete cells; returns the rows."""
    rows = collect(plan)
    out = plan.out
    extra = sorted({k for r in rows for k in r if ":" in k})
    columns = BASE_COLUMNS + extra
    tmp = out / f"results.csv.tmp-{os.getpid()}"
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "tasks": " ".join(r.get("tasks", []))})
    os.replace(tmp, out / "results.csv")
    tmp = out / f"results.jsonl.tmp-{os.getpid()}"
    tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, out / "results.jsonl")
    md = markdown_table(plan, rows)
    tmp = out / f"results.md.tmp-{os.getpid()}"
    tmp.write_text(md, encoding="utf-8")
    os.replace(tmp, out / "results.md")
    if rows and plots:
        plot(plan, rows)
    return rows


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def _params(n: Any) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def markdown_table(plan: Plan, rows: Sequence[dict]) -> str:
    """The mean ± std table over seeds (one line per grid point) plus per-held-out-cluster means."""
    spec = plan.spec
    held = aggregate(rows, "heldout_score")
    seen = {(g["count"], g["model"], g["templates_per_task"], g["cot_share"]): g
            for g in aggregate(rows, "seen_score")}
    order = _order_models(plan)
    held.sort(key=lambda g: (order.get(g["model"], 99), g["count"], g["templates_per_task"] or 0,
                             g["cot_share"] or 0))
    clusters = sorted({k.split(":", 1)[1] for r in rows for k in r if k.startswith("heldout:")})
    by_group: dict[tuple, list[dict]] = {}
    for r in rows:
        by_group.setdefault((r["count"], r["model"], r.get("templates_per_task"), r.get("cot_share")), []).append(r)
    show_tpl = any(t is not None for t in spec.templates_per_task)
    show_cot = any(c is not None for c in spec.cot_share)
    unit = "steps" if spec.budget.steps is not None else "tokens"
    budget = spec.budget.steps if spec.budget.steps is not None else spec.budget.tokens
    lines = [f"# {spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [f"Held-out clusters: {', '.join(sorted(set(plan.held_out.values())))} "
              f"({len(plan.held_out)} tasks). Training pool: {len(plan.pool)} tasks in "
              f"{len(set(plan.pool.values()))} clusters. Budget per cell: {budget:,} {unit} "
              f"(batch {spec.budget.batch_size}, max length {spec.budget.max_length}"
              f"{', packed' if spec.budget.packing else ''}). Seeds: {', '.join(map(str, spec.seeds))}. "
              f"Scores: mean ± std over seeds; held-out = macro average over held-out clusters, seen = macro "
              f"average over the cell's training tasks (validation rows)."
              + (f" Chance (uniform guess among the options) on the held-out clusters: {plan.chance():.3f}."
                 if plan.chance() is not None else ""), ""]
    head = [spec.axis, "model", "params"] + (["templates"] if show_tpl else []) + (["cot"] if show_cot else []) + \
        ["held-out", "seen"] + [f"{c}" for c in clusters] + ["steps", "tokens", "seeds"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---:" if h not in ("model",) else "---" for h in head) + "|")
    for g in held:
        key = (g["count"], g["model"], g["templates_per_task"], g["cot_share"])
        rs = by_group[key]
        s = seen.get(key, {})
        cl = []
        for c in clusters:
            vals = [r[f"heldout:{c}"] for r in rs if r.get(f"heldout:{c}") is not None]
            cl.append(f"{statistics.fmean(vals):.3f}" if vals else "-")
        steps = [r.get("steps") for r in rs if r.get("steps") is not None]
        tokens = [r.get("train_tokens") for r in rs if r.get("train_tokens") is not None]
        cells = [("0 (untrained)" if g["count"] == 0 else str(g["count"])), g["model"], _params(g["model_params"])]
        if show_tpl:
            cells.append(str(g["templates_per_task"] or "all"))
        if show_cot:
            cells.append("-" if g["cot_share"] is None else f"{g['cot_share']:g}")
        cells += [_pm(g["mean"], g["std"]), _pm(s.get("mean"), s.get("std")), *cl,
                  str(round(statistics.fmean(steps))) if steps else "0",
                  f"{round(statistics.fmean(tokens)):,}" if tokens else "0", str(g["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)



def _dress_axis(ax, plan, metric: str, title: str, xlabel: str, ticks: dict) -> None:
    """Chance line (held-out panels), x ticks, labels, grid and legend shared by both plots."""
    if metric == "heldout_score" and plan.chance() is not None:
        ax.axhline(plan.chance(), color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(sorted(ticks))
    ax.set_xticklabels([ticks[x] for x in sorted(ticks)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

def plot(plan: Plan, rows: Sequence[dict]) -> None:
    """plot_tasks.png: score vs number of tasks (log2 x), one line per model (and template/CoT setting), error
    bars = std over seeds; plot_size.png: score vs model parameters (log x), one line per task count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = plan.spec
    order = _order_models(plan)
    metrics = [("heldout_score", "held-out clusters")] + \
        ([("seen_score", "seen tasks (validation)")] if any(r.get("seen_score") is not None for r in rows) else [])
    axis_label = "number of training tasks" if spec.axis == "tasks" else "number of training clusters"

    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors: dict[tuple, str] = {}

    def color(key: tuple) -> str:
        # One color per line key in every panel, so held-out and seen panels read together.
        if key not in colors:
            colors[key] = palette[sum(k[0] == key[0] for k in colors) % len(palette)]
        return colors[key]

    for key in sorted({("model", r["model"], r.get("templates_per_task"), r.get("cot_share")) for r in rows},
                      key=lambda k: (order.get(k[1], 99), k[2] or 0, k[3] or 0)):
        color(key)
    for key in sorted({("count", r["count"], r.get("templates_per_task"), r.get("cot_share")) for r in rows},
                      key=lambda k: (k[1], k[2] or 0, k[3] or 0)):
        color(key)

    def label(model: str, tpl, cot) -> str:
        return model + (f", {tpl} tpl" if tpl is not None else "") + (f", cot {cot:g}" if cot is not None else "")

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4), squeeze=False)
    for ax, (metric, title) in zip(axes[0], metrics):
        groups = aggregate(rows, metric)
        lines: dict[tuple, list[dict]] = {}
        for g in groups:
            if g["mean"] is not None:
                lines.setdefault((g["model"], g["templates_per_task"], g["cot_share"]), []).append(g)
        for key in sorted(lines, key=lambda k: (order.get(k[0], 99), k[1] or 0, k[2] or 0)):
            pts = sorted(lines[key], key=lambda g: g["count"])
            ax.errorbar([g["count"] for g in pts], [g["mean"] for g in pts], yerr=[g["std"] or 0 for g in pts],
                        marker="o", capsize=3, label=label(*key), color=color(("model", *key)))
        ax.set_xscale("symlog", base=2, linthresh=1)
        counts = sorted({g["count"] for g in groups if g["mean"] is not None})
        _dress_axis(ax, plan, metric, title, axis_label, {c: str(c) for c in counts})
    fig.suptitle(f"{spec.name}: score vs {spec.axis} (mean ± std over {len(spec.seeds)} seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(plan.out / "plot_tasks.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4), squeeze=False)
    for ax, (metric, title) in zip(axes[0], metrics):
        groups = [g for g in aggregate(rows, metric) if g["mean"] is not None]
        ticks: dict[float, str] = {}
        lines = {}
        for g in groups:
            lines.setdefault((g["count"], g["templates_per_task"], g["cot_share"]), []).append(g)
        for key in sorted(lines, key=lambda k: (k[0], k[1] or 0, k[2] or 0)):
            pts = sorted(lines[key], key=lambda g: (g["model_params"] or 0, order.get(g["model"], 99)))
            xs = [g["model_params"] or (i + 1) for i, g in enumerate(pts)]
            unit = spec.axis if key[0] != 1 else spec.axis[:-1]
            name = "untrained" if key[0] == 0 else f"{key[0]} {unit}"
            name += (f", {key[1]} tpl" if key[1] is not None else "") + (f", cot {key[2]:g}" if key[2] is not None
                                                                          else "")
            ax.errorbar(xs, [g["mean"] for g in pts], yerr=[g["std"] or 0 for g in pts], marker="o", capsize=3,
                        label=name, color=color(("count", *key)))
            ticks.update({x: f"{g['model']}\n{_params(g['model_params'])}" for x, g in zip(xs, pts)})
        ax.set_xscale("log")
        ax.minorticks_off()
        _dress_axis(ax, plan, metric, title, "model parameters", ticks)
    fig.suptitle(f"{spec.name}: score vs model size", fontsize=10)
    fig.tight_layout()
    fig.savefig(plan.out / "plot_size.png", dpi=110)
    plt.close(fig)


def report(spec: AblationSpec | str | Path, out: str | Path, *, registry_dirs: Sequence[str] = ()) -> list[dict]:
    """Rewrite the tables and plots of an existing run folder (no training)."""
    spec_file = None
    if isinstance(spec, (str, Path)):
        spec_file = Path(spec)
        spec, _ = load_spec(spec_file)
    plan = make_plan(spec, out, spec_file=spec_file, registry_dirs=registry_dirs)
    return write_reports(plan)
