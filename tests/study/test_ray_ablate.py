"""`flanmix ablate --engine ray`: cells as Ray tasks with declared resources — results, resume, a failed cell that
does not stop the others, a killed worker's cell rerun, GPUs the cluster lacks refused up front, and one real cell.

The tests share the session's local 2-CPU Ray cluster (`ray_cluster` in conftest.py) and skip without Ray. Fake cell
runners are closures, so Ray pickles them by value into its worker processes.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from flanmix.core.errors import FlanmixError
from flanmix.study import ablation
from helpers import write_ablation_spec as write_spec

pytest.importorskip("ray")


def fake_runner(fail: str = "", sleep: float = 0.0):
    """A cell runner that trains nothing: a score from the cell, a marker file per call, an error for `fail`."""

    def runner(cell, ctx):
        import time

        (ctx.cell_dir / f"ran-{time.time_ns()}").touch()
        time.sleep(sleep)
        if cell.id == fail:
            raise RuntimeError(f"boom in {cell.id}")
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        return {"heldout_score": 0.1 * cell.count, "seen_score": 0.5, "steps": 2, "train_tokens": 10 * cell.count,
                "cpus": cpus}

    return runner


def _kill_when_running(out: Path, stop: threading.Event, killed: list[str]) -> None:
    """Once a cell's runner has started (its marker file exists), SIGKILL the Ray worker process running that cell
    (Ray titles it `ray::ablate:<cell id>`)."""
    markers: list[Path] = []
    while not stop.is_set() and not markers:
        markers = list(out.glob("cells/*/ran-*"))
        time.sleep(0.01)
    if not markers:
        return
    cell = markers[0].parent.name
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(f"ray::ablate:{cell}".encode()):
            os.kill(int(pid), signal.SIGKILL)
            killed.append(cell)
            return


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the worker process through /proc")
def test_cells_run_as_ray_tasks_with_their_resources_failures_kills_and_resume(ray_cluster, tmp_path):
    spec = write_spec(tmp_path / "a.yaml", models=["nano", "tiny"], task_counts=[1, 2],
                      resources={"num_cpus": 1, "models": {"tiny": {"num_cpus": 2}}})
    out, lines = tmp_path / "out", []
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_when_running, args=(out, stop, killed))
    killer.start()
    try:
        res = ablation.run(spec, out, runner=fake_runner(fail="n002-tiny-s0", sleep=1.0), engine="ray",
                           log=lines.append)
    finally:
        stop.set()
        killer.join()
    # the failed cell does not stop the others; the killed cell ran again (Ray restarted its worker)
    assert res["failed"] == ["n002-tiny-s0"]
    assert sorted(res["ran"]) == ["n001-nano-s0", "n001-tiny-s0", "n002-nano-s0"]
    assert len(killed) == 1 and len(list((out / "cells" / killed[0]).glob("ran-*"))) == 2
    assert len(list(out.glob("cells/*/ran-*"))) == 5
    # each cell got the CPUs its model asks for
    assert {r["cell"]: r["cpus"] for r in res["rows"]} == {"n001-nano-s0": 1, "n002-nano-s0": 1, "n001-tiny-s0": 2}
    md = (out / "results.md").read_text()
    assert "## Failed cells" in md and "| n002-tiny-s0 | RuntimeError: boom in n002-tiny-s0 |" in md
    assert any("3 done" in line and "1 failed" in line for line in lines), lines
    assert any("running" in line and "queued" in line for line in lines)
    assert not list(out.glob("cells/*/running.json"))
    # a rerun retries only the failed cell; then the failure is gone from the table
    res = ablation.run(spec, out, runner=fake_runner(), engine="ray", log=lines.append)
    assert res["ran"] == ["n002-tiny-s0"] and len(res["skipped"]) == 3 and not res["failed"]
    assert "Failed cells" not in (out / "results.md").read_text() and len(res["rows"]) == 4


def test_cells_get_the_drivers_hub_mirror_and_allowed_paths(ray_cluster, tmp_path, monkeypatch):
    """Set after the cluster started, so only forwarding (the tasks' runtime environment) brings them to a cell."""
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("FLANMIX_ALLOW_PATHS", str(tmp_path))

    def runner(cell, ctx):
        import os

        return {"heldout_score": 0.0, "steps": 0, "train_tokens": 0,
                "env": [os.environ.get("FLANMIX_HUB_MIRROR"), os.environ.get("FLANMIX_ALLOW_PATHS")]}

    res = ablation.run(write_spec(tmp_path / "a.yaml", task_counts=[1]), tmp_path / "out", runner=runner,
                       engine="ray", log=lambda m: None)
    assert [row["env"] for row in res["rows"]] == [[str(tmp_path / "mirror"), str(tmp_path)]]


def test_gpus_the_cluster_lacks_are_refused_before_anything_runs(ray_cluster, tmp_path, capsys):
    from flanmix.cli import main

    spec = write_spec(tmp_path / "a.yaml", models=["nano", "tiny"], resources={"models": {"tiny": {"num_gpus": 1}}})
    with pytest.raises(FlanmixError, match=r"cell n001-tiny-s0 asks for 1 GPU\(s\), but no node .* more than 0"):
        ablation.run(spec, tmp_path / "out", runner=fake_runner(), engine="ray")
    assert not (tmp_path / "out" / "cells").exists()
    code = main(["ablate", str(spec), "--out", str(tmp_path / "out2"), "--engine", "ray"])
    # one error line (after the plan's summary; Ray may forward other workers' lines meanwhile)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("flanmix: error:")]
    assert code == 2 and len(errors) == 1 and "resources.models.tiny.num_gpus" in errors[0]
    err = errors[0]
    assert "ray start --num-gpus" in err and not any((tmp_path / "out2").iterdir())
    with pytest.raises(FlanmixError, match="resources.models names unknown models"):
        ablation.load_spec(write_spec(tmp_path / "b.yaml", resources={"models": {"huge": {"num_gpus": 1}}}))


def test_a_real_cell_on_ray(ray_cluster, tmp_path, tiny_model_dir):
    """One real cell (mixture build, 2 SFT steps, held-out + seen eval) in a Ray worker, then a resume."""
    spec = write_spec(
        tmp_path / "a.yaml", pool=["cluster:arithmetic"], task_counts=[1],
        models=[{"name": "nano", "path": str(tiny_model_dir)}], budget={"steps": 2, "batch_size": 4, "max_length": 96},
        held_out={"tasks": ["logic_order"]}, mixture={"template_types": {"zs_opt": 1}},
        eval={"limit": 3, "metrics": ["rank_classification"], "seen_limit": 2, "seen_metrics": ["exact_match"]})
    out = tmp_path / "out"
    res = ablation.run(spec, out, engine="ray", log=lambda m: None)
    assert res["ran"] == ["n001-nano-s0"] and not res["failed"]
    row = res["rows"][0]
    assert row["steps"] == 2 and 0 <= row["heldout_score"] <= 1 and row["seen_score"] is not None
    assert json.loads((out / "cells" / "n001-nano-s0" / "train_config.json").read_text())["max_steps"] == 2
    res = ablation.run(spec, out, engine="ray", log=lambda m: None)
    assert res["ran"] == [] and res["skipped"] == ["n001-nano-s0"]
