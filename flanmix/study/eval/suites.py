"""Eval sets from `--tasks` specs: registered tasks (names, globs, `cluster:NAME`) rendered with their own
templates, and the file-based suites of `benchmarks` (`bbh:`, `mmlu:`, `bigbench:`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from flanmix.core.constants import TARGET_DELIMITER, TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.registry import Registry, in_flan_catalog
from flanmix.study.eval.benchmarks import bbh_eval_sets, bigbench_eval_sets, mmlu_eval_sets
from flanmix.study.eval.items import FEWSHOT_STOP, EvalItem, EvalSet
from flanmix.study.eval.metrics import normalize
from flanmix.study.eval.options import EvalOptions
from flanmix.task import Task


def _cycle(indices: list[int], n: int) -> int:
    return indices[n % len(indices)]


def task_eval_set(task: Task, *, split: str = "validation", variant: str = "zs_opt", limit: int | None = None,
                  seed: int = 0, template_idx: int | None = None, metrics: Sequence[str] | None = None) -> EvalSet:
    """Eval items of a registered task: its held-out rows rendered with the non-inverted templates (cycled, or
    one fixed `template_idx`). `*_opt` falls back to `*_noopt` for a task without answer options. `metrics`
    restricts the spec's metrics (e.g. only rank_classification for a fast run)."""
    if variant not in TEMPLATE_TYPES:
        raise FlanmixError(f"unknown variant {variant!r}", field="variant", expected=" | ".join(TEMPLATE_TYPES))
    if split not in ("validation", "train"):
        raise FlanmixError(f"registered tasks have no {split!r} split", field="split", expected="validation | train")
    used = variant if variant in task.variants() else variant.replace("_opt", "_noopt")
    wanted = metrics
    metrics = [m for m in task.spec.metrics if wanted is None or m in wanted]
    if not metrics:
        return EvalSet(task.name, task.cluster, "registry", [], "none", {"variant": used, "split": split},
                       [f"none of the requested metrics ({', '.join(wanted or [])}) is in its spec"])
    examples = task.examples(split)[:limit] if limit is not None else task.examples(split)
    notes: list[str] = []
    if not examples:
        notes.append(f"no {split} rows")
    stop = FEWSHOT_STOP if used.startswith("fs") else ()
    items: list[EvalItem] = []
    plain = [m for m in metrics if m != "cot_exact_match"]
    zs_indices = [template_idx] if template_idx is not None else task.template_indices(cot=False, inverted=False)
    if plain and not zs_indices:
        notes.append("no non-inverted zero-shot templates; plain metrics skipped")
        plain = []
    skipped_rank = 0
    for n, example in enumerate(examples if plain else []):
        r = task.render_full(example, template_type=used, template_idx=_cycle(zs_indices, n), seed=seed, split=split)
        item_metrics = list(plain)
        answer_index = None
        if "rank_classification" in item_metrics:
            answer_index = _option_index(r.options, r.answer, r.targets)
            if answer_index is None:
                item_metrics.remove("rank_classification")
                skipped_rank += 1
        if not item_metrics:
            continue
        # Options are scored as SFT trains a Flan row's target: after the target delimiter.
        options = [TARGET_DELIMITER + o for o in r.options] if answer_index is not None else None
        items.append(EvalItem(r.inputs, r.targets, tuple(item_metrics), options, answer_index,
                              stop, example.example_id))
    if skipped_rank:
        notes.append(f"{skipped_rank} rows without options containing the answer: no rank_classification for them")
    if "cot_exact_match" in metrics:
        cot_indices = task.template_indices(cot=True, inverted=False)
        if not cot_indices:
            notes.append("cot_exact_match listed but the task has no cot templates")
        for n, example in enumerate(examples if cot_indices else []):
            r = task.render_full(example, template_type=used, template_idx=_cycle(cot_indices, n), cot=True,
                                 seed=seed, split=split)
            items.append(EvalItem(r.inputs, r.answer, ("cot_exact_match",), list(r.options) if r.options else None,
                                  None, stop, example.example_id, cot=True, budget_text=r.targets))
    return EvalSet(task.name, task.cluster, "registry", items, metrics[0],
                   {"variant": used, "split": split, "templates": "cycled" if template_idx is None else template_idx},
                   notes)


def _option_index(options: list[str] | None, answer: str, target: str) -> int | None:
    if not options:
        return None
    for wanted in (answer, target):
        if wanted in options:
            return options.index(wanted)
    lowered = [normalize(o) for o in options]
    for wanted in (answer, target):
        if normalize(wanted) in lowered:
            return lowered.index(normalize(wanted))
    return None


def build_eval_sets(specs: Sequence[str], options: EvalOptions | None = None) -> list[EvalSet]:
    """Resolve `--tasks` specs (task names, globs, `cluster:NAME`, `bbh:PATH`, `mmlu:DIR`, `bigbench:DIR`) to eval
    sets, rendered and loaded as `options` say."""
    o = options or EvalOptions()
    if not specs:
        raise FlanmixError("no tasks given", field="tasks", expected="--tasks NAME | GLOB | cluster:NAME | bbh:PATH | "
                                                                     "mmlu:DIR")
    registry = None
    sets: list[EvalSet] = []
    seen: set[str] = set()

    def add(new: Iterable[EvalSet]) -> None:
        for s in new:
            if s.name not in seen:
                seen.add(s.name)
                sets.append(s)

    for spec in specs:
        if spec.startswith("bbh:"):
            add(_keep(bbh_eval_sets(spec[4:], cot=o.bbh_cot, shots=o.bbh_shots, limit=o.limit), o.metrics))
        elif spec.startswith("bigbench:"):
            add(_keep(bigbench_eval_sets(spec[9:], limit=o.limit), o.metrics))
        elif spec.startswith("mmlu:"):
            add(_keep(mmlu_eval_sets(spec[5:], split=o.split, shots=o.mmlu_shots, choices=o.mmlu_choices,
                                     choice_prefix=o.mmlu_choice_prefix, limit=o.limit), o.metrics))
        else:
            if registry is None:
                registry = Registry.discover(o.registry_dirs)
            tasks = registry.select(spec)
            if any(c in spec for c in "*?["):  # a glob means "the tasks at hand": the FLAN catalog needs naming
                tasks = [t for t in tasks if not in_flan_catalog(t)]
            if not tasks:
                raise FlanmixError(f"no task matches {spec!r}", field="tasks")
            add(task_eval_set(t, split="validation" if o.split == "test" else o.split, variant=o.variant,
                              limit=o.limit, seed=o.seed, template_idx=o.template_idx, metrics=o.metrics)
                for t in tasks if t.name not in seen)
    return sets


def _keep(sets: list[EvalSet], metrics: Sequence[str] | None) -> list[EvalSet]:
    # BBH/MMLU have one fixed metric each; a --metrics filter that excludes it leaves the set empty (noted).
    if metrics is None:
        return sets
    for s in sets:
        if s.primary not in metrics:
            s.items, s.notes = [], s.notes + [f"its metric {s.primary} was not requested"]
    return sets
