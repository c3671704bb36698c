"""`flanmix ablate --engine ray`: every cell of the grid is a Ray task with the resources the spec declares.

The driver plans the grid, prepares the models and checks the budgets as for a local run; then each remaining cell
is submitted as one task asking for its `resources` (`num_cpus`, `num_gpus`, per model when bigger rungs need
more), and Ray starts it wherever those are free, with the driver's hub mirror, allowed paths and offline switches
(`flanmix.mixture.ray_cluster.FORWARDED_ENVS`) in its environment. A task rebuilds the plan from the spec (as a
`--jobs` worker does), runs the cell with the project's own loop in its cell folder, and returns the metrics; the
driver writes `result.json` atomically as results arrive and keeps the tables current. So the run folder (and the
registry, data and model folders) must be on storage every node sees.

A worker process that dies (killed, OOM, node lost) is restarted and its cell rerun by Ray (`RETRIES` times); a
rerun cell resumes its SFT from the cell's checkpoints. A cell that raises is not retried: its error goes into
`failed.json` and the results' "Failed cells" table, and the other cells go on; a rerun of the command retries it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from flanmix.core.errors import FlanmixError
from flanmix.mixture.ray_cluster import check_engine, forwarded_env, ray_session, worker_env_options
from flanmix.study.ablation.cell import Context, run_cell
from flanmix.study.ablation.grid import Cell, Plan, start_cell_dir, write_record
from flanmix.study.ablation.report import FAILED

RETRIES = 3  # reruns of a cell whose worker process died
RUNNING = "running.json"  # in a cell folder while a Ray worker runs the cell (for the progress line)
POLL_S = 5.0  # how often the progress line is refreshed while no cell finishes

Finish = Callable[[Cell, dict, float], None]
Log = Callable[[str], None]


@contextlib.contextmanager
def cluster_for(engine: str, address: str | None) -> Iterator[ModuleType | None]:
    """Ray, connected, for `engine="ray"` (see `flanmix.mixture.ray_cluster.ray_session`); None for `local`."""
    check_engine(engine, address)
    if engine == "local":
        yield None
        return
    with ray_session(address) as ray:
        yield ray


def check_resources(ray: ModuleType, plan: Plan, cells: list[Cell]) -> None:
    """Refuse, before anything trains, a cell asking for more CPUs or GPUs than any node of the cluster has."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    largest = {kind: max((float(n.get(kind, 0)) for n in nodes), default=0.0) for kind in ("CPU", "GPU")}
    resources = plan.spec.resources
    for cell in cells:
        asked = resources.of(cell.model)
        where = f"resources.models.{cell.model}" if cell.model in resources.models else "resources"
        for kind, amount in (("GPU", asked.num_gpus), ("CPU", asked.num_cpus)):
            if amount > largest[kind]:
                fix = ("GPU nodes in the cluster (`ray start --num-gpus N`)" if kind == "GPU"
                       else "a node with more CPUs")
                raise FlanmixError(f"cell {cell.id} asks for {amount:g} {kind}(s), but no node of the Ray cluster "
                                   f"has more than {largest[kind]:g}", field=f"{where}.num_{kind.lower()}s",
                                   expected=f"at most {largest[kind]:g}, or {fix}")


# The plan of the grid whose cells this Ray worker process runs, keyed by the grid: resolving it (registry, subsets,
# and the held-out eval sets it renders on first use) takes seconds, and Ray runs many cells in one worker process.
# Set only inside Ray worker processes (by `worker_plan`), never in the process that runs the grid; it holds one
# grid and is replaced when a cell of another grid arrives (as runner.py's `--jobs` workers keep theirs).
_worker_plan: tuple[str, Plan] | None = None


def worker_plan(worker: Any) -> Plan:
    """The grid's plan in this Ray worker process (`worker.plan()`, made once per process and grid)."""
    global _worker_plan
    key = repr(worker)
    if _worker_plan is None or _worker_plan[0] != key:
        _worker_plan = (key, worker.plan())
    return _worker_plan[1]


