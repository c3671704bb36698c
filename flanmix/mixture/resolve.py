"""Resolution: a mixture spec → leaves (component path, task, share of the mixture, inherited settings).

Weights are the components' shares of their mixture; inside a component the tasks split its share by the rate rule
(`equal`, `examples`-proportional with a per-task cap, or `temperature`-scaled). A nested mixture's rates are
multiplied by its share (seqio's composition), and its unset settings are inherited from the enclosing mixture.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.core.yamlio import YamlDoc
from flanmix.mixture.spec import Component, MixtureBody, MixtureSpec, RateSpec, find_mixture, load_spec, where
from flanmix.registry import Registry
from flanmix.task import Task


@dataclass(frozen=True)
class Settings:
    """Per-leaf rendering settings after inheritance."""

    template_types: tuple[float, float, float, float]
    cot: float
    inversion: float | None
    randomize_options: bool
    rate: RateSpec
    inversion_tasks: float | None = None

    def merged(self, body: MixtureBody) -> Settings:
        """These settings overridden by what `body` sets (template-type ratios normalized)."""
        tt = self.template_types
        if body.template_types is not None:
            total = sum(body.template_types.values())
            tt = tuple(body.template_types.get(k, 0.0) / total for k in TEMPLATE_TYPES)
        return Settings(tt, self.cot if body.cot is None else body.cot,
                        self.inversion if body.inversion is None else body.inversion,
                        self.randomize_options if body.randomize_options is None else body.randomize_options,
                        self.rate if body.rate is None else body.rate,
                        self.inversion_tasks if body.inversion_tasks is None else body.inversion_tasks)


DEFAULT_SETTINGS = Settings((0.25, 0.25, 0.25, 0.25), 0.0, None, False, RateSpec())


@dataclass
class Leaf:
    """One task inside one component path, with its final share of the mixture."""

    component: str
    task: Task
    rate: float
    settings: Settings


@dataclass
class Resolved:
    """A resolved mixture: its leaves and every spec file read."""

    spec: MixtureSpec
    leaves: list[Leaf]
    spec_files: list[Path]
    tree: dict


def task_rule_rate(n: int, rate: RateSpec) -> float:
    """A task's rate inside its component: 1 (equal) or min(n·scale, cap)^(1/T)."""
    if rate.by == "equal":
        return 1.0
    value = n * rate.scale
    if rate.cap is not None:
        value = min(value, rate.cap)
    return value ** (1.0 / rate.temperature)


def inversion_rates(tasks: list[Task], rates: list[float], ratio: float) -> list[float]:
    """An inversion task selected together with its parent (`inversion_of`) gets `ratio` times the parent's rate
    (it shares the parent's cap, as FLAN's CoT and dialog inversions do at 0.3 : 1)."""
    by_name = {task.name: rate for task, rate in zip(tasks, rates)}
    return [ratio * by_name[t.spec.inversion_of] if t.spec.inversion_of in by_name else r
            for t, r in zip(tasks, rates)]


def effective_template_types(leaf: Leaf) -> tuple[float, ...]:
    """A leaf's template-type shares after the fallbacks (no options: opt -> noopt; < 2 rows or no few-shot
    templates: fs -> zs)."""
    zs_opt, zs_noopt, fs_opt, fs_noopt = leaf.settings.template_types
    if not leaf.task.has_opt_variants:
        zs_opt, zs_noopt, fs_opt, fs_noopt = 0.0, zs_opt + zs_noopt, 0.0, fs_opt + fs_noopt
    task = leaf.task
    no_few_shot = task.num_templates(cot=False) > 0 and task.num_templates(template_type="fs_noopt") == 0
    if len(task.examples("train")) < 2 or no_few_shot:
        zs_opt, zs_noopt, fs_opt, fs_noopt = zs_opt + fs_opt, zs_noopt + fs_noopt, 0.0, 0.0
    return zs_opt, zs_noopt, fs_opt, fs_noopt


def select_tasks(registry: Registry, component: Component) -> list[Task]:
    """The tasks a (non-mixture) component selects, each once, in selection order."""
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


def group_views(tasks: list[Task]) -> list[Task]:
    """Each task's few-shot groups as tasks of their own (`split_by_group`), in order of first appearance; groups
    without training rows have nothing to mix and are left out. Names must stay unique across the selection."""
    out: dict[str, Task] = {}
    for task in tasks:
        if task.spec.few_shot_group is None:
            raise FlanmixError(f"split_by_group: task {task.name!r} has no few_shot_group", field="split_by_group",
                               expected="tasks whose spec names a few_shot_group (e.g. tfds_natural_instructions)")
        for group in task.groups():
            if group in out:
                raise FlanmixError(f"split_by_group: group {group!r} of task {task.name!r} is also a task or group "
                                   f"of {out[group].seed_name!r}", field="split_by_group",
                                   expected="group names unique across the component's tasks")
            out[group] = task.group_view(group)
    return list(out.values())


