"""The results of a run: `results.csv`, `results.jsonl` (one row per complete cell), `results.md` (mean ± std over
seeds per grid point) and the plots `plot_tasks.png` (score vs number of tasks, one line per model) and
`plot_size.png` (score vs model size, one line per task count)."""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from flanmix.core.atomic import atomic_open, write_text
from flanmix.study.ablation.grid import Plan, load_plan, read_result
from flanmix.study.ablation.spec import AblationSpec

FAILED = "failed.json"  # in a cell folder: why the cell failed (its error), kept until a rerun completes it
BASE_COLUMNS = ["cell", "seed", "axis", "count", "n_tasks", "model", "model_params", "model_type", "lora",
                "templates_per_task",
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
    columns = BASE_COLUMNS + sorted({k for r in rows for k in r if ":" in k})
    with atomic_open(plan.out / "results.csv", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "tasks": " ".join(r.get("tasks", []))})
    write_text(plan.out / "results.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in rows))
    write_text(plan.out / "results.md", markdown_table(plan, rows) + failure_table(failures(plan)))
    if rows and plots:
        plot(plan, rows)
    return rows


def rewrite_reports(spec: AblationSpec | str | Path, out: str | Path, *, registry_dirs: Sequence[str] = ()
                    ) -> list[dict]:
    """Rewrite the tables and plots of an existing run folder (no training)."""
    return write_reports(load_plan(spec, out, registry_dirs=registry_dirs))


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


def failures(plan: Plan) -> list[dict]:
    """The recorded failures (`cells/<id>/failed.json`, written by `--engine ray`) of cells that are still not
    complete with the same config; a rerun retries them."""
    out = []
    for cell in plan.cells:
        path = plan.cell_dir(cell) / FAILED
        if not path.is_file() or read_result(plan, cell) is not None:
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if record.get("cell_hash") == cell.hash:
            out.append(record)
    return out


def failure_table(records: Sequence[dict]) -> str:
    """The "Failed cells" section of results.md (empty without failures)."""
    if not records:
        return ""
    lines = ["", "## Failed cells", "", "| cell | error |", "|---|---|"]
    lines += [f"| {r['cell']} | {str(r.get('error', '')).replace('|', '/')} |" for r in records]
    return "\n".join(lines + ["", "A rerun of the same command retries them (complete cells are skipped).", ""])



# ------------------------------------------------------------------------------------------------ plots

class _Colors:
    """One color per line key in every panel, so held-out and seen panels read together."""

    def __init__(self) -> None:
        self.palette = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        self.colors: dict[tuple, str] = {}

    def __call__(self, key: tuple) -> str:
        if key not in self.colors:
            self.colors[key] = self.palette[sum(k[0] == key[0] for k in self.colors) % len(self.palette)]
        return self.colors[key]


def plot(plan: Plan, rows: Sequence[dict]) -> None:
    """plot_tasks.png: score vs number of tasks (log2 x), one line per model (and template/CoT setting), error
    bars = std over seeds; plot_size.png: score vs model parameters (log x), one line per task count."""
    order = _order_models(plan)
    metrics = [("heldout_score", "held-out clusters")] + \
        ([("seen_score", "seen tasks (validation)")] if any(r.get("seen_score") is not None for r in rows) else [])
    color = _Colors()
    # Colors are handed out in a fixed order (models, then counts), whatever order the panels draw in.
    for key in sorted({("model", r["model"], r.get("templates_per_task"), r.get("cot_share")) for r in rows},
                      key=lambda k: (order.get(k[1], 99), k[2] or 0, k[3] or 0)):
        color(key)
    for key in sorted({("count", r["count"], r.get("templates_per_task"), r.get("cot_share")) for r in rows},
                      key=lambda k: (k[1], k[2] or 0, k[3] or 0)):
        color(key)
    _plot_tasks(plan, rows, metrics, color)
    _plot_size(plan, rows, metrics, color)


def _figure(panels: int) -> tuple[Figure, Any]:
    # A bare Figure (no pyplot): nothing process-wide (backend, figure registry) changes.
    fig = Figure(figsize=(5.2 * panels, 4))
    return fig, fig.subplots(1, panels, squeeze=False)


def _plot_tasks(plan: Plan, rows: Sequence[dict], metrics: list[tuple[str, str]], color: _Colors) -> None:
    spec, order = plan.spec, _order_models(plan)
    axis_label = "number of training tasks" if spec.axis == "tasks" else "number of training clusters"

    def label(model: str, tpl, cot) -> str:
        return model + (f", {tpl} tpl" if tpl is not None else "") + (f", cot {cot:g}" if cot is not None else "")

    fig, axes = _figure(len(metrics))
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


def _plot_size(plan: Plan, rows: Sequence[dict], metrics: list[tuple[str, str]], color: _Colors) -> None:
    spec, order = plan.spec, _order_models(plan)
    fig, axes = _figure(len(metrics))
    for ax, (metric, title) in zip(axes[0], metrics):
        groups = [g for g in aggregate(rows, metric) if g["mean"] is not None]
        ticks: dict[float, str] = {}
        lines: dict[tuple, list[dict]] = {}
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


def _dress_axis(ax, plan: Plan, metric: str, title: str, xlabel: str, ticks: dict) -> None:
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
