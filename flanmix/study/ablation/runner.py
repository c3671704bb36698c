"""Running a grid: plan, guards, skip complete cells, run the rest (in this process or in worker processes),
record each result and keep the tables current.

A cell is complete when `cells/<id>/result.json` exists (written atomically) and records the same cell config
hash; a rerun skips complete cells and reruns the rest. `run(...)` takes any `runner(cell, ctx) -> dict`, so tests
exercise the grid mechanics without training; `cell.run_cell` is the real runner.
"""

from __future__ import annotations

import fnmatch
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from flanmix.core.errors import FlanmixError
from flanmix.corpus import bundled_corpus
from flanmix.study.ablation.budget import check_budget
from flanmix.study.ablation.cell import Context, run_cell
from flanmix.study.ablation.grid import (
    Cell,
    Plan,
    load_plan,
    make_plan,
    model_facts,
    read_result,
    start_cell_dir,
    write_record,
)
from flanmix.study.ablation.ray_runner import check_resources, cluster_for, run_on_ray
from flanmix.study.ablation.report import write_reports
from flanmix.study.ablation.spec import AblationSpec
from trainers.init_model import init_model
from trainers.models import load_tokenizer
from trainers.runtime import torch_threads

Runner = Callable[[Cell, Context], dict]
Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    """The default progress log: one `[ablate]` line on stderr."""
    print(f"[ablate] {message}", file=sys.stderr, flush=True)


def run(spec: AblationSpec | str | Path, out: str | Path, *, runner: Runner | None = None,
        registry_dirs: Sequence[str] = (), only: str | None = None, dry_run: bool = False,
        prepare: bool | None = None, threads: int | None = None, jobs: int | None = None,
        log: Log = stderr_log, engine: str = "local", address: str | None = None) -> dict:
    """Run (or resume) an ablation grid into `out`; returns {"plan", "rows", "ran", "skipped", "failed"}.

    `runner` defaults to `run_cell` (real mixture build, SFT, eval). `only` is a glob over cell ids. With
    `dry_run` the plan and guards run but no cell. `prepare` (default: only with the real runner) creates the
    ladder models and runs the token-based budget guard. `threads` (default: the spec's) sets torch's CPU threads
    for the run (restored afterwards); `jobs` (default: the spec's) runs that many cells at once in worker processes
    (real runner only). `engine="ray"` runs each cell as a Ray task with the spec's `resources` on the cluster at
    `address` (else a local one); there a failed cell is recorded and the others go on (`ray_runner`).
    """
    plan = load_plan(spec, out, registry_dirs=registry_dirs)
    spec = plan.spec
    real = runner is None
    prepare = real if prepare is None else prepare
    cells = [c for c in plan.cells if only is None or fnmatch.fnmatchcase(c.id, only)]
    if not cells:
        raise FlanmixError(f"no cell matches {only!r}", field="only",
                           expected="a glob over cell ids such as n004-*-s0")
    log(f"{spec.name}: {len(plan.cells)} cells ({len(cells)} selected); pool {len(plan.pool)} tasks in "
        f"{len(set(plan.pool.values()))} clusters; held out {len(plan.held_out)} tasks in "
        f"{len(set(plan.held_out.values()))} clusters ({', '.join(sorted(set(plan.held_out.values())))})")
    plan.out.mkdir(parents=True, exist_ok=True)
    with torch_threads((threads or spec.threads) if real else None), cluster_for(engine, address) as cluster:
        if cluster is not None:
            check_resources(cluster, plan, cells)
        model_dirs, needs = _prepare(plan, log) if prepare else ({}, {})
        write_record(plan.out / "plan.json", {
            "spec": spec.model_dump(mode="json"), "spec_file": str(plan.spec_file) if plan.spec_file else None,
            "pool": plan.pool, "held_out": plan.held_out, "heldout_chance": plan.chance() if prepare else None,
            "cells": [{**asdict(c), "needs": needs.get(c.id)} for c in plan.cells]})
        if dry_run:
            for c in cells:
                n = needs.get(c.id)
                extra = f"; ~{n['rows']} rows, ~{n['tokens']:,} tokens of {n['supply_rows']} rows" if n else ""
                log(f"  {c.id}: {len(c.tasks)} tasks{extra}")
            return {"plan": plan, "rows": [], "ran": [], "skipped": [], "failed": []}
        skipped = [c.id for c in cells if read_result(plan, c) is not None]
        todo = [c for c in cells if c.id not in skipped]
        progress = _Progress(plan, len(todo), log)
        jobs = max(1, jobs or spec.jobs)
        failed: list[str] = []
        if cluster is not None:
            # Defaults left out: they come back on validation (a dumped `arch: llama` would not validate with `path`).
            worker = _worker_args(plan, registry_dirs)
            failed = run_on_ray(cluster, plan, todo, worker, model_dirs, needs, progress.finish,
                                threads=threads or spec.threads, runner=runner, log=log)
        elif jobs > 1 and real and len(todo) > 1:
            worker = _worker_args(plan, registry_dirs)
            _run_parallel(plan, todo, worker, model_dirs, needs, progress, jobs=jobs,
                          threads=threads or spec.threads or 1)
        else:
            for cell in todo:
                _announce(plan, cell, log)
                ctx = Context(plan, plan.cell_dir(cell), model_dirs.get((cell.model, cell.seed)), needs.get(cell.id),
                              log)
                t0 = time.perf_counter()
                metrics = (runner or run_cell)(cell, ctx)
                progress.finish(cell, metrics, time.perf_counter() - t0)
    if skipped:
        log(f"skipped {len(skipped)} complete cell(s)")
    rows = write_reports(plan)
    log(f"results in {plan.out}/results.md ({len(rows)} cells)")
    return {"plan": plan, "rows": rows, "ran": progress.ran, "skipped": skipped, "failed": failed}




