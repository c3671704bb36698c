"""Statistics of a built mixture: realized vs target proportions per component, task and template type, and
length summaries (characters; tokens when a tokenizer is given)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.writer import ShardStats, length_summary, load_tokenizer, read_manifest, read_shard


def proportions(manifest: dict) -> dict[str, list[dict[str, Any]]]:
    """Target and realized shares per component, task and template type."""
    rows = max(1, manifest["size"]["rows"])
    by_task: dict[str, list[float]] = {}
    by_type: dict[str, list[float]] = {}
    for t in manifest["targets"]:
        for key, table in ((t["task"], by_task), (t["template_type"], by_type)):
            entry = table.setdefault(key, [0.0, 0.0])
            entry[0] += t["target_rate"]
            entry[1] += t["realized"] / rows
    # A task's realized rows are attributed to its components in proportion to their target rates.
    total_rate = sum(leaf["rate"] for leaf in manifest["leaves"]) or 1.0
    task_rate: dict[str, float] = {}
    for leaf in manifest["leaves"]:
        task_rate[leaf["task"]] = task_rate.get(leaf["task"], 0.0) + leaf["rate"]
    by_component: dict[str, list[float]] = {}
    for leaf in manifest["leaves"]:
        entry = by_component.setdefault(leaf["component"], [0.0, 0.0])
        entry[0] += leaf["rate"] / total_rate
        entry[1] += by_task.get(leaf["task"], [0, 0])[1] * leaf["rate"] / task_rate[leaf["task"]]

    def table(items: dict[str, list[float]]) -> list[dict[str, Any]]:
        return [{"name": k, "target": v[0], "realized": v[1]} for k, v in sorted(items.items())]

    return {"component": table(by_component), "task": table(by_task), "template_type": table(by_type)}


def top_level(manifest: dict) -> list[dict[str, Any]]:
    """Per top-level component of the mixture (e.g. Flan 2022's submixes; a wrapper around one mixture is looked
    through): its target and realized share of the rows, and its template-type split as targeted (after the
    fallbacks: no options, no few-shot templates), as planned, and as realized (a FLAN few-shot row left without
    exemplars is replaced by another example's row of the same type, or finally dropped: `size.fewshot_dropped`;
    dedup and decontamination also remove rows). A task in several components has its rows attributed in
    proportion to their target rates."""
    node = manifest["tree"]
    while len(node["components"]) == 1 and isinstance(node["components"][0].get("mixture"), dict):
        node = node["components"][0]["mixture"]  # a wrapper around one mixture (e.g. a size override): look inside
    labels = [c["label"] for c in node["components"]]
    per_type = {(t["task"], t["template_type"]): t for t in manifest["targets"]}
    task_rate: dict[str, float] = {}
    for leaf in manifest["leaves"]:
        task_rate[leaf["task"]] = task_rate.get(leaf["task"], 0.0) + leaf["rate"]
    total_rate = sum(task_rate.values()) or 1.0
    kinds = ("target_rate", "planned", "realized")
    out = {label: {"target": 0.0, **{k: dict.fromkeys(TEMPLATE_TYPES, 0.0) for k in kinds}} for label in labels}
    for leaf in manifest["leaves"]:
        label = next((x for x in labels if leaf["component"] == x or leaf["component"].startswith(x + "/")), None)
        if label is None:
            continue
        entry, share = out[label], leaf["rate"] / task_rate[leaf["task"]]
        entry["target"] += leaf["rate"] / total_rate
        for tt in TEMPLATE_TYPES:
            found = per_type.get((leaf["task"], tt), {})
            for kind in kinds:
                entry[kind][tt] += found.get(kind, 0) * share
    rows = max(1, manifest["size"]["rows"])
    result = []
    for label, e in out.items():
        sums = {kind: sum(e[kind].values()) or 1.0 for kind in kinds}
        result.append({"name": label, "target": e["target"], "realized": sum(e["realized"].values()) / rows,
                       "rows": round(sum(e["realized"].values())), "planned_rows": round(sum(e["planned"].values())),
                       "template_types": {tt: {"target": e["target_rate"][tt] / sums["target_rate"],
                                               "planned": e["planned"][tt] / sums["planned"],
                                               "realized": e["realized"][tt] / sums["realized"]}
                                          for tt in TEMPLATE_TYPES}})
    return result


def token_summary(directory: Path, manifest: dict, tokenizer_path: str) -> dict:
    """Token-length summaries, counted by reading every shard with the given tokenizer."""
    tokenizer = load_tokenizer(tokenizer_path)
    total = ShardStats()
    build = manifest["build"]
    for shard in manifest["shards"]:
        table = read_shard(directory / shard["file"], build["format"], build["messages"])
        total.add(ShardStats.of_table(table, tokenizer))
    return {k: v for k, v in length_summary(total).items() if k.endswith("_tokens")}


def mixture_stats(directory: str | Path, tokenizer: str | None = None) -> dict:
    """Everything `flanmix stats` prints, as a dict."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    lengths = dict(manifest["lengths"])
    if tokenizer:
        lengths.update(token_summary(directory, manifest, tokenizer))
    return {"rows": manifest["size"], "proportions": proportions(manifest), "components": top_level(manifest),
            "lengths": lengths, "fallbacks": manifest.get("fallbacks", {})}


