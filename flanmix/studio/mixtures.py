"""Mixtures in the studio: a mixture file resolved against the registry, its target shares per component, task and
template type (the figures `flanmix stats` prints as targets), its knobs (component weights, rate caps), and rows
sampled from its plan and rendered exactly as a build renders them.

Knob changes arrive as overrides (`components.0.weight: 0.5`) applied to the file's data before validation; the
file itself is never changed.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.core.yamlio import YamlDoc
from flanmix.mixture.plan import make_plan
from flanmix.mixture.render import ShardRenderer
from flanmix.mixture.resolve import Resolved, effective_template_types, resolve
from flanmix.mixture.spec import MixtureSpec
from flanmix.registry import Registry
from flanmix.stats import proportions, top_level

KNOB_KEYS = ("weight", "cap", "examples")  # what the page may override
MAX_PLAN_ROWS = 100_000  # rows planned to sample from (a larger mixture's plan is drawn at this size)
SAMPLE_ROWS = 8


def list_mixtures(roots: dict[str, Path]) -> list[dict[str, Any]]:
    """Every mixture file under the roots: its key (`root:relative/path.yaml`), name and description."""
    out = []
    for key, root in roots.items():
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.y*ml")):
            if path.suffix not in (".yaml", ".yml") or len(path.relative_to(root).parts) > 4:
                continue
            entry = {"ref": f"{key}:{path.relative_to(root).as_posix()}", "root": key, "name": path.stem,
                     "description": "", "path": str(path), "error": None}
            try:
                data = YamlDoc.read(path).data
                if isinstance(data, dict):
                    entry["name"] = str(data.get("name") or path.stem)
                    entry["description"] = str(data.get("description") or "")
            except FlanmixError as err:
                entry["error"] = str(err)
            out.append(entry)
    return out


# ------------------------------------------------------------------------------------------------ overrides

def parse_overrides(raw: Any) -> dict[str, float]:
    """Knob overrides from a request: `{"components.0.weight": 0.5, "rate.cap": 300, "size.examples": 2000}`."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FlanmixError("overrides must be an object", field="overrides")
    out: dict[str, float] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key.rsplit(".", 1)[-1] not in KNOB_KEYS:
            raise FlanmixError(f"cannot change {key!r} here", field="overrides",
                               expected="a component weight, a rate cap or size.examples")
        if value in ("", None):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise FlanmixError(f"{key}: {value!r} is not a number", field=key) from None
        if not math.isfinite(number):
            raise FlanmixError(f"{key}: {value!r} is not a finite number", field=key)
        out[key] = number
    return out


def apply_overrides(data: dict, overrides: dict[str, float]) -> dict:
    """A copy of the mixture data with each dotted key set (`size.examples` replaces the whole size)."""
    data = copy.deepcopy(data)
    for key, value in overrides.items():
        if key == "size.examples":
            data["size"] = {"examples": int(value)}
            continue
        parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
        node: Any = data
        for part in parts[:-1]:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                raise FlanmixError(f"{key}: no such setting in this mixture", field=key) from None
        if not isinstance(node, dict):
            raise FlanmixError(f"{key}: no such setting in this mixture", field=key)
        node[parts[-1]] = int(value) if parts[-1] == "examples" else value
    return data


def knobs(data: dict, prefix: str = "", depth: int = 0) -> list[dict[str, Any]]:
    """The weights of every component (nested inline mixtures too) and the caps of every examples/temperature rate
    rule, as page controls."""
    out: list[dict[str, Any]] = []
    rate = data.get("rate")
    if isinstance(rate, dict) and rate.get("by") in ("examples", "temperature"):
        out.append({"key": f"{prefix}rate.cap", "label": "rate cap" + (f" ({data['name']})" if data.get("name")
                                                                         else ""),
                    "value": rate.get("cap"), "depth": depth, "kind": "cap"})
    for i, comp in enumerate(data.get("components") or []):
        if not isinstance(comp, dict):
            continue
        out.append({"key": f"{prefix}components.{i}.weight", "label": component_label(comp),
                    "value": comp.get("weight", 1.0), "depth": depth, "kind": "weight"})
        if isinstance(comp.get("mixture"), dict):
            out.extend(knobs(comp["mixture"], f"{prefix}components.{i}.mixture.", depth + 1))
    return out


def component_label(comp: dict) -> str:
    """A component's label as `Component.label` gives it (from the raw data)."""
    if comp.get("name"):
        return str(comp["name"])
    mixture = comp.get("mixture")
    if mixture is not None:
        return f"mixture:{mixture}" if isinstance(mixture, str) else str(mixture.get("name") or "mixture")
    for key in ("task", "cluster", "collection"):
        if comp.get(key) is not None:
            return f"{key}:{comp[key]}"
    tasks = comp.get("tasks")
    return "tasks:" + (tasks if isinstance(tasks, str) else ",".join(map(str, tasks or [])))


