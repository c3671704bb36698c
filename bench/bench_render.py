"""Benchmark: rendering speed of FLAN's imported templates against today's bundled demo mixture. Not a test.

    .venv/bin/python bench/bench_render.py            # 20,000 rows each, best of 5
    .venv/bin/python bench/bench_render.py --quick    # 5,000 rows each, one run

Both mixtures run in this process, interleaved, with the demo's settings (seed 42, 25/25/25/25 template types,
randomized options, dedup, one process, JSONL): the bundled demo (`mixtures/demo.yaml`) and a mixture over every
FLAN key imported with `flanmix import flan` (120 tasks, examples-proportional with a 3,000 cap). The FLAN tasks'
rows are generated at bundled size: every field a key's templates use holds a short phrase (2-6 words); keys whose
templates show `{options_}` get 2-4 answer options (the others have none, as in FLAN, so their opt rows fall back
to no-options rows, as the bundled tasks without options do), dialog keys a 4-turn dialog. Tasks are loaded before
the clock starts. Two numbers per mixture:

- render rows/s: the plan rendered alone (`ShardRenderer.render_rows`, x_shot and template_mix few-shot prompts
  for FLAN), in CPU time of this process (the machine may be shared; wall time would measure the neighbours);
- build rows/s: whole builds in wall time (planning, rendering, dedup, writing, hashing every task's spec, template
  and data files, the manifest: per-task costs, larger for 120 tasks than for 33).

Prints a table and writes bench/results/render.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_FLAN = ROOT.parent / "shared" / "data" / "templates" / "flan"
WORDS = ("alpha beta gamma delta red green blue cat dog fox tree river stone cloud quick slow bright dark "
         "north south east west early late small large").split()
ROWS_PER_TASK = 400


def phrase(rng: random.Random, lo: int = 3, hi: int = 10) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def write_flan_registry(root: Path) -> list[str]:
    """Import FLAN's templates into `root` and write one task (spec + JSONL rows) per FLAN key."""
    from flanmix.importers.flan import import_flan
    from flanmix.importers.flan_source import flan_key_slug, read_flan_tables

    import_flan(SHARED_FLAN, root)
    tables = read_flan_tables(SHARED_FLAN)
    rng = random.Random(0)
    names = []
    for key, pairs in tables.patterns.items():
        texts = [t for pair in pairs for t in pair] + [t for p in tables.fewshot_patterns.get(key, ())
                                                       for t in (p.inputs, p.targets, p.input_pattern)]
        used = {n for t in texts for n in re.findall(r"{+(\w+)}", t)}
        fields = used - {"options_", "dialog_", "final_suffix"}
        slug = flan_key_slug(key)
        with open(root / f"{slug}.jsonl", "w") as handle:
            for _ in range(ROWS_PER_TASK):
                row = {f: phrase(rng, 2, 6) for f in fields}
                if "options_" in used:  # as in FLAN, only tasks whose templates show options have them
                    row["options"] = [phrase(rng, 1, 3) for _ in range(rng.randint(2, 4))]
                    row["answer"] = rng.choice(row["options"])
                if "dialog_" in used:
                    row["dialog"] = [phrase(rng) for _ in range(4)]
                handle.write(json.dumps(row) + "\n")
        options = "options_field: options\n" if "options_" in used else ""
        (root / f"flan_{slug}.yaml").write_text(
            f"name: flan_{slug}\ncluster: flan\nsource: {{files: {slug}.jsonl}}\ntemplates: flan/{slug}\n"
            f"{options}validation_fraction: 0.0\n")
        names.append(f"flan_{slug}")
    return names


