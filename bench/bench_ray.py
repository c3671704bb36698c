"""Benchmark: `--engine ray` on a local 2-CPU Ray cluster against local processes. Not a test. Prints a table and
writes bench/results/ray.json.

    .venv/bin/python bench/bench_ray.py            # builds: demo (20k rows) and demo at 300k rows; ablation grid
    .venv/bin/python bench/bench_ray.py --quick    # one round, smaller

- Builds: `flanmix build MIX --num-proc 2` against `flanmix build MIX --engine ray --address ADDR`, each a fresh CLI
  process (imports, connecting, resolving, planning, rendering, writing — what a user waits for), alternating, on
  the same machine in the same run. The cluster is started once by this script (`ray.init(num_cpus=2)`): its
  start-up is reported separately, as it is paid once per cluster, not per build. The outputs are checked equal.
- Ablation grid: 8 small real cells, `flanmix ablate SPEC --jobs 2` against `--engine ray` (1 CPU per cell); the
  results of both are checked equal (held-out score and final loss per cell).
- By default the driver renders shards while no worker is ready yet (`RayEngine._in_order`); the `*_workers_only`
  runs keep every shard on the workers (`FLANMIX_RAY_DRIVER_RENDERS=0`), the engine before that change.
- Where a demo build's time goes on Ray (`demo_breakdown`, workers only): one build in this process with timestamps
  at each step (driver: connect, start the workers, resolve and plan; worker: process start until its constructor
  runs, loading the tasks, rendering; result transfer; finishing the output), medians of 3; plus a fresh process's
  `import ray` and connection, which the CLI pays before them.
- The load average (`os.getloadavg`) before and after, as the machine is shared.

The machine is shared: wall times are noisy, so each pair runs back to back and the ratio of medians is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return seconds


def _same_output(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir() if p.name != "manifest.json")
    if names != sorted(p.name for p in b.iterdir() if p.name != "manifest.json"):
        return False
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def bench_build(name: str, mixture: Path | str, rounds: int, address: str, work: Path,
                driver_renders: bool = True) -> dict:
    """`rounds` alternating pairs of builds of `mixture`; medians, ratio, equal outputs. `driver_renders=False`
    times the Ray builds with every shard on the workers (`FLANMIX_RAY_DRIVER_RENDERS=0`)."""
    base = [sys.executable, "-m", "flanmix", "build", str(mixture), "--quiet", "--overwrite"]
    env = {**os.environ, "FLANMIX_RAY_DRIVER_RENDERS": "1" if driver_renders else "0"}
    times: dict[str, list[float]] = {"local": [], "ray": []}
    for r in range(rounds):
        order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
        for engine in order:
            extra = ["--num-proc", "2"] if engine == "local" else ["--engine", "ray", "--address", address]
            times[engine].append(_timed(base + ["--out", str(work / f"{name}-{engine}")] + extra, env))
    manifest = json.loads((work / f"{name}-ray" / "manifest.json").read_text())
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"rows": manifest["size"]["rows"], "shards": len(manifest["shards"]),
            "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "median_s": {k: round(v, 2) for k, v in medians.items()},
            "ratio_ray_over_local": round(medians["ray"] / medians["local"], 3),
            "pair_ratios": [round(r / loc, 3) for r, loc in zip(times["ray"], times["local"])],
            "identical_shards": _same_output(work / f"{name}-local", work / f"{name}-ray")}


def scaled_demo(work: Path, rows: int) -> Path:
    """The bundled demo mixture with `rows` rows."""
    from flanmix.mixture import find_mixture

    text = Path(find_mixture("demo")).read_text()
    path = work / f"demo{rows}.yaml"
    path.write_text(re.sub(r"^size: .*$", f"size: {{examples: {rows}}}", text, flags=re.M))
    return path


def _connect_seconds(address: str) -> float:
    """A fresh process's `import ray` and connection to the cluster (what the CLI pays before its first step)."""
    code = (f"import time; t = time.perf_counter(); import ray; ray.init(address={address!r}, "
            "logging_level='warning'); print(time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return float(proc.stdout.strip().splitlines()[-1])


def _steps(s: dict[str, float], start: float, end: float) -> dict[str, float]:
    """The steps of one timed build from its timestamps `s` (see `demo_breakdown`)."""
    return {
        "driver: spec and workers requested": s["workers_requested"] - start,
        "driver: resolve and plan (overlaps the worker's start and load)": s["planned"] - s["workers_requested"],
        "worker: process start and imports, until its constructor runs": s["worker_init"] - s["workers_requested"],
        "worker: load the tasks (resolve, fingerprint)": s["worker_loaded"] - s["worker_init"],
        "driver: waits for the worker after planning": max(0.0, s["render_start"] - s["planned"]),
        "worker: render the shard": s["render_end"] - s["render_start"],
        "result transfer to the driver": s["result_fetched"] - s["render_end"],
        "driver: write shard, dedup, manifest, stop workers": end - s["result_fetched"],
        "total (in-process, after connecting)": end - start,
    }


def demo_breakdown(address: str, work: Path, rounds: int = 3) -> dict:
    """Seconds per step of a demo build on Ray, timestamped in this process and (for the worker's steps) in the
    worker, which is on this machine; medians over `rounds` builds. The steps overlap: the worker starts and loads
    while the driver resolves and plans."""
    import time as clock

    from flanmix.mixture import ray_engine
    from flanmix.mixture.build import build

    class TimedWorker(ray_engine.ShardWorker):
        def __init__(self, recipe):
            start = clock.time()
            super().__init__(recipe)
            self.stamps = {"worker_init": start, "worker_loaded": clock.time()}

        def render(self, index, job):
            start = clock.time()
            result = super().render(index, job)
            result["stamps"] = {**self.stamps, "render_start": start, "render_end": clock.time()}
            return result

    stamps: dict[str, float] = {}
    engine, original = ray_engine.RayEngine, {}

    def wrap(name, before, after):
        original[name] = method = getattr(engine, name)

        def timed(self, *args, **kwargs):
            stamps.setdefault(before, clock.time())
            result = method(self, *args, **kwargs)
            stamps[after] = clock.time()
            if isinstance(result, dict) and "stamps" in result:
                stamps.update(result.pop("stamps"))
            return result
        setattr(engine, name, timed)

    wrap("prepare", "prepare", "workers_requested")
    wrap("render", "planned", "shards_written")
    wrap("_fetch", "result_ready", "result_fetched")
    worker_class, ray_engine.ShardWorker = ray_engine.ShardWorker, TimedWorker
    steps: dict[str, list[float]] = {}
    # Every shard on the worker, so that its start-up, loading and rendering show (by default the driver renders
    # the shards while no worker is ready, which for one shard is all of them).
    before = os.environ.get("FLANMIX_RAY_DRIVER_RENDERS")
    os.environ["FLANMIX_RAY_DRIVER_RENDERS"] = "0"
    try:
        for _ in range(rounds):
            stamps.clear()
            start = clock.time()
            build("demo", work / "breakdown", overwrite=True, progress=False, engine="ray", address=address)
            end = clock.time()
            for step, seconds in _steps(stamps, start, end).items():
                steps.setdefault(step, []).append(seconds)
    finally:
        if before is None:
            os.environ.pop("FLANMIX_RAY_DRIVER_RENDERS", None)
        else:
            os.environ["FLANMIX_RAY_DRIVER_RENDERS"] = before
        ray_engine.ShardWorker = worker_class
        for name, method in original.items():
            setattr(engine, name, method)
    steps["fresh process: import ray and connect"] = [_connect_seconds(address) for _ in range(rounds)]
    return {step: round(statistics.median(v), 2) for step, v in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round; 100k rows instead of 300k")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--no-ablate", action="store_true", help="builds only")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    rows = 100_000 if args.quick else args.rows
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    startup = time.perf_counter() - start
    address = ray.get_runtime_context().gcs_address
    results: dict = {"ray_version": ray.__version__, "cpus": os.cpu_count(), "cluster_cpus": 2,
                     "ray_startup_s": round(startup, 2), "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            work = Path(tmp)
            results["demo"] = bench_build("demo", "demo", max(rounds, 3) if not args.quick else 1, address, work)
            results["demo_workers_only"] = bench_build("demo", "demo", max(rounds, 3) if not args.quick else 1,
                                                       address, work, driver_renders=False)
            results["demo_breakdown_s"] = demo_breakdown(address, work, 1 if args.quick else 3)
            scaled = scaled_demo(work, rows)
            results[f"demo_{rows}"] = bench_build(f"demo{rows}", scaled, rounds, address, work)
            results[f"demo_{rows}_workers_only"] = bench_build(f"demo{rows}", scaled, rounds, address, work,
                                                               driver_renders=False)
            if not args.no_ablate:
                results["ablate_8_cells"] = bench_ablate(min(rounds, 2), address, work)
    finally:
        start = time.perf_counter()
        ray.shutdown()
        results["ray_shutdown_s"] = round(time.perf_counter() - start, 2)
        results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out = ROOT / "bench" / "results" / "ray.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"Ray start-up (local 2-CPU cluster): {results['ray_startup_s']} s, shutdown {results['ray_shutdown_s']} s")
    print("| run | rows | shards | local (s) | ray (s) | ray / local | identical |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for key, res in results.items():
        if isinstance(res, dict) and "median_s" in res:
            print(f"| {key} | {res.get('rows', '')} | {res.get('shards', res.get('cells', ''))} | "
                  f"{res['median_s']['local']} | {res['median_s']['ray']} | {res['ratio_ray_over_local']} | "
                  f"{res.get('identical_shards', res.get('identical', ''))} |")
    print(f"load average before {results['load_average_before']}, after {results['load_average_after']}")
    for step, seconds in results.get("demo_breakdown_s", {}).items():
        print(f"  demo on Ray: {step}: {seconds} s")
    print(f"written to {out.relative_to(ROOT)}")


ABLATION = {
    "name": "bench-ray", "held_out": {"clusters": ["logic"]},
    "pool": ["cluster:arithmetic", "cluster:lists", "cluster:word_problems"],
    "task_counts": [1, 2, 4, 8], "seeds": [0, 1], "models": ["nano"], "vocab_size": 1024, "threads": 1,
    "budget": {"steps": 20, "batch_size": 8, "max_length": 128},
    "eval": {"limit": 8, "seen_limit": 4, "metrics": ["rank_classification"], "seen_metrics": ["exact_match"]},
}


def _ladder_models(folder: Path) -> Path:
    """The grid's nano models (one per seed), where a run folder's `models/` would have them, made once from a small
    synthetic corpus (so the timed runs do not create them)."""
    import random

    from trainers.init_model import init_model

    rng = random.Random(0)
    texts = [f"What is {a} + {b}? {a + b}. Sort: {' '.join(sorted(str(rng.randint(0, 99)) for _ in range(5)))}"
             for a, b in ((rng.randint(0, 999), rng.randint(0, 999)) for _ in range(3000))]
    for seed in ABLATION["seeds"]:
        init_model("nano", folder / f"nano-v{ABLATION['vocab_size']}-s{seed}", vocab_size=ABLATION["vocab_size"],
                   texts=texts, seed=seed, overwrite=True)
    return folder


def bench_ablate(rounds: int, address: str, work: Path) -> dict:
    """An 8-cell grid (task counts 1-8 x 2 seeds, nano model, 20 SFT steps, small evals): `--jobs 2` against
    `--engine ray` (1 CPU per cell). Each run folder gets its models from an untimed `--dry-run` first, so the
    timed runs compare running the cells (and the tables), not creating the models."""
    import shutil

    import yaml

    spec = work / "ablation.yaml"
    spec.write_text(yaml.safe_dump(ABLATION, sort_keys=False))
    models = _ladder_models(work / "models")
    base = [sys.executable, "-m", "flanmix", "ablate", str(spec)]
    times: dict[str, list[float]] = {"local": [], "ray": []}
    for r in range(rounds):
        order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
        for engine in order:
            out = work / f"ablate-{engine}-{r}"
            shutil.copytree(models, out / "models")
            _timed(base + ["--out", str(out), "--dry-run"])
            extra = ["--jobs", "2"] if engine == "local" else ["--engine", "ray", "--address", address]
            times[engine].append(_timed(base + ["--out", str(out)] + extra))
    rows = {e: [json.loads(line) for line in (work / f"ablate-{e}-0" / "results.jsonl").read_text().splitlines()]
            for e in ("local", "ray")}
    same = sorted((r["cell"], r["heldout_score"], r["final_loss"]) for r in rows["local"]) == sorted(
        (r["cell"], r["heldout_score"], r["final_loss"]) for r in rows["ray"])
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"cells": len(rows["ray"]), "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "median_s": {k: round(v, 2) for k, v in medians.items()},
            "ratio_ray_over_local": round(medians["ray"] / medians["local"], 3),
            "pair_ratios": [round(r / loc, 3) for r, loc in zip(times["ray"], times["local"])],
            "identical": same}


if __name__ == "__main__":
    main()
