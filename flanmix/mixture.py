"""Mixtures: which tasks, at what rates, in which template types — and building them into shards.

A mixture is a list of components (a task, a glob or list of task selectors, a cluster, a collection, or a nested
mixture), each with a weight. Weights are the components' shares of the mixture; inside a component the tasks
split its share by the rate rule (`equal`, `examples`-proportional with a per-task cap, or `temperature`-scaled).
A nested mixture's rates are multiplied by its share (seqio's composition).

Building first *plans* every row — a deterministic list of (task, example index, template type, template index,
cot) drawn from the seed — then renders plan chunks (one shard file each) in worker processes and writes them in
order. The plan does not depend on the number of processes, so neither do the shards.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import multiprocessing
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flanmix import __version__
from flanmix.core.errors import FlanmixError
from flanmix.core.resources import bundled_dir
from flanmix.sources import stable_seed
from flanmix.core.constants import TEMPLATE_TYPES, TemplateType
from flanmix.task import Task
from flanmix.core.yamlio import YamlDoc

DEFAULT_ROWS_PER_SHARD = 25_000
PILOT_ROWS = 2_000


# ================================================================================================ the spec

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateSpec(_Strict):
    """How a component's share is split among its tasks: rate = min(n·scale, cap)^(1/temperature)."""

    by: Literal["equal", "examples", "temperature"] = Field(
        "equal", description="equal: every task the same; examples/temperature: by training-set size")
    cap: Optional[float] = Field(None, gt=0, description="per-task cap on n·scale (Flan's example cap)")
    scale: float = Field(1.0, gt=0)
    temperature: float = Field(1.0, gt=0)