def _train_count(task: Task, at: dict) -> int:
    try:
        return len(task.examples("train"))
    except FlanmixError as err:
        raise err.with_context(**at) from None
    except Exception as err:  # noqa: BLE001 - a user's generator or reader can raise anything
        raise FlanmixError(f"task {task.name!r}: source failed: {type(err).__name__}: {err}", **at) from None


class _Resolver:
    """Walks the component tree depth-first, collecting leaves and the spec files of nested mixtures."""

    def __init__(self, registry: Registry, doc: YamlDoc | None) -> None:
        self.registry = registry
        self.leaves: list[Leaf] = []
        self.spec_files: list[Path] = [doc.path] if doc else []
        self.stack: list[str] = [str(doc.path.resolve())] if doc else []  # open mixture files, to find cycles

    def body(self, body: MixtureBody, settings: Settings, share: float, path: str, doc: YamlDoc | None,
             loc: list, base: Path) -> dict:
        """Resolve one (possibly nested) mixture body holding `share` of the whole; returns its tree node."""
        settings = settings.merged(body)
        total = sum(c.weight for c in body.components)
        node = {"name": body.name, "share": share, "components": []}
        for i, comp in enumerate(body.components):
            cloc = [*loc, "components", i]
            label = f"{path}/{comp.label()}" if path else comp.label()
            child: dict = {"label": label, "weight": comp.weight, "share": share * comp.weight / total}
            node["components"].append(child)
            if isinstance(comp.mixture, str):
                child["mixture"] = self.mixture_file(comp.mixture, settings, child["share"], label, doc, cloc, base)
            elif comp.mixture is not None:
                child["mixture"] = self.body(comp.mixture, settings, child["share"], label, doc,
                                             [*cloc, "mixture"], base)
            else:
                child["tasks"] = self.tasks(comp, settings, child["share"], label, where(doc, cloc))
        return node

    def mixture_file(self, ref: str, settings: Settings, share: float, label: str, doc: YamlDoc | None,
                     cloc: list, base: Path) -> dict:
        """Resolve a nested mixture given as a file (relative to the including file) or a bundled name."""
        at = where(doc, [*cloc, "mixture"])
        try:
            file = find_mixture(ref, base)
        except FlanmixError as err:
            raise err.with_context(**at) from None
        key = str(file.resolve())
        if key in self.stack:
            names = [Path(p).name for p in self.stack[self.stack.index(key):]] + [file.name]
            raise FlanmixError(f"mixture cycle: {' -> '.join(names)}", field="mixture", **at)
        sub, subdoc = load_spec(file)
        self.spec_files.append(file)
        self.stack.append(key)
        node = self.body(sub, settings, share, label, subdoc, [], file.parent)
        self.stack.pop()
        return node

    def tasks(self, comp: Component, settings: Settings, share: float, label: str, at: dict) -> list[str]:
        """Add a task component's leaves (its share split by the rate rule); returns the task names."""
        try:
            tasks = select_tasks(self.registry, comp)
            if comp.split_by_group:
                tasks = group_views(tasks)
        except FlanmixError as err:
            raise err.with_context(**at) from None
        rates = []
        for task in tasks:
            n = _train_count(task, at)
            if n == 0:
                raise FlanmixError(f"task {task.name!r} has no training rows", field="components", **at)
            rates.append(task_rule_rate(n, settings.rate))
        if settings.inversion_tasks is not None:
            rates = inversion_rates(tasks, rates, settings.inversion_tasks)
        if share != 0:
            total = sum(rates)
            self.leaves.extend(Leaf(label, task, share * r / total, settings) for task, r in zip(tasks, rates))
            if sum(settings.template_types[2:]) > 0:
                for task in tasks:  # few-shot groups, once here rather than in every forked build worker
                    if task.spec.few_shot_group is not None:
                        task.groups()
        return [t.name for t in tasks]


def resolve(spec: MixtureSpec, registry: Registry, *, doc: YamlDoc | None = None,
            base_dir: Path | None = None) -> Resolved:
    """Turn a mixture spec into leaves (component path, task, share), following nested mixtures."""
    base_dir = base_dir or (doc.path.parent if doc else Path.cwd())
    resolver = _Resolver(registry, doc)
    tree = resolver.body(spec, DEFAULT_SETTINGS, 1.0, "", doc, [], base_dir)
    if not resolver.leaves:
        raise FlanmixError("the mixture selects no tasks", field="components", **where(doc, ["components"]))
    return Resolved(spec, resolver.leaves, resolver.spec_files, tree)