def run_cell_task(worker: Any, cell_id: str, model_dir: str | None, needs: dict | None, threads: int,
                  runner: Callable[[Cell, Context], dict] | None) -> tuple[dict, float]:
    """The body of one cell's Ray task: the plan (`worker_plan`), then the cell with `threads` torch threads
    (restored after: Ray reuses the process); returns its metrics and seconds."""
    import torch

    plan = worker_plan(worker)
    cell = next(c for c in plan.cells if c.id == cell_id)
    write_record(plan.cell_dir(cell) / RUNNING, {"host": socket.gethostname(), "pid": os.getpid()})
    _worker_log(f"start {cell.id} on {socket.gethostname()}: {len(cell.tasks)} tasks")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        ctx = Context(plan, plan.cell_dir(cell), Path(model_dir) if model_dir else None, needs, _worker_log)
        metrics = (runner or run_cell)(cell, ctx)
        return metrics, time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)


def run_on_ray(ray: ModuleType, plan: Plan, todo: list[Cell], worker: Any, model_dirs: dict, needs: dict,
               finish: Finish, *, threads: int | None, runner: Callable | None, log: Log) -> list[str]:
    """Run `todo` as Ray tasks, recording each result with `finish` as it arrives; returns the failed cell ids."""
    task = ray.remote(run_cell_task)
    env_options = worker_env_options(forwarded_env())  # a process start is nothing against a cell's minutes
    pending: dict[Any, Cell] = {}
    for cell in todo:
        start_cell_dir(plan, cell)
        for stale in (FAILED, RUNNING):
            (plan.cell_dir(cell) / stale).unlink(missing_ok=True)
        asked = plan.spec.resources.of(cell.model)
        model_dir = model_dirs.get((cell.model, cell.seed))
        options = {"num_cpus": asked.num_cpus, "num_gpus": asked.num_gpus, "max_retries": RETRIES,
                   "name": f"ablate:{cell.id}", **env_options}
        ref = task.options(**options).remote(worker, cell.id, str(model_dir) if model_dir else None,
                                             needs.get(cell.id), threads or max(1, int(asked.num_cpus)), runner)
        pending[ref] = cell
    log(f"{len(todo)} cells submitted to the Ray cluster ({_cluster_line(ray)})")
    board = _Board(plan, len(todo), log)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in done:
                cell = pending.pop(ref)
                outcome = _outcome(ray, ref)
                (plan.cell_dir(cell) / RUNNING).unlink(missing_ok=True)
                if isinstance(outcome, str):
                    board.fail(cell, outcome)
                else:
                    finish(cell, *outcome)
                    board.done += 1
            board.show(pending.values())
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return board.failed


def _worker_log(message: str) -> None:
    """A cell's log line on the worker (Ray forwards workers' stderr to the driver)."""
    print(f"[ablate] {message}", file=sys.stderr, flush=True)


def _outcome(ray: ModuleType, ref: Any) -> tuple[dict, float] | str:
    """A cell task's (metrics, seconds), or its error as one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        return str(cause) if isinstance(cause, FlanmixError) else f"{type(cause).__name__}: {cause}"
    except ray.exceptions.RayError as err:  # its worker died more often than Ray reruns it
        lines = str(err).strip().splitlines()
        return f"worker died {RETRIES + 1} times: {lines[0] if lines else type(err).__name__}"


def _cluster_line(ray: ModuleType) -> str:
    total = ray.cluster_resources()
    return f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs"


class _Board:
    """Counts of done / running / failed / queued cells, logged when they change."""

    def __init__(self, plan: Plan, total: int, log: Log) -> None:
        self.plan, self.total, self.log = plan, total, log
        self.done = 0
        self.failed: list[str] = []
        self.last = ""

    def fail(self, cell: Cell, error: str) -> None:
        write_record(self.plan.cell_dir(cell) / FAILED, {"cell": cell.id, "cell_hash": cell.hash, "error": error})
        self.failed.append(cell.id)
        self.log(f"FAILED {cell.id}: {error}")

    def show(self, pending: Any) -> None:
        pending = list(pending)
        running = sum((self.plan.cell_dir(c) / RUNNING).is_file() for c in pending)
        line = (f"cells: {self.done} done, {running} running, {len(self.failed)} failed, "
                f"{len(pending) - running} queued (of {self.total})")
        if line != self.last:
            self.log(line)
            self.last = line
