"""The manifest of a built mixture: what was asked (spec, seed, resolved tree and leaves), from which bytes (hashes
of spec, template and data files), what each shard holds, and target vs realized proportions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from flanmix import __version__
from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.hub import mirror_revision
from flanmix.mixture.plan import Plan, planned_rows
from flanmix.mixture.resolve import Resolved, effective_template_types
from flanmix.mixture.spec import MixtureSpec
from flanmix.sources import resolve_files
from flanmix.writer import file_sha256, length_summary, total_stats


class Manifest(dict):
    """The manifest of a built mixture (a dict, as written to manifest.json) and where it was written."""

    def __init__(self, data: dict, out_dir: Path) -> None:
        super().__init__(data)
        self.out_dir = Path(out_dir)

    @property
    def rows(self) -> int:
        """Rows written (after dedup and decontamination)."""
        return self["size"]["rows"]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def input_hashes(resolved: Resolved, extra_files: list[Path]) -> dict[str, dict[str, str]]:
    """sha256 of every input a build reads: spec files, template files, data files (or the source's settings for
    generated and hub data, with the revision a hub mirror recorded for it) and `extra_files` (the decontamination
    files)."""
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
            for path in resolve_files(source, base, None):
                data[str(path)] = file_sha256(path)
        else:
            # A source without `explode` hashes as before the key existed (same spec, same hash).
            settings: Any = source.model_dump(exclude={"explode"} if source.explode is None else None)
            revision = mirror_revision(source)
            if revision is not None:  # the mirror snapshot read (builds without a mirror hash as before)
                settings = {"source": settings, "mirror": revision}
            data[source.describe()] = hashlib.sha256(_canonical(settings).encode()).hexdigest()
    for path in extra_files:
        data[str(path)] = file_sha256(path)
    return {"spec_files": dict(sorted(specs.items())), "template_files": dict(sorted(templates.items())),
            "data_files": dict(sorted(data.items()))}


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


def template_report(resolved: Resolved, plan: Plan) -> dict[str, dict]:
    """Per task with inverted templates or template sources: the planned rows that use an inverted template (an
    annotation, reported here), and the source of every template a row's (template_type, template_idx) names."""
    out: dict[str, dict] = {}
    if len(plan):
        keys = (plan.leaf.astype(np.int64) * 8 + plan.ttype.astype(np.int64) * 2 + plan.cot) * 65536 + plan.tidx
        uniq, counts = np.unique(keys, return_counts=True)
        for key, count in zip(uniq.tolist(), counts.tolist()):
            leaf, rest, tidx = resolved.leaves[key // 65536 // 8], key // 65536 % 8, key % 65536
            tmpl = leaf.task.prompts.items(TEMPLATE_TYPES[rest // 2], bool(rest % 2))[tidx]
            entry = out.setdefault(leaf.task.name, {"planned": 0, "planned_inverted": 0})
            entry["planned"] += count
            entry["planned_inverted"] += count if tmpl.spec.inverted else 0
    report = {}
    for leaf in resolved.leaves:
        task, entry = leaf.task, out.get(leaf.task.name, {"planned": 0, "planned_inverted": 0})
        sources = task.provenance()
        if task.template_indices(inverted=True) or sources:
            report[task.name] = {**entry, **({"sources": sources} if sources else {})}
    return report


def make_manifest(resolved: Resolved, spec: MixtureSpec, seed: int, plan: Plan, records: list[dict],
                  counters: dict, build: dict, inputs: dict) -> dict:
    """The manifest of a build. `build` holds the build options (format, messages, rows_per_shard, num_files,
    part, tokenizer); `records` the shard records; `counters` the rows dedup and decontamination dropped."""
    leaves = [{"component": leaf.component, "task": leaf.task.name, "rate": leaf.rate,
               "train_examples": len(leaf.task.examples("train")),
               "template_types": dict(zip(TEMPLATE_TYPES, leaf.settings.template_types)),
               "cot": leaf.settings.cot if leaf.task.has_cot else 0.0, "inversion": leaf.settings.inversion,
               "randomize_options": leaf.settings.randomize_options} for leaf in resolved.leaves]
    targets = _targets(resolved, plan)
    # The identity of a build: what it renders and from which bytes — not where the files sit, so parts built in
    # different checkouts still merge.
    config = {"spec": spec.model_dump(mode="json", exclude_none=True), "seed": seed, "format": build["format"],
              "messages": build["messages"], "rows_per_shard": build["rows_per_shard"], "planned_rows": len(plan),
              "leaves": leaves, "inputs": {kind: sorted(hashes.values()) for kind, hashes in inputs.items()}}
    manifest = {
        "flanmix_version": __version__,
        "spec": config["spec"],
        "seed": seed,
        "spec_hash": hashlib.sha256(_canonical(config).encode()).hexdigest(),
        "build": dict(build, planned_rows=len(plan)),
        "tree": resolved.tree,
        "leaves": leaves,
        "fallbacks": plan.fallbacks,
        "inputs": inputs,
        "shards": sorted(records, key=lambda r: r["index"]),
        "targets": [{"task": t, "template_type": tt, **v} for (t, tt), v in sorted(targets.items())],
    }
    templates = template_report(resolved, plan)
    if templates:
        manifest["templates"] = templates
    summarize(manifest, counters)
    return manifest


def summarize(manifest: dict, counters: dict) -> None:
    """Fill the manifest's size, realized counts and length statistics from its shard records."""
    stats = total_stats(manifest["shards"])
    realized: dict[tuple[str, str], list[int]] = {}
    for (task, tt, cot), count in stats.counts.items():
        entry = realized.setdefault((task, tt), [0, 0])
        entry[0] += count
        entry[1] += count if cot else 0
    for target in manifest["targets"]:
        got = realized.get((target["task"], target["template_type"]), [0, 0])
        target["realized"], target["realized_cot"] = got
    build = manifest["build"]
    planned = sum(planned_rows(build["planned_rows"], build["rows_per_shard"], s["index"]) for s in manifest["shards"])
    manifest["size"] = {"planned": planned, "rows": stats.rows, "dedup_dropped": counters["duplicates"],
                        "decontaminated": counters["decontaminated"]}
    # FLAN few-shot rows left without exemplars (only sets with few-shot patterns): replaced, or finally dropped
    for key in ("fewshot_replaced", "fewshot_dropped"):
        if counters.get(key):
            manifest["size"][key] = counters[key]
    manifest["lengths"] = length_summary(stats)
