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


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return seconds


def _same_output(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir() if p.name != "manifest.json")
    if names != sorted(p.name for p in b.iterdir() if p.name != "manifest.json"):
        return False
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def bench_build(name: str, mixture: Path | str, rounds: int, address: str, work: Path) -> dict:
    """`rounds` alternating pairs of builds of `mixture`; medians, ratio, equal outputs."""
    base = [sys.executable, "-m", "flanmix", "build", str(mixture), "--quiet", "--overwrite"]
    times: dict[str, list[float]] = {"local": [], "ray": []}
    for r in range(rounds):
        order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
        for engine in order:
            extra = ["--num-proc", "2"] if engine == "local" else ["--engine", "ray", "--address", address]
            times[engine].append(_timed(base + ["--out", str(work / f"{name}-{engine}")] + extra))
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
                     "ray_startup_s": round(startup, 2)}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            work = Path(tmp)
            results["demo"] = bench_build("demo", "demo", rounds, address, work)
            results[f"demo_{rows}"] = bench_build(f"demo{rows}", scaled_demo(work, rows), rounds, address, work)
            if not args.no_ablate:
                results["ablate_8_cells"] = bench_ablate(min(rounds, 2), address, work)
    finally:
        start = time.perf_counter()
        ray.shutdown()
        results["ray_shutdown_s"] = round(time.perf_counter() - start, 2)
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