def _prepare(plan: Plan, log: Log) -> tuple[dict[tuple[str, int], Path], dict[str, dict]]:
    """The initial model folders and the budget guard (tokens counted with the first model's tokenizer)."""
    model_dirs = prepare_models(plan, log=log)
    first = model_dirs[(plan.spec.models[0].name, plan.spec.seeds[0])]
    return model_dirs, check_budget(plan, load_tokenizer(first))


def prepare_models(plan: Plan, *, log: Log = stderr_log) -> dict[tuple[str, int], Path]:
    """(model name, seed) -> initial model folder. Ladder sizes are created once per seed under `models/` (the
    seed sets the random init; the tokenizer is trained on the bundled task text and is the same for all rungs of
    an arch)."""
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
            rung = m.size if m.arch == "llama" else f"{m.arch}-{m.size}"
            path = plan.out / "models" / f"{rung}-v{plan.spec.vocab_size}-s{seed}"
            if not (path / "config.json").is_file():
                if corpus is None:
                    corpus = bundled_corpus(extra_dirs=tuple(plan.registry_dirs))
                info = init_model(m.size, path, vocab_size=plan.spec.vocab_size, texts=corpus, seed=seed,
                                  overwrite=True, arch=m.arch)
                log(f"init {m.name}: {info['params']:,} params -> {path}")
            out[(m.name, seed)] = path
    return out


def _announce(plan: Plan, cell: Cell, log: Log) -> None:
    start_cell_dir(plan, cell)
    log(f"cell {cell.id}: {len(cell.tasks)} tasks ({', '.join(cell.tasks[:4])}{' ...' if len(cell.tasks) > 4 else ''})")