class SizeSpec(_Strict):
    """How many rows: a number of examples, a number of tokens (with a tokenizer), or one epoch."""

    examples: Optional[int] = Field(None, gt=0)
    tokens: Optional[int] = Field(None, gt=0)
    tokenizer: Optional[str] = Field(None, description="tokenizer folder or tokenizer.json (for tokens)")
    epoch: bool = Field(False, description="stop when the first component runs out (no replacement)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return {"examples": value}
        if value == "epoch":
            return {"epoch": True}
        return value

    @model_validator(mode="after")
    def _one(self) -> "SizeSpec":
        given = [k for k in ("examples", "tokens") if getattr(self, k) is not None] + (["epoch"] if self.epoch
                                                                                       else [])
        if len(given) != 1:
            raise ValueError(f"give exactly one of examples, tokens, epoch (got {given or 'none'})")
        if self.tokens is not None and not self.tokenizer:
            raise ValueError("size.tokens needs size.tokenizer (a tokenizer folder or tokenizer.json)")
        return self


class DecontamSpec(_Strict):
    """Drop training rows sharing a word n-gram with evaluation data (tasks' validation rows and/or files)."""

    tasks: list[str] = Field(default_factory=list, description="tasks whose validation rows are evaluation data")
    files: list[str] = Field(default_factory=list, description="json/jsonl/csv/tsv globs, relative to the spec")
    ngram: int = Field(13, ge=1, le=64)

    @model_validator(mode="after")
    def _something(self) -> "DecontamSpec":
        if not self.tasks and not self.files:
            raise ValueError("decontaminate needs tasks and/or files")
        return self


class Component(_Strict):
    """One mixture component: exactly one selector, and a weight (its share of the enclosing mixture)."""

    task: Optional[str] = None
    tasks: Optional[Union[str, list[str]]] = Field(
        None, description="a glob, or a list of names/globs/'cluster:X'/'collection:X'")
    cluster: Optional[str] = None
    collection: Optional[str] = None
    mixture: Optional[Union[str, "MixtureBody"]] = Field(None, description="a nested mixture (inline or a file)")
    weight: float = Field(1.0, ge=0)
    name: Optional[str] = Field(None, description="label used in the manifest and stats")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Component":
        given = [k for k in ("task", "tasks", "cluster", "collection", "mixture") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of task, tasks, cluster, collection, mixture (got {given or 'none'})")
        return self

    def label(self) -> str:
        if self.name:
            return self.name
        if self.mixture is not None:
            return f"mixture:{self.mixture}" if isinstance(self.mixture, str) else (self.mixture.name or "mixture")
        for key in ("task", "cluster", "collection"):
            if getattr(self, key) is not None:
                return f"{key}:{getattr(self, key)}"
        return "tasks:" + (self.tasks if isinstance(self.tasks, str) else ",".join(self.tasks or []))


class MixtureBody(_Strict):
    """The part of a mixture that nests: components and the settings its tasks inherit (unset = parent's)."""

    name: Optional[str] = None
    description: str = ""
    components: list[Component] = Field(min_length=1)
    rate: Optional[RateSpec] = None
    template_types: Optional[dict[TemplateType, float]] = Field(
        None, description="ratios of zs_opt/zs_noopt/fs_opt/fs_noopt (normalized)")
    cot: Optional[float] = Field(None, ge=0, le=1, description="share of CoT rows among tasks with CoT templates")
    inversion: Optional[float] = Field(
        None, ge=0, description="inverted:normal template ratio (Flan: 0.3); unset = uniform over templates")
    randomize_options: Optional[bool] = None

    @model_validator(mode="after")
    def _check(self) -> "MixtureBody":
        if sum(c.weight for c in self.components) <= 0:
            raise ValueError("all component weights are zero")
        if self.template_types is not None:
            if any(v < 0 for v in self.template_types.values()):
                raise ValueError("template type ratios must be >= 0")
            if sum(self.template_types.values()) <= 0:
                raise ValueError("template type ratios are all zero")
        return self


class MixtureSpec(MixtureBody):
    """A mixture file: a body plus size, seed, sampling and filtering (those apply at the top level only)."""

    seed: int = 0
    size: Optional[SizeSpec] = None
    replacement: bool = Field(False, description="sample examples with replacement")
    dedup: bool = Field(True, description="drop exact duplicates (normalized input+target)")
    decontaminate: Optional[DecontamSpec] = None


Component.model_rebuild()


@dataclass(frozen=True)
class Settings:
    """Per-leaf rendering settings after inheritance."""

    template_types: tuple[float, float, float, float]
    cot: float
    inversion: float | None
    randomize_options: bool
    rate: RateSpec

    def merged(self, body: MixtureBody) -> "Settings":
        tt = self.template_types
        if body.template_types is not None:
            total = sum(body.template_types.values())
            tt = tuple(body.template_types.get(k, 0.0) / total for k in TEMPLATE_TYPES)
        return Settings(tt, self.cot if body.cot is None else body.cot,
                        self.inversion if body.inversion is None else body.inversion,
                        self.randomize_options if body.randomize_options is None else body.randomize_options,
                        self.rate if body.rate is None else body.rate)


DEFAULT_SETTINGS = Settings((0.25, 0.25, 0.25, 0.25), 0.0, None, False, RateSpec())


@dataclass
class Leaf:
    """One task inside one component path, with its final share of the mixture."""

    component: str
    task: Task
    rate: float
    settings: Settings


# ================================================================================================ resolution

def mixture_names() -> list[str]:
    """Names of the bundled mixtures (`mixtures/*.yaml`)."""
    folder = bundled_dir("mixtures")
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def find_mixture(ref: str, base_dir: Path | None = None) -> Path:
    """A mixture file from a path (relative to `base_dir` or cwd) or a bundled name like `demo`."""
    candidates = [Path(ref)]
    if base_dir is not None and not Path(ref).is_absolute():
        candidates.insert(0, base_dir / ref)
    stem = ref[:-5] if ref.endswith(".yaml") else ref
    candidates.append(bundled_dir("mixtures") / f"{stem}.yaml")
    for path in candidates:
        if path.is_file():
            return path
    close = difflib.get_close_matches(stem, mixture_names(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise FlanmixError(f"unknown mixture {ref!r}{hint}", field="mixture",
                       expected=f"a mixture file or a bundled name ({', '.join(mixture_names()) or 'none'})")


def load_spec(path: Path | str) -> tuple[MixtureSpec, YamlDoc]:
    """Read and validate a mixture file (errors name file:line)."""
    doc = YamlDoc.read(path)
    if not isinstance(doc.data, dict):
        raise FlanmixError("a mixture must be a YAML mapping", file=path, line=1,
                           expected="keys seed, size, rate, template_types, components, ...")
    return doc.validate(MixtureSpec), doc


@dataclass
class Resolved:
    """A resolved mixture: its leaves and every spec file read."""

    spec: MixtureSpec
    leaves: list[Leaf]
    spec_files: list[Path]
    tree: dict


def _where(doc: YamlDoc | None, loc: list) -> dict:
    if doc is None:
        return {}
    return {"file": str(doc.path), "line": doc.line_of(loc)}


def _select(registry, component: Component) -> list[Task]:
    if component.task is not None:
        return [registry.get(component.task)]
    if component.cluster is not None:
        return registry.select(f"cluster:{component.cluster}")
    if component.collection is not None:
        found = registry.select(f"collection:{component.collection}")
        if not found:
            collections = sorted({t.spec.collection for t in registry})
            close = difflib.get_close_matches(component.collection, collections, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise FlanmixError(f"unknown collection {component.collection!r}{hint}", field="collection")
        return found
    patterns = [component.tasks] if isinstance(component.tasks, str) else list(component.tasks or [])
    out: dict[str, Task] = {}
    for pattern in patterns:
        for task in registry.select(pattern):
            out.setdefault(task.name, task)
    return list(out.values())


def task_rule_rate(n: int, rate: RateSpec) -> float:
    """A task's rate inside its component: 1 (equal) or min(n·scale, cap)^(1/T)."""
    if rate.by == "equal":
        return 1.0
    value = n * rate.scale
    if rate.cap is not None:
        value = min(value, rate.cap)
    return value ** (1.0 / rate.temperature)


def _train_count(task: Task, where: dict) -> int:
    try:
        return len(task.examples("train"))
    except FlanmixError as err:
        raise err.with_context(**where) from None
    except Exception as err:  # noqa: BLE001 - a user's generator or reader can raise anything
        raise FlanmixError(f"task {task.name!r}: source failed: {type(err).__name__}: {err}", **where) from None


def resolve(spec: MixtureSpec, registry, *, doc: YamlDoc | None = None, base_dir: Path | None = None) -> Resolved:
    """Turn a mixture spec into leaves (component path, task, share), following nested mixtures."""
    base_dir = base_dir or (doc.path.parent if doc else Path.cwd())
    spec_files: list[Path] = [doc.path] if doc else []
    stack: list[str] = [str(doc.path.resolve())] if doc else []
    leaves: list[Leaf] = []

    def walk(body: MixtureBody, settings: Settings, share: float, path: str, doc: YamlDoc | None, loc: list,
             base: Path) -> dict:
        settings = settings.merged(body)
        total = sum(c.weight for c in body.components)
        node = {"name": body.name, "share": share, "components": []}
        for i, comp in enumerate(body.components):
            cloc = [*loc, "components", i]
            label = f"{path}/{comp.label()}" if path else comp.label()
            cshare = share * comp.weight / total
            child: dict = {"label": label, "weight": comp.weight, "share": cshare}
            node["components"].append(child)
            if comp.mixture is not None:
                if isinstance(comp.mixture, str):
                    try:
                        file = find_mixture(comp.mixture, base)
                    except FlanmixError as err:
                        raise err.with_context(**_where(doc, [*cloc, "mixture"])) from None
                    key = str(file.resolve())
                    if key in stack:
                        names = [Path(p).name for p in stack[stack.index(key):]] + [file.name]
                        raise FlanmixError(f"mixture cycle: {' -> '.join(names)}", field="mixture",
                                           **_where(doc, [*cloc, "mixture"]))
                    sub, subdoc = load_spec(file)
                    spec_files.append(file)
                    stack.append(key)
                    child["mixture"] = walk(sub, settings, cshare, label, subdoc, [], file.parent)
                    stack.pop()
                else:
                    child["mixture"] = walk(comp.mixture, settings, cshare, label, doc, [*cloc, "mixture"], base)
                continue
            try:
                tasks = _select(registry, comp)
            except FlanmixError as err:
                raise err.with_context(**_where(doc, cloc)) from None
            rates = []
            for task in tasks:
                n = _train_count(task, _where(doc, cloc))
                if n == 0:
                    raise FlanmixError(f"task {task.name!r} has no training rows", field="components",
                                       **_where(doc, cloc))
                rates.append(task_rule_rate(n, settings.rate))
            rsum = sum(rates)
            child["tasks"] = [t.name for t in tasks]
            if cshare == 0:
                continue
            for task, r in zip(tasks, rates):
                leaves.append(Leaf(label, task, cshare * r / rsum, settings))
        return node

    tree = walk(spec, DEFAULT_SETTINGS, 1.0, "", doc, [], base_dir)
    if not leaves:
        raise FlanmixError("the mixture selects no tasks", field="components", **_where(doc, ["components"]))
    return Resolved(spec, leaves, spec_files, tree)


# ================================================================================================ planning

def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to `total`, proportional to `weights` (Hamilton's method, ties by position)."""
    weights = np.asarray(weights, dtype=np.float64)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        order = np.lexsort((np.arange(len(exact)), -(exact - counts)))
        counts[order[:short]] += 1
    return counts


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


def _pick_templates(task: Task, cot: bool, m: int, inversion: float | None, rng: np.random.Generator
                    ) -> np.ndarray:
    every = task.template_indices(cot=cot)
    inverted = task.template_indices(cot=cot, inverted=True)
    normal = task.template_indices(cot=cot, inverted=False)
    if inversion is None or not inverted or not normal:
        return np.asarray(every, dtype=np.int16)[rng.integers(len(every), size=m)]
    use_inverted = rng.random(m) < inversion / (1.0 + inversion)
    out = np.asarray(normal, dtype=np.int16)[rng.integers(len(normal), size=m)]
    out[use_inverted] = np.asarray(inverted, dtype=np.int16)[rng.integers(len(inverted), size=int(use_inverted.sum()))]
    return out


def make_plan(leaves: list[Leaf], total: int, seed: int, replacement: bool) -> Plan:
    """Plan `total` rows: exact per-leaf and per-template-type counts, then one seeded global shuffle."""
    probs = np.array([leaf.rate for leaf in leaves])
    counts = largest_remainder(total, probs)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("leaf", "example", "ttype", "tidx", "cot")}
    fallbacks: dict[str, dict[str, int]] = {}
    for i, (leaf, count) in enumerate(zip(leaves, counts)):
        count = int(count)
        if count == 0:
            continue
        task = leaf.task
        rng = np.random.default_rng(stable_seed(seed, "plan", leaf.component, task.name))
        n = len(task.examples("train"))
        if replacement:
            example = rng.integers(n, size=count)
        else:
            # Every example once before any repeats (seqio's repeat-then-shuffle).
            passes = -(-count // n)
            example = np.concatenate([rng.permutation(n) for _ in range(passes)])[:count]
        ttype = np.repeat(np.arange(4, dtype=np.int8), largest_remainder(count, np.array(leaf.settings.template_types)))
        rng.shuffle(ttype)
        notes: dict[str, int] = {}
        if not task.has_options:
            for opt, noopt in ((0, 1), (2, 3)):
                moved = int((ttype == opt).sum())
                if moved:
                    notes[f"{TEMPLATE_TYPES[opt]}->{TEMPLATE_TYPES[noopt]} (no options)"] = moved
                    ttype[ttype == opt] = noopt
        if n < 2:
            for fs, zs in ((2, 0), (3, 1)):
                moved = int((ttype == fs).sum())
                if moved:
                    notes[f"{TEMPLATE_TYPES[fs]}->{TEMPLATE_TYPES[zs]} (too few rows)"] = moved
                    ttype[ttype == fs] = zs
        has_zero_shot = task.num_templates(cot=False) > 0
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
            if sel.any():
                tidx[sel] = _pick_templates(task, flag, int(sel.sum()), leaf.settings.inversion, rng)
        if notes:
            fallbacks[f"{leaf.component} {task.name}"] = notes
        parts["leaf"].append(np.full(count, i, dtype=np.int32))
        parts["example"].append(example.astype(np.int32))
        parts["ttype"].append(ttype)
        parts["tidx"].append(tidx)
        parts["cot"].append(cot)
    order = np.random.default_rng(stable_seed(seed, "order")).permutation(total)
    arrays = {k: np.concatenate(v)[order] for k, v in parts.items()}
    return Plan(arrays["leaf"], arrays["example"], arrays["ttype"], arrays["tidx"], arrays["cot"], fallbacks)


def epoch_size(leaves: list[Leaf]) -> int:
    """Rows until the first leaf runs out when each leaf gets its share (seqio's stop at first exhaustion)."""
    probs = np.array([leaf.rate for leaf in leaves])
    probs = probs / probs.sum()
    return int(min(len(leaf.task.examples("train")) / p for leaf, p in zip(leaves, probs) if p > 0))


# ================================================================================================ rendering

@dataclass
class _BuildState:
    """What workers need; set before the pool forks so tasks and examples are inherited, not pickled."""

    leaves: list[Leaf]
    plan: Plan
    seed: int
    rows_per_shard: int
    tmp: Path
    fmt: str
    messages: bool
    dedup: bool
    grams: set[int] | None
    ngram: int
    tokenizer_path: str | None


_STATE: _BuildState | None = None
_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(path: str | None):
    if path is None:
        return None
    if path not in _TOKENIZERS:
        from flanmix.writer import load_tokenizer

        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]


def _render_rows(state: _BuildState, lo: int, hi: int) -> tuple[dict[str, list], int]:
    """Render plan rows [lo, hi); returns the columns and how many rows decontamination dropped."""
    from flanmix.dedup import contaminated

    plan = state.plan
    # Per-leaf lookups done once per chunk, not once per row (this loop is the hot path of a build).
    leaves = [(leaf.task.render_full, leaf.task.examples("train"), leaf.task.name, leaf.task.spec.collection,
               leaf.settings.randomize_options) for leaf in state.leaves]
    inputs: list[str] = []
    targets: list[str] = []
    task_names: list[str] = []
    sources: list[str] = []
    ttypes: list[str] = []
    tidxs: list[int] = []
    example_ids: list[str] = []
    cots: list[bool] = []
    grams, n, seed = state.grams, state.ngram, state.seed
    dropped = 0
    rows = zip(plan.leaf[lo:hi].tolist(), plan.example[lo:hi].tolist(), plan.ttype[lo:hi].tolist(),
               plan.tidx[lo:hi].tolist(), plan.cot[lo:hi].tolist())
    for leaf_i, ex_i, tt_i, tidx, cot in rows:
        render, examples, name, source, randomize = leaves[leaf_i]
        example = examples[ex_i]
        ttype = TEMPLATE_TYPES[tt_i]
        try:
            out = render(example, template_type=ttype, template_idx=tidx, cot=cot, seed=seed,
                         randomize_options=randomize)
        except FlanmixError as err:
            raise FlanmixError(f"task {name!r}, row {example.example_id}: {err.message}", file=err.file,
                               line=err.line, field=err.field, expected=err.expected) from None
        except Exception as err:  # noqa: BLE001 - report any failure with the task and row it happened on
            raise FlanmixError(f"task {name!r}, row {example.example_id}: {type(err).__name__}: {err}") from None
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
    return cols, dropped


def _warm_up_before_fork() -> None:
    """Pay one-time costs once, in the parent, so forked workers inherit them: pyarrow's first string conversion
    (it probes for pandas), and moving the loaded tasks and examples out of the garbage collector's sight (they
    live for the whole build; scanning them again and again is wasted time, and touching them defeats fork's
    copy-on-write sharing)."""
    import gc

    import pyarrow as pa

    pa.array(["warm-up"], type=pa.string())
    gc.collect()
    gc.freeze()


def _render_shard(index: int) -> dict:
    """Render plan chunk `index`, drop in-shard duplicates, write its shard file; return keys and counters."""
    from flanmix.dedup import first_occurrence_mask, row_keys
    from flanmix.writer import ShardStats, make_table, shard_name, write_shard

    state = _STATE
    assert state is not None
    lo = index * state.rows_per_shard
    hi = min(len(state.plan), lo + state.rows_per_shard)
    cols, decontaminated = _render_rows(state, lo, hi)
    keys = row_keys(cols["inputs"], cols["targets"]) if state.dedup else np.zeros(0, dtype=np.uint64)
    duplicates = 0
    if state.dedup:
        mask = first_occurrence_mask(keys)
        duplicates = int((~mask).sum())
        if duplicates:
            keep = mask.tolist()
            cols = {k: [v for v, m in zip(values, keep) if m] for k, values in cols.items()}
            keys = keys[mask]
    table = make_table(cols, state.messages)
    write_shard(table, state.tmp / shard_name(index, state.fmt), state.fmt)
    stats = ShardStats.of_table(table, _tokenizer(state.tokenizer_path))
    return {"index": index, "planned": hi - lo, "keys": keys.tobytes(), "duplicates": duplicates,
            "decontaminated": decontaminated, "stats": stats}


# ================================================================================================ build

class Manifest(dict):
    """The manifest of a built mixture (a dict, as written to manifest.json) and where it was written."""

    def __init__(self, data: dict, out_dir: Path) -> None:
        super().__init__(data)
        self.out_dir = Path(out_dir)

    @property
    def rows(self) -> int:
        return self["size"]["rows"]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _input_hashes(resolved: Resolved, extra_files: list[Path]) -> dict[str, dict[str, str]]:
    from flanmix.sources import _resolve_files
    from flanmix.writer import file_sha256

    specs = {str(p): file_sha256(p) for p in resolved.spec_files}
    templates: dict[str, str] = {}
    data: dict[str, str] = {}
    for leaf in resolved.leaves:
        task = leaf.task
        for path in (task.spec_file, task.template_file):
            if path is not None and Path(path).is_file():
                (specs if path == task.spec_file else templates)[str(path)] = file_sha256(Path(path))
        source = task.spec.source
        if source.kind == "files":
            base = task.spec_file.parent if task.spec_file else Path.cwd()
            for path in _resolve_files(source, base, None):
                data[str(path)] = file_sha256(path)
        else:
            data[source.describe()] = hashlib.sha256(_canonical(source.model_dump()).encode()).hexdigest()
    for path in extra_files:
        data[str(path)] = file_sha256(path)
    return {"spec_files": dict(sorted(specs.items())), "template_files": dict(sorted(templates.items())),
            "data_files": dict(sorted(data.items()))}


def effective_template_types(leaf: Leaf) -> tuple[float, ...]:
    """A leaf's template-type shares after the fallbacks (no options: opt -> noopt; < 2 rows: fs -> zs)."""
    zs_opt, zs_noopt, fs_opt, fs_noopt = leaf.settings.template_types
    if not leaf.task.has_options:
        zs_opt, zs_noopt, fs_opt, fs_noopt = 0.0, zs_opt + zs_noopt, 0.0, fs_opt + fs_noopt
    if len(leaf.task.examples("train")) < 2:
        zs_opt, zs_noopt, fs_opt, fs_noopt = zs_opt + fs_opt, zs_noopt + fs_noopt, 0.0, 0.0
    return zs_opt, zs_noopt, fs_opt, fs_noopt


def _targets(resolved: Resolved, plan: Plan) -> dict[tuple[str, str], dict]:
    """Target rate and planned count per (task, template type)."""
    out: dict[tuple[str, str], dict] = {}
    total = float(sum(leaf.rate for leaf in resolved.leaves))
    for leaf in resolved.leaves:
        for k, share in zip(TEMPLATE_TYPES, effective_template_types(leaf)):
            entry = out.setdefault((leaf.task.name, k), {"target_rate": 0.0, "planned": 0, "planned_cot": 0})
            entry["target_rate"] += leaf.rate / total * share
    if len(plan):
        keys = plan.leaf.astype(np.int64) * 8 + plan.ttype.astype(np.int64) * 2 + plan.cot
        uniq, counts = np.unique(keys, return_counts=True)
        for key, count in zip(uniq.tolist(), counts.tolist()):
            task, tt, cot = resolved.leaves[key // 8].task.name, (key % 8) // 2, bool(key % 2)
            entry = out.setdefault((task, TEMPLATE_TYPES[tt]), {"target_rate": 0.0, "planned": 0, "planned_cot": 0})
            entry["planned"] += count
            if cot:
                entry["planned_cot"] += count
    return out


def _eval_grams(spec: MixtureSpec, registry, base_dir: Path, doc: YamlDoc | None) -> tuple[set[int] | None, list]:
    from flanmix.dedup import build_ngram_set, eval_texts_from_files

    dec = spec.decontaminate
    if dec is None:
        return None, []
    texts: list[str] = []
    for name in dec.tasks:
        try:
            task = registry.get(name)
        except FlanmixError as err:
            raise err.with_context(**_where(doc, ["decontaminate", "tasks"])) from None
        for example in task.examples("validation"):
            texts.extend(str(v) for v in task.context(example).values() if isinstance(v, (str, int, float)))
    file_texts, files = eval_texts_from_files(dec.files, base_dir)
    texts.extend(file_texts)
    return build_ngram_set(texts, dec.ngram), files


def _part_range(num_files: int, num_parts: int, part: int) -> range:
    return range(num_files * part // num_parts, num_files * (part + 1) // num_parts)


def build(spec: MixtureSpec | dict | str | Path, out_dir: str | Path, *, seed: int | None = None,
          num_proc: int = 1, fmt: str = "parquet", overwrite: bool = False, registry=None,
          registry_dirs: list[str] = (), messages: bool = False, num_shards: int = 1, shard_index: int = 0,
          rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, progress: bool = True) -> Manifest:
    """Build a mixture into `out_dir` (shards + manifest.json) and return the manifest.

    `spec` is a mixture file, a bundled mixture name, a dict or a MixtureSpec. `num_shards`/`shard_index` build
    one deterministic part of the mixture (merge the parts with `merge`).
    """
    from flanmix.dedup import SeenKeys
    from flanmix.registry import Registry
    from flanmix.writer import (FORMATS, ShardStats, file_sha256, finalize, make_table, prepare_out_dir,
                                read_shard, shard_name, write_shard)

    global _STATE
    if fmt not in FORMATS:
        raise FlanmixError(f"unknown output format {fmt!r}", field="--format", expected=" | ".join(FORMATS))
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise FlanmixError(f"shard index {shard_index} out of range for {num_shards} shards", field="--shard-index",
                           expected=f"0..{num_shards - 1}")
    if num_proc < 1 or rows_per_shard < 1:
        raise FlanmixError("--num-proc and --rows-per-shard must be >= 1", field="--num-proc")
    doc = None
    if isinstance(spec, (str, Path)):
        spec, doc = load_spec(find_mixture(str(spec)))
    elif isinstance(spec, dict):
        try:
            spec = MixtureSpec.model_validate(spec)
        except Exception as err:  # noqa: BLE001
            from pydantic import ValidationError

            from flanmix.core.yamlio import validation_error
            if isinstance(err, ValidationError):
                raise validation_error(err, path="<mixture>") from None
            raise
    if spec.size is None:
        raise FlanmixError("required field is missing", field="size", expected="examples: N, tokens: N or epoch",
                           **_where(doc, ["size"]))
    base_dir = doc.path.parent if doc else Path.cwd()
    seed = spec.seed if seed is None else seed
    registry = registry if registry is not None else Registry.discover(registry_dirs)
    resolved = resolve(spec, registry, doc=doc, base_dir=base_dir)
    leaves = resolved.leaves
    grams, eval_files = _eval_grams(spec, registry, base_dir, doc)
    size = spec.size
    tokenizer_path = None
    if size.tokenizer:
        tok = Path(size.tokenizer)
        tokenizer_path = str(tok if tok.is_absolute() else base_dir / tok)
    out_dir = Path(out_dir)
    state = _BuildState(leaves, Plan(*(np.zeros(0),) * 5), seed, rows_per_shard, Path("."), fmt, messages,
                        spec.dedup, grams, spec.decontaminate.ngram if spec.decontaminate else 13, tokenizer_path)

    # How many rows: given, one epoch, or tokens / mean tokens per row of a seeded pilot plan.
    replacement = spec.replacement
    if size.examples is not None:
        total = size.examples
    elif size.epoch:
        total, replacement = epoch_size(leaves), False
    else:
        pilot = make_plan(leaves, PILOT_ROWS, seed, replacement)
        state.plan = pilot
        cols, _ = _render_rows(state, 0, len(pilot))
        from flanmix.writer import token_lengths

        tokenizer = _tokenizer(tokenizer_path)
        per_row = (token_lengths(tokenizer, cols["inputs"]).sum() + token_lengths(tokenizer, cols["targets"]).sum()
                   ) / max(1, len(cols["inputs"]))
        total = max(1, math.ceil(size.tokens / max(per_row, 1e-9)))
    plan = make_plan(leaves, total, seed, replacement)
    state.plan = plan
    num_files = max(1, -(-len(plan) // rows_per_shard))
    mine = list(_part_range(num_files, num_shards, shard_index))

    tmp = prepare_out_dir(out_dir, overwrite)
    state.tmp = tmp
    _STATE = state
    _warm_up_before_fork()
    records: list[dict] = []
    counters = {"duplicates": 0, "decontaminated": 0}
    try:
        from tqdm import tqdm

        planned_here = sum(min(len(plan), (i + 1) * rows_per_shard) - i * rows_per_shard for i in mine)
        bar = tqdm(total=planned_here, unit="rows", file=sys.stderr, disable=not progress, desc="build")
        seen = SeenKeys()

        def consume(results) -> None:
            for res in results:
                path = tmp / shard_name(res["index"], fmt)
                stats = res["stats"]
                counters["duplicates"] += res["duplicates"]
                counters["decontaminated"] += res["decontaminated"]
                if spec.dedup:
                    new = seen.filter_new(np.frombuffer(res["keys"], dtype=np.uint64))
                    if not new.all():
                        table = read_shard(path, fmt, messages).filter(new)
                        # Rewritten from its rows, so the file equals one written directly with these rows.
                        table = make_table({c: table[c].to_pylist() for c in table.column_names if c != "messages"},
                                           messages)
                        write_shard(table, path, fmt)
                        stats = ShardStats.of_table(table, _tokenizer(tokenizer_path))
                        counters["duplicates"] += int((~new).sum())
                records.append({"index": res["index"], "file": path.name, "rows": stats.rows,
                                "sha256": file_sha256(path), "stats": stats.to_json()})
                bar.update(res["planned"])

        if num_proc > 1 and len(mine) > 1 and "fork" in multiprocessing.get_all_start_methods():
            # Fork, so workers inherit the loaded tasks (and Python-registered ones) instead of re-loading them.
            # Where fork is unavailable (Windows) the build renders in this process: same bytes, one core.
            context = multiprocessing.get_context("fork")
            with context.Pool(min(num_proc, len(mine))) as pool:
                consume(pool.imap(_render_shard, mine))
        else:
            consume(map(_render_shard, mine))
        bar.close()
        manifest = _manifest(resolved, spec, seed, plan, records, counters, fmt, messages, rows_per_shard,
                             num_files, (num_shards, shard_index) if num_shards > 1 else None,
                             _input_hashes(resolved, eval_files), tokenizer_path)
        finalize(tmp, out_dir, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _STATE = None
        import gc

        gc.unfreeze()
    return Manifest(manifest, out_dir)


def _manifest(resolved: Resolved, spec: MixtureSpec, seed: int, plan: Plan, records: list[dict], counters: dict,
              fmt: str, messages: bool, rows_per_shard: int, num_files: int, part: tuple[int, int] | None,
              inputs: dict, tokenizer_path: str | None) -> dict:
    leaves = [{"component": leaf.component, "task": leaf.task.name, "rate": leaf.rate,
               "train_examples": len(leaf.task.examples("train")),
               "template_types": dict(zip(TEMPLATE_TYPES, leaf.settings.template_types)),
               "cot": leaf.settings.cot if leaf.task.has_cot else 0.0, "inversion": leaf.settings.inversion,
               "randomize_options": leaf.settings.randomize_options} for leaf in resolved.leaves]
    targets = _targets(resolved, plan)
    # The identity of a build: what it renders and from which bytes — not where the files sit, so parts built in
    # different checkouts still merge.
    config = {"spec": spec.model_dump(mode="json", exclude_none=True), "seed": seed, "format": fmt,
              "messages": messages, "rows_per_shard": rows_per_shard, "planned_rows": len(plan), "leaves": leaves,
              "inputs": {kind: sorted(hashes.values()) for kind, hashes in inputs.items()}}
    manifest = {
        "flanmix_version": __version__,
        "spec": config["spec"],
        "seed": seed,
        "spec_hash": hashlib.sha256(_canonical(config).encode()).hexdigest(),
        "build": {"format": fmt, "messages": messages, "rows_per_shard": rows_per_shard, "num_files": num_files,
                  "planned_rows": len(plan), "part": {"count": part[0], "index": part[1]} if part else None,
                  "tokenizer": tokenizer_path},
        "tree": resolved.tree,
        "leaves": leaves,
        "fallbacks": plan.fallbacks,
        "inputs": inputs,
        "shards": sorted(records, key=lambda r: r["index"]),
        "targets": [{"task": t, "template_type": tt, **v} for (t, tt), v in sorted(targets.items())],
    }
    summarize(manifest, counters)
    return manifest


def summarize(manifest: dict, counters: dict) -> None:
    """Fill the manifest's size, realized counts and length statistics from its shard records."""
    from flanmix.writer import length_summary, total_stats

    stats = total_stats(manifest["shards"])
    realized: dict[tuple[str, str], list[int]] = {}
    for (task, tt, cot), count in stats.counts.items():
        entry = realized.setdefault((task, tt), [0, 0])
        entry[0] += count
        entry[1] += count if cot else 0
    for target in manifest["targets"]:
        got = realized.get((target["task"], target["template_type"]), [0, 0])
        target["realized"], target["realized_cot"] = got
    planned = sum(min(manifest["build"]["planned_rows"], (s["index"] + 1) * manifest["build"]["rows_per_shard"])
                  - s["index"] * manifest["build"]["rows_per_shard"] for s in manifest["shards"])
    manifest["size"] = {"planned": planned, "rows": stats.rows, "dedup_dropped": counters["duplicates"],
                        "decontaminated": counters["decontaminated"]}
    manifest["lengths"] = length_summary(stats)


# ================================================================================================ merge

def merge(part_dirs: list[str | Path], out_dir: str | Path, *, overwrite: bool = False,
          progress: bool = True) -> Manifest:
    """Combine the parts of a `--num-shards K` build into one mixture equal to a single-machine build."""
    from flanmix.dedup import SeenKeys, row_keys
    from flanmix.writer import (ShardStats, file_sha256, finalize, make_table, prepare_out_dir, read_manifest,
                                read_shard, write_shard)

    if not part_dirs:
        raise FlanmixError("no parts given", field="PART_DIRS", expected="the folders of every part")
    manifests = [(Path(d), read_manifest(d)) for d in part_dirs]
    first_dir, first = manifests[0]
    for directory, m in manifests:
        part = m["build"].get("part")
        if part is None:
            raise FlanmixError("not a part of a sharded build", file=directory, field="build.part",
                               expected="a folder built with --num-shards K --shard-index I")
        if m["spec_hash"] != first["spec_hash"] or m["seed"] != first["seed"]:
            raise FlanmixError(f"part was built from a different spec or seed than {first_dir}", file=directory,
                               field="spec_hash", expected="parts of one build")
        if part["count"] != first["build"]["part"]["count"]:
            raise FlanmixError("parts disagree on the number of parts", file=directory, field="build.part.count")
    count = first["build"]["part"]["count"]
    indices = sorted(m["build"]["part"]["index"] for _, m in manifests)
    if len(set(indices)) != len(indices):
        dup = sorted({i for i in indices if indices.count(i) > 1})
        raise FlanmixError(f"part index given twice: {dup}", field="PART_DIRS", expected="each part once")
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise FlanmixError(f"missing part(s) {missing} of {count}", field="PART_DIRS", expected="every part")
    shards: list[tuple[Path, dict]] = []
    owner: dict[int, Path] = {}
    for directory, m in sorted(manifests, key=lambda dm: dm[1]["build"]["part"]["index"]):
        for shard in m["shards"]:
            if shard["index"] in owner:
                raise FlanmixError(f"shard {shard['index']} is in two parts ({owner[shard['index']]})",
                                   file=directory, field="shards", expected="disjoint parts")
            owner[shard["index"]] = directory
            path = directory / shard["file"]
            if not path.is_file() or file_sha256(path) != shard["sha256"]:
                raise FlanmixError("shard file missing or changed since the part was built", file=path,
                                   field="shards", expected="the part folder as built")
            shards.append((directory, shard))
    out_dir = Path(out_dir)
    tmp = prepare_out_dir(out_dir, overwrite)
    try:
        build_info = first["build"]
        fmt, messages = build_info["format"], build_info["messages"]
        tokenizer = _tokenizer(build_info.get("tokenizer"))
        counters = {"duplicates": sum(m["size"]["dedup_dropped"] for _, m in manifests),
                    "decontaminated": sum(m["size"]["decontaminated"] for _, m in manifests)}
        seen = SeenKeys()
        records = []
        for directory, shard in sorted(shards, key=lambda ds: ds[1]["index"]):
            target = tmp / shard["file"]
            shutil.copyfile(directory / shard["file"], target)
            record = dict(shard)
            if first["spec"].get("dedup", True):
                table = read_shard(target, fmt, messages)
                new = seen.filter_new(row_keys(table["inputs"].to_pylist(), table["targets"].to_pylist()))
                if not new.all():
                    table = table.filter(new)
                    table = make_table({c: table[c].to_pylist() for c in table.column_names if c != "messages"},
                                       messages)
                    write_shard(table, target, fmt)
                    stats = ShardStats.of_table(table, tokenizer)
                    counters["duplicates"] += int((~new).sum())
                    record.update(rows=stats.rows, sha256=file_sha256(target), stats=stats.to_json())
            records.append(record)
        manifest = {k: v for k, v in first.items() if k not in ("shards", "size", "lengths")}
        manifest["build"] = dict(first["build"], part=None)
        manifest["shards"] = records
        for target in manifest["targets"]:
            target.pop("realized", None)
            target.pop("realized_cot", None)
        summarize(manifest, counters)
        finalize(tmp, out_dir, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Manifest(manifest, out_dir)
