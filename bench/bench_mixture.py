"""Benchmark: `flanmix build` against the pipeline a user would otherwise write with HF `datasets`, and against a
pyarrow-only floor. Not a test. Prints a Markdown table and writes bench/results/mixture.json.

    .venv/bin/python bench/bench_mixture.py                 # 50 tasks x 10 templates, 100k and 1M rows
    .venv/bin/python bench/bench_mixture.py --quick         # smaller, for a smoke run

Every measurement runs in its own subprocess (peak RSS is that process's, plus its largest child's), one after the
other in the same run on the same machine:

- flanmix: `flanmix.mixture.build` (discovery, task loading, planning, rendering in --num-proc workers, Parquet).
- datasets: per task a `Dataset` of its planned rows (raw fields + template index), `Dataset.map` rendering the
  same Jinja templates with the same sandboxed environment (`flanmix.templates.ENV`, `Template.render`),
  `interleave_datasets` with the same probabilities and `all_exhausted_without_replacement` (every planned row
  exactly once, so the same row count), `to_parquet`. Same --num-proc for `map`.
- floor: the same rows made by the cheapest code there is — plain `str` concatenation of pre-split templates in one
  loop, one process — and written with pyarrow alone (same zstd Parquet shards). No Jinja, no sandbox, no plan.
- scaling: 2,000 generated tasks; build time at two row counts, and at a fixed row count for 50/500/2000 tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORDS = ("alpha beta gamma delta red green blue cat dog fox tree river stone cloud quick slow bright dark "
         "north south east west early late small large").split()


def generate(rng: random.Random) -> dict:
    """One raw row of a generated benchmark task."""
    a, b = rng.randint(0, 99999), rng.randint(0, 99999)
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18)))
    return {"a": a, "b": b, "s": a + b, "text": text}


def _register_generator() -> None:
    from flanmix.sources import register_generator

    register_generator("bench.row", generate)


def template_pairs(task: int, templates: int) -> list[tuple[str, str]]:
    """Zero-shot templates of task `task`: mostly plain substitutions, every tenth uses a filter (as Flan's do)."""
    out = []
    for j in range(templates):
        text = "{{ text | upper }}" if j % 10 == 9 else "{{ text }}"
        out.append((f"[task {task}, template {j}] Read: {text}\nWhat is {{{{ a }}}} plus {{{{ b }}}}?",
                    "{{ s }}"))
    return out


def write_registry(root: Path, tasks: int, templates: int, examples: int) -> None:
    """`tasks` task specs with inline templates, each `examples` generated rows."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(tasks):
        lines = [f"name: bt{i:04d}", f"cluster: c{i % 10}", f"source: {{builtin: bench.row, examples: {examples}}}",
                 "validation_fraction: 0.0", "templates:", "  zero_shot:"]
        for inp, tgt in template_pairs(i, templates):
            lines.append(f"    - {{input: {json.dumps(inp)}, target: {json.dumps(tgt)}}}")
        (root / f"bt{i:04d}.yaml").write_text("\n".join(lines) + "\n")


def spec_for(rows: int, cap: int) -> dict:
    return {"seed": 0, "size": {"examples": rows}, "rate": {"by": "examples", "cap": cap},
            "template_types": {"zs_noopt": 1.0}, "dedup": False, "components": [{"tasks": "bt*"}]}


def _peak_mb() -> dict:
    """Peak RSS (largest process) and CPU seconds of this process and its children (robust on a shared machine)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    return {"peak_rss_mb": round(max(own.ru_maxrss, kids.ru_maxrss) / 1024, 1),
            "peak_rss_main_mb": round(own.ru_maxrss / 1024, 1), "peak_rss_child_mb": round(kids.ru_maxrss / 1024, 1),
            "cpu_s": round(cpu, 2)}


def _task_rows(args) -> tuple[list[list[dict]], list[list[tuple[str, str]]], list[int]]:
    """Per task: its planned rows (raw fields + template index) with flanmix's counts; same generator and seed."""
    import numpy as np

    from flanmix.mixture import largest_remainder

    sizes = []
    examples = []
    for i in range(args.tasks):
        rng = random.Random(f"0:bt{i:04d}")  # the seed flanmix's builtin source uses
        examples.append([generate(rng) for _ in range(args.examples)])
        sizes.append(min(args.examples, args.cap))
    counts = largest_remainder(args.rows, np.array(sizes, dtype=float)).tolist()
    rows, templates = [], []
    for i, (exs, count) in enumerate(zip(examples, counts)):
        rng = np.random.default_rng(i)
        idx = np.concatenate([rng.permutation(len(exs)) for _ in range(-(-count // len(exs)))])[:count]
        tidx = rng.integers(args.templates, size=count)
        rows.append([dict(exs[k], tidx=int(t), example_id=f"bt{i:04d}:{k}") for k, t in zip(idx.tolist(),
                                                                                           tidx.tolist())])
        templates.append(template_pairs(i, args.templates))
    return rows, templates, counts


# ---------------------------------------------------------------------------------------------- workers

def run_flanmix(args) -> dict:
    _register_generator()
    from flanmix.mixture import build
    from flanmix.registry import Registry

    start = time.perf_counter()
    registry = Registry.discover([args.registry], bundled=False, env=False, python=False)
    manifest = build(spec_for(args.rows, args.cap), args.out, registry=registry, num_proc=args.num_proc,
                     progress=False, overwrite=True)
    seconds = time.perf_counter() - start
    return {"rows": manifest.rows, "seconds": seconds, **_peak_mb()}


def run_datasets(args, num_proc: int | None = None) -> dict:
    import datasets

    from flanmix.templates import ENV

    datasets.disable_progress_bars()
    datasets.disable_caching()
    start = time.perf_counter()
    rows, templates, counts = _task_rows(args)
    parts = []
    cache: dict[str, object] = {}  # Jinja templates do not pickle: each map process compiles its own, once

    def compile_once(source: str):
        if source not in cache:
            cache[source] = ENV.from_string(source)
        return cache[source]

    for i, (task_rows, pairs) in enumerate(zip(rows, templates)):
        name = f"bt{i:04d}"

        def render(row, pairs=pairs, name=name):
            inp, tgt = (compile_once(src) for src in pairs[row["tidx"]])
            return {"inputs": inp.render(**row).strip(), "targets": tgt.render(**row).strip(), "task_name": name,
                    "task_source": "flanmix", "template_type": "zs_noopt", "template_idx": row["tidx"],
                    "example_id": row["example_id"], "cot": False}

        ds = datasets.Dataset.from_list(task_rows)
        ds = ds.map(render, remove_columns=["a", "b", "s", "text", "tidx"], num_proc=num_proc)
        parts.append(ds)
    phases = {"prepare+map": time.perf_counter() - start}
    total = sum(counts)
    mixed = datasets.interleave_datasets(parts, probabilities=[c / total for c in counts], seed=0,
                                         stopping_strategy="all_exhausted_without_replacement")
    phases["interleave"] = time.perf_counter() - start - sum(phases.values())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    mixed.to_parquet(str(Path(args.out) / "train.parquet"))
    seconds = time.perf_counter() - start
    phases["to_parquet"] = seconds - sum(phases.values())
    return {"rows": len(mixed), "seconds": seconds, "phases": {k: round(v, 2) for k, v in phases.items()},
            **_peak_mb()}


def run_floor(args) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flanmix.writer import SCHEMA

    start = time.perf_counter()
    rows, templates, _ = _task_rows(args)
    # Pre-split each template into literal text and field names: the cheapest rendering there is.
    split = []
    for pairs in templates:
        out = []
        for inp, tgt in pairs:
            parts = []
            for chunk in inp.replace("}}", "{{").split("{{"):
                parts.append(chunk)
            out.append((parts, tgt.strip("{} ")))
        split.append(out)
    order = [(i, r) for i, task_rows in enumerate(rows) for r in task_rows]
    random.Random(0).shuffle(order)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    shard = 25_000
    for n, lo in enumerate(range(0, len(order), shard)):
        cols = {name: [] for name in SCHEMA.names}
        for i, row in order[lo:lo + shard]:
            parts, target = split[i][row["tidx"]]
            text = []
            for k, part in enumerate(parts):
                if k % 2 == 0:
                    text.append(part)
                else:
                    name = part.strip()
                    text.append(row["text"].upper() if name == "text | upper" else str(row[name]))
            cols["inputs"].append("".join(text).strip())
            cols["targets"].append(str(row[target]))
            cols["task_name"].append(f"bt{i:04d}")
            cols["task_source"].append("flanmix")
            cols["template_type"].append("zs_noopt")
            cols["template_idx"].append(row["tidx"])
            cols["example_id"].append(row["example_id"])
            cols["cot"].append(False)
        table = pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in SCHEMA], schema=SCHEMA)
        pq.write_table(table, Path(args.out) / f"train-{n:05d}.parquet", compression="zstd")
    seconds = time.perf_counter() - start
    return {"rows": len(order), "seconds": seconds, **_peak_mb()}


WORKERS = {"flanmix": run_flanmix, "floor": run_floor,
           "datasets": lambda args: run_datasets(args, None),  # one process: the fastest datasets variant here
           "datasets_np": lambda args: run_datasets(args, args.num_proc)}  # map(num_proc=N) per task


# ---------------------------------------------------------------------------------------------- driver

def measure(kind: str, work: Path, registry: Path, rows: int, a) -> dict:
    out = work / f"out-{kind}-{rows}"
    cmd = [sys.executable, __file__, "--worker", kind, "--registry", str(registry), "--out", str(out),
           "--rows", str(rows), "--tasks", str(a.tasks), "--templates", str(a.templates),
           "--examples", str(a.examples), "--cap", str(a.cap), "--num-proc", str(a.num_proc)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(work / "hfcache"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = round(result["rows"] / result["seconds"])
    result["seconds"] = round(result["seconds"], 2)
    shutil.rmtree(out, ignore_errors=True)
    print(f"  {kind:8s} {rows:>9,} rows: {result['seconds']:7.2f} s  {result['rows_per_s']:>9,} rows/s  "
          f"peak RSS {result['peak_rss_mb']:.0f} MB  CPU {result['cpu_s']:.1f} s", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--registry")
    parser.add_argument("--out")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000, help="the smaller row count (RSS flatness)")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--templates", type=int, default=10)
    parser.add_argument("--examples", type=int, default=5_000, help="source rows per task")
    parser.add_argument("--cap", type=int, default=4_000)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--scale-tasks", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    a = parser.parse_args()
    if a.worker:
        print(json.dumps(WORKERS[a.worker](a)))
        return
    if a.quick:
        a.rows, a.small, a.examples, a.scale_tasks = 200_000, 50_000, 2_000, 500
    work = Path(tempfile.mkdtemp(prefix="bench-mixture-"))
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                     "config": {"tasks": a.tasks, "templates": a.templates, "examples_per_task": a.examples,
                                "cap": a.cap, "num_proc": a.num_proc}, "runs": {}}
    try:
        registry = work / "registry"
        write_registry(registry, a.tasks, a.templates, a.examples)
        for rows in (a.small, a.rows):
            print(f"{a.tasks} tasks x {a.templates} templates, {rows:,} rows", file=sys.stderr)
            results["runs"][str(rows)] = {kind: measure(kind, work, registry, rows, a)
                                          for kind in ("datasets", "flanmix", "floor")}
        # Scaling with the number of tasks: 2,000 small tasks (3 templates, 200 rows each).
        scale = {}
        big = work / "registry-scale"
        write_registry(big, a.scale_tasks, 3, 200)
        scale_args = argparse.Namespace(**{**vars(a), "tasks": a.scale_tasks, "templates": 3, "examples": 200,
                                           "cap": 200})
        for rows in (a.small, 2 * a.small):
            print(f"{a.scale_tasks} tasks, {rows:,} rows", file=sys.stderr)
            scale[f"{a.scale_tasks} tasks, {rows} rows"] = measure("flanmix", work, big, rows, scale_args)
        for tasks in (a.scale_tasks // 40, a.scale_tasks // 4):
            sub = work / f"registry-{tasks}"
            write_registry(sub, tasks, 3, 200)
            print(f"{tasks} tasks, {a.small:,} rows", file=sys.stderr)
            scale[f"{tasks} tasks, {a.small} rows"] = measure(
                "flanmix", work, sub, a.small, argparse.Namespace(**{**vars(scale_args), "tasks": tasks}))
        results["scaling"] = scale
    finally:
        shutil.rmtree(work, ignore_errors=True)

    big_run, small_run = results["runs"][str(a.rows)], results["runs"][str(a.small)]
    results["summary"] = {
        "speedup_vs_datasets": round(big_run["flanmix"]["rows_per_s"] / big_run["datasets"]["rows_per_s"], 2),
        "flanmix_time_over_floor": round(big_run["flanmix"]["seconds"] / big_run["floor"]["seconds"], 2),
        "speedup_vs_datasets_cpu": round(big_run["datasets"]["cpu_s"] / big_run["flanmix"]["cpu_s"], 2),
        "flanmix_cpu_over_floor": round(big_run["flanmix"]["cpu_s"] / big_run["floor"]["cpu_s"], 2),
        "flanmix_peak_rss_mb": {str(a.small): small_run["flanmix"]["peak_rss_mb"],
                                str(a.rows): big_run["flanmix"]["peak_rss_mb"]},
    }
    out = ROOT / "bench" / "results" / "mixture.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")

    print(f"\n### Mixture build ({a.tasks} tasks x {a.templates} templates, --num-proc {a.num_proc}, "
          f"{os.cpu_count()} CPUs)\n")
    print("| pipeline | rows | seconds | rows/s | CPU s | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for rows, run in results["runs"].items():
        for kind in ("datasets", "flanmix", "floor"):
            r = run[kind]
            print(f"| {kind} | {int(rows):,} | {r['seconds']} | {r['rows_per_s']:,} | {r['cpu_s']} | "
                  f"{r['peak_rss_mb']:.0f} |")
    s = results["summary"]
    print(f"\nAt {a.rows:,} rows: flanmix vs datasets **{s['speedup_vs_datasets']}x** rows/s "
          f"({s['speedup_vs_datasets_cpu']}x less CPU); "
          f"flanmix time / pyarrow floor **{s['flanmix_time_over_floor']}x**"
          f" (CPU {s['flanmix_cpu_over_floor']}x); flanmix peak RSS {s['flanmix_peak_rss_mb']} MB\n")
    print("| scaling run | seconds | rows/s | CPU s |")
    print("|---|---:|---:|---:|")
    for name, r in results["scaling"].items():
        print(f"| {name} | {r['seconds']} | {r['rows_per_s']:,} | {r['cpu_s']} |")
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