def format_report(stats: dict, limit: int = 40) -> str:
    """A plain-text report of `mixture_stats`."""
    out = []
    size = stats["rows"]
    fewshot = "".join(f", few-shot {what} {size[key]}" for key, what in
                      (("fewshot_replaced", "replaced"), ("fewshot_dropped", "dropped")) if size.get(key))
    out.append(f"rows: {size['rows']} (planned {size['planned']}, dedup dropped {size['dedup_dropped']}, "
               f"decontaminated {size['decontaminated']}{fewshot})")
    for kind in ("component", "template_type", "task"):
        items = stats["proportions"][kind]
        width = max([len(kind)] + [len(i["name"]) for i in items])
        out.append("")
        out.append(f"{kind.upper():<{width}}  TARGET   REALIZED  DIFF")
        for item in items[:limit]:
            out.append(f"{item['name']:<{width}}  {item['target']:6.2%}  {item['realized']:8.2%}  "
                       f"{item['realized'] - item['target']:+.2%}")
        if len(items) > limit:
            out.append(f"... {len(items) - limit} more")
    if len(stats.get("components", [])) > 1:
        width = max(len(c["name"]) for c in stats["components"]) + 2
        out.append("")
        out.append(f"{'TOP-LEVEL':<{width}}TARGET   REALIZED  " + "  ".join(f"{tt:>8}" for tt in TEMPLATE_TYPES)
                   + "  (realized template-type split)")
        for c in stats["components"]:
            split = "  ".join(f"{c['template_types'][tt]['realized']:8.1%}" for tt in TEMPLATE_TYPES)
            out.append(f"{c['name']:<{width}}{c['target']:6.2%}  {c['realized']:8.2%}  {split}")
    out.append("")
    out.append("LENGTH          MEAN     MIN    P50    P90    P99     MAX")
    for name, s in stats["lengths"].items():
        out.append(f"{name:<14} {s['mean']:7.1f} {s['min']:6d} {s['p50']:6d} {s['p90']:6d} {s['p99']:6d} "
                   f"{s['max']:7d}")
    if stats["fallbacks"]:
        out.append("")
        out.append("fallbacks: " + "; ".join(f"{k}: {v}" for k, v in sorted(stats["fallbacks"].items())[:limit]))
    return "\n".join(out)


def plot(stats: dict, path: str | Path, limit: int = 40) -> None:
    """Bar charts of target vs realized shares (components, template types, tasks) written to a PNG."""
    # A bare Figure renders with Agg and needs no pyplot, so no process-wide backend is switched.
    from matplotlib.figure import Figure

    kinds = ("component", "template_type", "task")
    heights = [max(1.5, 0.28 * min(limit, len(stats["proportions"][k])) + 1) for k in kinds]
    fig = Figure(figsize=(9, sum(heights)))
    axes = fig.subplots(3, 1, gridspec_kw={"height_ratios": heights})
    for ax, kind in zip(axes, kinds):
        items = stats["proportions"][kind][:limit]
        ys = range(len(items))
        ax.barh([y - 0.2 for y in ys], [i["target"] for i in items], height=0.4, label="target")
        ax.barh([y + 0.2 for y in ys], [i["realized"] for i in items], height=0.4, label="realized")
        ax.set_yticks(list(ys), [i["name"] for i in items], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"share per {kind.replace('_', ' ')}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as err:
        raise FlanmixError(f"cannot write plot: {err}", file=path, field="--plot") from None