def absolutized(data: dict, base: Path) -> dict:
    """A copy of the mixture data whose relative paths (nested mixture files, decontamination files, tokenizers)
    are absolute, so the spec builds the same from anywhere."""
    data = copy.deepcopy(data)

    def fix(body: dict) -> None:
        for comp in body.get("components") or []:
            if not isinstance(comp, dict):
                continue
            if isinstance(comp.get("mixture"), str) and (base / comp["mixture"]).is_file():
                comp["mixture"] = str((base / comp["mixture"]).resolve())
            elif isinstance(comp.get("mixture"), dict):
                fix(comp["mixture"])

    fix(data)
    decon = data.get("decontaminate")
    if isinstance(decon, dict) and isinstance(decon.get("files"), list):
        decon["files"] = [f if os.path.isabs(str(f)) else str(base / str(f)) for f in decon["files"]]
    for holder, key in ((data, "tokenizer"), (data.get("size"), "tokenizer")):
        if isinstance(holder, dict) and isinstance(holder.get(key), str) and not os.path.isabs(holder[key]):
            holder[key] = str(base / holder[key])
    return data


# ------------------------------------------------------------------------------------------------ resolving

@dataclass
class MixtureView:
    """A mixture file (with overrides) resolved: its spec, tree, leaves and target shares."""

    path: Path
    data: dict
    spec: MixtureSpec
    resolved: Resolved
    shares: dict[str, list[dict[str, Any]]]
    top: list[dict[str, Any]]


def load(path: Path, registry: Registry, overrides: dict[str, float] | None = None) -> MixtureView:
    """Read, override, validate and resolve a mixture file (errors name the file and line)."""
    doc = YamlDoc.read(path).require_mapping("a mixture", "keys seed, size, rate, template_types, components, ...")
    doc.validate(MixtureSpec)  # the file's own errors first
    data = apply_overrides(doc.data, overrides or {})
    spec = doc.validate(MixtureSpec, data)  # the same structure, so errors keep the file's lines
    resolved = resolve(spec, registry, doc=doc, base_dir=path.parent)
    manifest = target_manifest(resolved)
    return MixtureView(path, data, spec, resolved, proportions(manifest), top_level(manifest))


def target_manifest(resolved: Resolved) -> dict[str, Any]:
    """The parts of a manifest that `flanmix stats` reads, with targets only (nothing realized yet)."""
    total = float(sum(leaf.rate for leaf in resolved.leaves)) or 1.0
    targets: dict[tuple[str, str], float] = {}
    leaves = []
    for leaf in resolved.leaves:
        leaves.append({"component": leaf.component, "task": leaf.task.name, "rate": leaf.rate,
                       "template_types": dict(zip(TEMPLATE_TYPES, leaf.settings.template_types))})
        for kind, share in zip(TEMPLATE_TYPES, effective_template_types(leaf)):
            targets[leaf.task.name, kind] = targets.get((leaf.task.name, kind), 0.0) + leaf.rate / total * share
    return {"size": {"rows": 1}, "tree": resolved.tree, "leaves": leaves,
            "targets": [{"task": t, "template_type": k, "target_rate": v, "realized": 0}
                        for (t, k), v in sorted(targets.items())]}


def tree_view(view: MixtureView) -> dict[str, Any]:
    """The resolved tree with each component's tasks and their shares of the whole mixture."""
    total = float(sum(leaf.rate for leaf in view.resolved.leaves)) or 1.0
    by_component: dict[str, list[dict[str, Any]]] = {}
    for leaf in view.resolved.leaves:
        by_component.setdefault(leaf.component, []).append({"task": leaf.task.name, "share": leaf.rate / total,
                                                            "rows": len(leaf.task.examples("train"))})

    def node(body: dict) -> dict[str, Any]:
        comps = []
        for comp in body["components"]:
            entry = {"label": comp["label"], "weight": comp["weight"], "share": comp["share"]}
            if "mixture" in comp:
                entry["children"] = node(comp["mixture"])["components"]
            else:
                entry["tasks"] = sorted(by_component.get(comp["label"], []), key=lambda t: -t["share"])
            comps.append(entry)
        return {"name": body.get("name"), "components": comps}

    return node(view.resolved.tree)


def planned_total(view: MixtureView) -> int:
    """Rows to plan for samples: the mixture's size (at most MAX_PLAN_ROWS), or a 2,000-row pilot."""
    size = view.spec.size
    if size is not None and size.examples is not None:
        return min(size.examples, MAX_PLAN_ROWS)
    return 2_000


def sample_rows(view: MixtureView, *, start: int = 0, count: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """Plan rows [start, start+count) rendered as a build renders them (FLAN few-shot rows without exemplars are
    dropped, as in a build; the budget is in characters here)."""
    total = planned_total(view)
    plan = make_plan(view.resolved.leaves, total, view.spec.seed, view.spec.replacement)
    start = max(0, min(start, len(plan) - 1))
    renderer = ShardRenderer(leaves=view.resolved.leaves, plan=plan, seed=view.spec.seed, rows_per_shard=len(plan),
                             out=Path("."), fmt="jsonl", messages=False, dedup=False, grams=None, ngram=13)
    cols, _, _ = renderer.render_rows(start, min(len(plan), start + max(1, min(count, 50))))
    names = list(cols)
    return [dict(zip(names, values)) for values in zip(*cols.values())]
