"""Runs in the studio: what is under the runs folder (training runs with a `metrics.jsonl`, ablation folders with
their results, evaluation reports), a run's curves and eval tables, and an ablation's results table and plots.

Everything is read fresh on each request (a run may be writing), and a damaged file is a message on the page: the
curves stop at a bad line of `metrics.jsonl`, an unreadable report is skipped with its error.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import iter_jsonl, read_json

SKIP = {"final", "checkpoints", "tb", "studio-builds", "__pycache__", "data", "mixture"}
MAX_DEPTH = 5
MAX_REPORT_BYTES = 5_000_000
LIVE_SECONDS = 120  # a run whose metrics changed this recently (and has no final model) is shown as running
NOT_SERIES = {"step", "epoch", "time_s", "tokens"}
EVAL_METRICS = ("exact_match", "exact_match_strict", "rank_classification", "rank_classification_norm",
                "cot_exact_match", "contains")


def is_ablation(folder: Path) -> bool:
    """An ablation output folder: results written by `flanmix ablate`, or its cells."""
    return (folder / "results.md").is_file() or (folder / "results.jsonl").is_file() or (folder / "cells").is_dir()


def discover(root: Path) -> list[dict[str, Any]]:
    """Training runs, ablations and eval reports under `root` (an ablation's cells are listed on its own page)."""
    found: list[dict[str, Any]] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root).as_posix()
        depth = 0 if rel == "." else rel.count("/") + 1
        if here != root and is_ablation(here):
            found.append({"rel": rel, "kind": "ablation", "updated": _mtime(here, ("results.md", "results.jsonl")),
                          "summary": _ablation_summary(here)})
            dirnames[:] = []
            continue
        if "metrics.jsonl" in filenames:
            found.append({"rel": rel, "kind": "train", **_run_summary(here)})
            dirnames[:] = []
            continue
        for name in sorted(filenames):
            if name.endswith(".json") and (report := eval_report(here / name)) is not None:
                found.append({"rel": f"{rel}/{name}" if rel != "." else name, "kind": "eval",
                              "updated": (here / name).stat().st_mtime, "summary": _eval_summary(report)})
        deeper = depth < MAX_DEPTH
        dirnames[:] = sorted(d for d in dirnames if deeper and not d.startswith(".") and d not in SKIP)
    return sorted(found, key=lambda e: e["rel"])


def _mtime(folder: Path, names: tuple[str, ...]) -> float:
    times = [(folder / n).stat().st_mtime for n in names if (folder / n).is_file()]
    return max(times) if times else folder.stat().st_mtime


def _run_summary(folder: Path) -> dict[str, Any]:
    metrics = read_metrics(folder / "metrics.jsonl")
    last = metrics["last"] or {}
    parts = [f"step {last['step']}"] if "step" in last else []
    if isinstance(last.get("loss"), (int, float)):
        parts.append(f"loss {last['loss']:.4g}")
    if metrics["error"]:
        parts.append("metrics file damaged")
    return {"updated": (folder / "metrics.jsonl").stat().st_mtime, "summary": ", ".join(parts) or "no records yet",
            "live": is_live(folder)}


def _ablation_summary(folder: Path) -> str:
    cells = [p for p in (folder / "cells").iterdir() if p.is_dir()] if (folder / "cells").is_dir() else []
    done = sum((p / "result.json").is_file() for p in cells)
    return f"{done} of {len(cells)} cells complete" if cells else "results"


def _eval_summary(report: dict) -> str:
    overall = report.get("overall") or {}
    score = overall.get("score")
    return f"{len(report.get('tasks') or {})} tasks" + (f", score {score:.3f}" if isinstance(score, float) else "")


def is_live(folder: Path) -> bool:
    """Whether a training run looks like it is still going: metrics written lately and no final model yet."""
    metrics = folder / "metrics.jsonl"
    recent = metrics.is_file() and time.time() - metrics.stat().st_mtime < LIVE_SECONDS
    return recent and not (folder / "final").exists() and not (folder / "COMPLETE").exists()


# ------------------------------------------------------------------------------------------------ one run

def read_metrics(path: Path) -> dict[str, Any]:
    """The curves of a `metrics.jsonl` (`{name: [[step, value], ...]}`), its events, its last record and the
    error that stopped the reading (a bad line), if any."""
    series: dict[str, list[list[float]]] = {}
    events: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    error = None
    count = 0
    try:
        for _, record in iter_jsonl(path):
            count += 1
            step = record.get("step")
            if "event" in record:
                events.append(record)
                continue
            if not isinstance(step, (int, float)) or isinstance(step, bool):
                raise FlanmixError("record has no numeric 'step'", file=path, line=count,
                                   expected='{"step": N, "loss": ...}')
            last = record
            for key, value in record.items():
                if key not in NOT_SERIES and isinstance(value, (int, float)) and not isinstance(value, bool):
                    series.setdefault(key, []).append([step, value])
    except FlanmixError as err:
        error = str(err)
    return {"series": series, "events": events, "last": last, "records": count, "error": error}


