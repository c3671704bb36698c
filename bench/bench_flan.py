"""Benchmark: planning the full Flan 2022 collection, and building from the fixture mirror vs the demo. Not a test.

    .venv/bin/python bench/bench_flan.py            # plan (both NIv2 layouts) + build rates, 2 rounds
    .venv/bin/python bench/bench_flan.py --quick    # 1 round

1. **Planning the full Flan 2022 task list** (each case in a fresh subprocess, so its peak memory is its own):
   every catalog task (71 Flan 2021, 193 T0, 9 CoT + 9 inversions, 2 Dialog + 2 inversions, NIv2) with the
   example counts FLAN records (bench/data/flan_counts.json, from FLAN's flan/v2/constants.py and
   constants_niv2.py; written by scripts/make_flan_catalog_specs.py) — no data is read: each task reports its
   recorded count. `flan2022` is resolved (caps, inversion ratios, submix weights) and planned for as many rows as
   one pass over the capped collection (sum of min(count, cap), the inversions at 0.3). Two NIv2 layouts: FLAN's
   one task for all of NIv2, and one task per NIv2 task (1,556, each capped at 5,000). Reports wall time, CPU time
   and peak RSS of the process.
2. **Build rate**: `flanmix build` of the bundled demo (20,000 planned rows) vs flan2022 from tests/fixtures/hub
   (20,000 planned rows), one process, JSONL; rows/s from the CPU time of the build (best of the rounds).

Prints a table and writes bench/results/flan.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PLAN_CHILD = r"""
import json, resource, sys, time
t0, c0 = time.perf_counter(), time.process_time()
from flanmix.mixture import find_mixture, load_spec, make_plan, resolve
from flanmix.registry import Registry
from flanmix.task import Task

per_task_niv2 = sys.argv[1] == "per_task"
data = json.load(open(sys.argv[2]))
counts = {name: n for group in data["counts"].values() for name, n in group.items()}
counts.update({alias: counts[name] for alias, name in data.get("aliases", {}).items()})
counts.update(data.get("estimates", {}))


class Counted(Task):
    # A catalog task that reports its recorded example count instead of reading data (shares its base's templates).
    def __init__(self, base, n, name=None):
        spec = base.spec if name is None else base.spec.model_copy(update={"name": name})
        super().__init__(spec, base.templates, spec_file=base.spec_file, template_file=base.template_file,
                         compile_templates=False)
        self.base, self.n = base, n

    @property
    def prompts(self):
        return self.base.prompts

    def examples(self, split="train"):
        return range(self.n) if split == "train" else range(0)


tasks, missing = [], []
for task in Registry.discover():
    if task.spec.collection not in ("Flan2021", "T0", "NIv2", "CoT", "Dialog"):
        continue
    if task.spec.collection == "NIv2" and per_task_niv2:
        tasks += [Counted(task, n, name) for name, n in sorted(data["niv2_tasks"].items())]
        continue
    if task.name not in counts:
        missing.append(task.name)
    tasks.append(Counted(task, counts.get(task.name, 1000)))
spec, doc = load_spec(find_mixture("flan2022"))
t1, c1 = time.perf_counter(), time.process_time()
resolved = resolve(spec, Registry(tasks), doc=doc)
caps = {"flan2021": 30000, "t0": 20000, "niv2": 5000, "cot": 100000, "dialog": 200000}
rows = 0
for leaf in resolved.leaves:
    cap = caps[leaf.component.split("/")[0]]
    rows += min(leaf.task.n, cap) * (0.3 if leaf.task.spec.inversion_of else 1.0)
rows = int(rows)
plan = make_plan(resolved.leaves, rows, 2022, False)
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"tasks": len(tasks), "leaves": len(resolved.leaves), "rows": len(plan), "missing": missing,
                  "load_s": t1 - t0, "plan_s": t2 - t1, "total_s": t2 - t0, "cpu_s": c2 - c0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

BUILD_CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
from flanmix.hub import using_mirror
from flanmix.mixture import build
name, mirror = sys.argv[1], sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    spec = Path(tmp) / "mix.yaml"
    spec.write_text(f"size: 20000\nseed: 0\ndedup: false\ncomponents: [{{mixture: {name}}}]\n")
    with using_mirror([mirror] if mirror != "-" else None):
        c0, t0 = time.process_time(), time.perf_counter()
        manifest = build(spec, Path(tmp) / "out", fmt="jsonl", progress=False)
        c1, t1 = time.process_time(), time.perf_counter()
print(json.dumps({"rows": manifest["size"]["rows"], "planned": manifest["size"]["planned"], "cpu_s": c1 - c0,
                  "wall_s": t1 - t0}))
"""


def child(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 1 if args.quick else 2
    counts = str(ROOT / "bench" / "data" / "flan_counts.json")
    plans = {layout: min((child(PLAN_CHILD, layout, counts) for _ in range(rounds)), key=lambda r: r["total_s"])
             for layout in ("one_task", "per_task")}
    builds = {}
    for name, mirror in (("demo", "-"), ("flan2022", str(ROOT / "tests" / "fixtures" / "hub"))):
        best = min((child(BUILD_CHILD, name, mirror) for _ in range(rounds)), key=lambda r: r["cpu_s"])
        builds[name] = best | {"rows_per_cpu_s": best["planned"] / best["cpu_s"]}
    print(f"{'plan flan2022':<24}{'tasks':>7}{'rows':>11}{'load s':>8}{'plan s':>8}{'total s':>9}{'peak MB':>9}")
    for layout, r in plans.items():
        print(f"{'NIv2 ' + layout:<24}{r['tasks']:>7}{r['rows']:>11,}{r['load_s']:>8.2f}{r['plan_s']:>8.2f}"
              f"{r['total_s']:>9.2f}{r['peak_rss_mb']:>9.0f}")
    print(f"\n{'build (20k planned)':<24}{'rows':>7}{'cpu s':>8}{'wall s':>8}{'rows/cpu s':>12}")
    for name, r in builds.items():
        print(f"{name:<24}{r['rows']:>7}{r['cpu_s']:>8.2f}{r['wall_s']:>8.2f}{r['rows_per_cpu_s']:>12.0f}")
    out = ROOT / "bench" / "results" / "flan.json"
    out.write_text(json.dumps({"plan": plans, "build": builds, "rounds": rounds}, indent=1) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