class _Progress:
    """Records each finished cell: its result.json, a log line, and refreshed tables (plots once at the end)."""

    def __init__(self, plan: Plan, total: int, log: Log) -> None:
        self.plan, self.total, self.log = plan, total, log
        self.ran: list[str] = []
        self.t_start = time.perf_counter()

    def finish(self, cell: Cell, metrics: dict, seconds: float) -> None:
        spec = self.plan.spec
        result = {"cell": cell.id, "cell_hash": cell.hash, "seed": cell.seed, "axis": spec.axis,
                  "count": cell.count, "n_tasks": len(cell.tasks), "model": cell.model,
                  "templates_per_task": cell.templates, "cot_share": cell.cot, "subset_seed": cell.subset_seed,
                  "tasks": cell.tasks, "clusters": cell.clusters, **model_facts(self.plan, cell), **metrics,
                  "seconds": round(seconds, 2)}
        write_record(self.plan.cell_dir(cell) / "result.json", result)
        self.ran.append(cell.id)
        self.log(f"done {cell.id} ({len(self.ran)}/{self.total}): held-out {_f(result.get('heldout_score'))}, seen "
                 f"{_f(result.get('seen_score'))} ({seconds:.0f}s; {time.perf_counter() - self.t_start:.0f}s so far)")
        write_reports(self.plan, plots=False)


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


# ------------------------------------------------------------------------------------------------ worker processes

@dataclass(frozen=True)
class _WorkerArgs:
    """What a worker process needs to rebuild the plan (plans hold a registry: rebuilt, not pickled)."""

    spec: dict
    spec_file: str | None
    out: str
    registry_dirs: list[str]

    def plan(self) -> Plan:
        return make_plan(AblationSpec.model_validate(self.spec), self.out, spec_file=self.spec_file,
                         registry_dirs=self.registry_dirs)


def _worker_args(plan: Plan, registry_dirs: Sequence[str]) -> _WorkerArgs:
    """What a worker needs to rebuild `plan`. Defaults are left out of the spec: a default that another field rules
    out (a model's `arch` next to its `path`) must not come back as if the user had written it."""
    return _WorkerArgs(plan.spec.model_dump(mode="json", exclude_defaults=True),
                       str(plan.spec_file) if plan.spec_file else None, str(plan.out), list(registry_dirs))


def _run_parallel(plan: Plan, todo: list[Cell], worker: _WorkerArgs, model_dirs: dict[tuple[str, int], Path],
                  needs: dict[str, dict], progress: _Progress, *, jobs: int, threads: int) -> None:
    """Run `todo` on `jobs` worker processes, recording each result as it arrives."""
    # spawn, not fork: a forked torch with live thread pools can deadlock.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads, worker)) as pool:
        pending: dict[Future, Cell] = {}
        progress.log(f"{len(todo)} cells on {jobs} worker processes")
        for cell in todo:
            start_cell_dir(plan, cell)
            fut = pool.submit(_work, cell.id, str(model_dirs[(cell.model, cell.seed)]), needs.get(cell.id))
            pending[fut] = cell
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    cell = pending.pop(fut)
                    metrics, seconds = fut.result()
                    progress.finish(cell, metrics, seconds)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


# Set only inside pool worker processes (by `_init_worker`), never in the process that runs the grid: a worker
# resolves the plan (registry discovery, subsets) once and reuses it for every cell it runs.
_worker_plan: Plan | None = None


def _init_worker(threads: int, worker: _WorkerArgs) -> None:
    global _worker_plan
    torch.set_num_threads(threads)  # the worker process's own setting: it ends with the pool
    _worker_plan = worker.plan()


def _work(cell_id: str, model_dir: str, needs: dict | None) -> tuple[dict, float]:
    plan = _worker_plan
    assert plan is not None, "_work runs only in pool workers started by _run_parallel"
    cell = next(c for c in plan.cells if c.id == cell_id)
    stderr_log(f"start {cell.id}: {len(cell.tasks)} tasks ({', '.join(cell.tasks[:4])}"
               f"{' ...' if len(cell.tasks) > 4 else ''})")
    t0 = time.perf_counter()
    metrics = run_cell(cell, Context(plan, plan.cell_dir(cell), Path(model_dir), needs, stderr_log))
    return metrics, time.perf_counter() - t0