def eval_report(path: Path) -> dict[str, Any] | None:
    """An evaluation report (`flanmix eval --out`, an ablation cell's eval_*.json), or None for any other file."""
    try:
        if path.stat().st_size > MAX_REPORT_BYTES or path.name.endswith("_config.json"):
            return None
        with path.open(encoding="utf-8") as handle:
            head = handle.read(200_000)
        if '"overall"' not in head or '"tasks"' not in head:
            return None
        data = json.loads(head if len(head) < 200_000 else path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("tasks"), dict) and isinstance(data.get("overall"), dict)
    return data if ok else None


def eval_table(report: dict[str, Any]) -> dict[str, Any]:
    """The table `flanmix eval` prints: one row per task (its metrics and score), the clusters and the overall."""
    tasks = report.get("tasks") or {}
    present = [m for m in EVAL_METRICS if any(m in (t.get("metrics") or {}) for t in tasks.values())]
    rows = [{"task": name, "cluster": t.get("cluster", ""), "n": t.get("n", ""),
             "metrics": [(t.get("metrics") or {}).get(m) for m in present], "score": t.get("score")}
            for name, t in tasks.items() if isinstance(t, dict)]
    clusters = [{"name": name, "score": c.get("score"), "n_tasks": c.get("n_tasks")}
                for name, c in (report.get("clusters") or {}).items() if isinstance(c, dict)]
    return {"model": report.get("model", ""), "metrics": present, "rows": rows, "clusters": clusters,
            "overall": report.get("overall") or {}}


def run_view(folder: Path) -> dict[str, Any]:
    """A training run: curves, events, eval tables of the reports beside it, its config and whether it is going."""
    metrics = read_metrics(folder / "metrics.jsonl") if (folder / "metrics.jsonl").is_file() else None
    evals, problems = [], []
    for path in sorted(folder.glob("*.json")):
        report = eval_report(path)
        if report is not None:
            evals.append({"name": path.name, **eval_table(report)})
    config = None
    for path in sorted(folder.glob("*_config.json")):
        try:
            config = {"name": path.name, "text": json.dumps(read_json(path, what="run config"), indent=1)}
        except FlanmixError as err:
            problems.append(str(err))
        break
    return {"metrics": metrics, "evals": evals, "config": config, "problems": problems, "live": is_live(folder),
            "final": (folder / "final").is_dir()}


# ------------------------------------------------------------------------------------------------ ablations

def markdown_blocks(text: str) -> list[dict[str, Any]]:
    """The headings, paragraphs and tables of a results.md, for the page to lay out."""
    blocks: list[dict[str, Any]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line:
            i += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            blocks.append({"kind": "heading", "level": min(level + 1, 4), "text": line.lstrip("#").strip()})
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= set(":-") for c in cells):  # the alignment row
                    rows.append(cells)
                i += 1
            blocks.append({"kind": "table", "head": rows[0] if rows else [], "rows": rows[1:]})
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|")):
                para.append(lines[i].strip())
                i += 1
            blocks.append({"kind": "text", "text": " ".join(para)})
    return blocks


def ablation_view(folder: Path, root: Path) -> dict[str, Any]:
    """An ablation folder: its results (results.md), plots and cells (with their runs and failures)."""
    results = folder / "results.md"
    blocks = markdown_blocks(results.read_text(encoding="utf-8", errors="replace")) if results.is_file() else []
    plots = [p.relative_to(root).as_posix() for p in sorted(folder.glob("plot_*.png"))]
    cells = []
    cells_dir = folder / "cells"
    for cell in sorted(cells_dir.iterdir()) if cells_dir.is_dir() else []:
        if not cell.is_dir():
            continue
        runs = [p.parent.relative_to(root).as_posix() for p in sorted(cell.glob("*/metrics.jsonl"))]
        failed = None
        if (cell / "failed.json").is_file() and not (cell / "result.json").is_file():
            try:
                failed = str(read_json(cell / "failed.json").get("error", "failed"))
            except (FlanmixError, AttributeError):
                failed = "failed (unreadable failed.json)"
        cells.append({"name": cell.name, "complete": (cell / "result.json").is_file(), "runs": runs,
                      "failed": failed})
    return {"blocks": blocks, "plots": plots, "cells": cells,
            "updated": _mtime(folder, ("results.md", "results.jsonl"))}