class Timed:
    """One mixture, resolved and planned once: best CPU time of rendering the plan alone (the same
    `ShardRenderer.render_rows` a build runs, with the garbage collector quieted as a build does) and best wall time
    of whole builds (tasks already loaded)."""

    def __init__(self, spec, registry, out: Path) -> None:
        from flanmix.mixture.plan import make_plan
        from flanmix.mixture.render import ShardRenderer
        from flanmix.mixture.resolve import resolve
        from flanmix.mixture.spec import as_spec

        self.spec, _ = as_spec(spec)
        self.registry, self.out = registry, out
        leaves = resolve(self.spec, registry).leaves
        self.plan = make_plan(leaves, self.spec.size.examples, self.spec.seed, self.spec.replacement)
        self.renderer = ShardRenderer(leaves=leaves, plan=self.plan, seed=self.spec.seed,
                                      rows_per_shard=len(self.plan), out=out, fmt="jsonl", messages=False,
                                      dedup=self.spec.dedup, grams=None, ngram=13)
        self.render_seconds = self.build_seconds = float("inf")
        self.manifest = None

    def run(self) -> None:
        from flanmix.mixture import build

        gc.collect()
        gc.freeze()
        start = time.process_time()
        self.renderer.render_rows(0, len(self.plan))
        self.render_seconds = min(self.render_seconds, time.process_time() - start)
        gc.unfreeze()
        start = time.perf_counter()
        self.manifest = build(self.spec, self.out, registry=self.registry, fmt="jsonl", overwrite=True,
                              progress=False)
        self.build_seconds = min(self.build_seconds, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from flanmix.mixture.spec import load_spec
    from flanmix.registry import Registry

    rows, repeats = (5_000, 1) if args.quick else (20_000, 5)
    demo, _ = load_spec(ROOT / "mixtures" / "demo.yaml")
    demo = demo.model_copy(update={"size": demo.size.model_copy(update={"examples": rows})})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        names = write_flan_registry(tmp / "flan")
        flan_spec = {"name": "flan", "seed": 42, "size": {"examples": rows}, "rate": {"by": "examples", "cap": 3000},
                     "template_types": {"zs_opt": 0.25, "zs_noopt": 0.25, "fs_opt": 0.25, "fs_noopt": 0.25},
                     "randomize_options": True, "dedup": True, "components": [{"tasks": "flan_*"}]}
        bundled = Registry.discover(env=False, python=False)
        flan = Registry.discover([tmp / "flan"], bundled=False, env=False, python=False)
        for registry in (bundled, flan):  # load every task's rows before the clock starts
            for task in registry:
                task.examples()
        runs = {"bundled demo": Timed(demo, bundled, tmp / "out"),
                "FLAN templates": Timed(flan_spec, flan, tmp / "out")}
        for _ in range(repeats):  # interleaved, so both see the same machine load
            for timed in runs.values():
                timed.run()
        results = {}
        for label, timed in runs.items():
            manifest, size = timed.manifest, timed.manifest["size"]
            results[label] = {"tasks": len(manifest["leaves"]), "planned": size["planned"], "rows": size["rows"],
                              "fewshot_dropped": size.get("fewshot_dropped", 0),
                              "mean_input_chars": manifest["lengths"]["inputs_chars"]["mean"],
                              "render_rows_per_s": round(size["planned"] / timed.render_seconds),
                              "build_rows_per_s": round(size["planned"] / timed.build_seconds)}
    assert len(names) == 120
    print("| mixture | tasks | planned rows | written | FLAN-dropped | mean input chars | render rows/s | "
          "build rows/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in results.items():
        print(f"| {label} | {r['tasks']} | {r['planned']} | {r['rows']} | {r['fewshot_dropped']} | "
              f"{r['mean_input_chars']} | {r['render_rows_per_s']} | {r['build_rows_per_s']} |")
    ratios = {k: round(results["FLAN templates"][k] / results["bundled demo"][k], 3)
              for k in ("render_rows_per_s", "build_rows_per_s")}
    print(f"\nFLAN / bundled: rendering {ratios['render_rows_per_s']:.2f}x, whole build "
          f"{ratios['build_rows_per_s']:.2f}x per row (a build also hashes and reports every task's files)")
    out = ROOT / "bench" / "results" / "render.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "repeats": repeats, "results": results, "ratios": ratios},
                              indent=2) + "\n")


if __name__ == "__main__":
    main()
