"""Benchmark: what the template sandbox's limits (`flanmix.sandbox`, issue 17) cost on the demo build. Not a test.

    .venv/bin/python bench/bench_sandbox.py            # 5 rounds
    .venv/bin/python bench/bench_sandbox.py --quick    # 2 rounds

Two modes, each in a fresh subprocess per round (so templates compile with that mode's environment), rounds
interleaved so both see the same machine load:

- limited: flanmix as shipped (`LimitedSandbox`: sized operators, filters and str methods, loop deadlines, bounded
  output);
- plain: the same environment without the limits (Jinja's `SandboxedEnvironment` with flanmix's filters and
  globals, no operator interception, no loop rewriting, `"".join` output) — flanmix before issue 17.

Each subprocess builds the bundled demo mixture (`flanmix build demo`: 20,000 planned rows, one process, JSONL) and
reports the build's CPU time (one process, so CPU time is the build's own work, not the neighbours' on a shared
machine) and its rows/s (best of its two builds; the first also warms caches). The order of the two modes alternates
between rounds. Prints a table and writes bench/results/sandbox.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys, tempfile, time
from pathlib import Path
mode = sys.argv[1]
if mode == "plain":
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment
    import flanmix.templates as templates
    from flanmix.sandbox import Limits

    class Plain(SandboxedEnvironment):
        limits = Limits(max_chars=10**18)  # the substitution fast path reads it; never reached

    env = Plain(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    for name in ("choice", "most_frequent"):
        env.filters[name] = templates.ENV.filters[name]
    env.globals["zip"] = zip
    templates.ENV = env
from flanmix.mixture import build

best = None
with tempfile.TemporaryDirectory() as tmp:
    for i in range(2):
        start = time.process_time()
        manifest = build("demo", Path(tmp) / f"out{i}", fmt="jsonl", progress=False)
        took = time.process_time() - start
        best = took if best is None else min(best, took)
digest = ",".join(s["sha256"] for s in manifest["shards"])
print(manifest["size"]["rows"], manifest["size"]["planned"], best, digest)
"""


def run(mode: str) -> tuple[str, int, float]:
    """(shard hashes, rows planned, best build seconds) of one subprocess in `mode`."""
    out = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    rows, planned, seconds, digest = out.stdout.split()
    return f"{rows}:{digest}", int(planned), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 5")
    args = parser.parse_args()
    rounds = 2 if args.quick else 5
    times: dict[str, list[float]] = {"plain": [], "limited": []}
    rows: dict[str, str] = {}
    for round_ in range(rounds):
        for mode in (("plain", "limited") if round_ % 2 == 0 else ("limited", "plain")):
            written, planned, seconds = run(mode)
            rows[mode] = written
            times[mode].append(seconds)
    assert rows["plain"] == rows["limited"], rows  # the limits change no byte of the output
    written = int(rows["limited"].split(":")[0])
    result = {"rows": written, "planned": planned, "rounds": rounds, "identical_output": True,
              "modes": {mode: {"best_s": min(t), "median_s": sorted(t)[len(t) // 2],
                               "rows_per_s_best": planned / min(t), "all_s": t} for mode, t in times.items()}}
    change = result["modes"]["limited"]["rows_per_s_best"] / result["modes"]["plain"]["rows_per_s_best"] - 1
    result["rows_per_s_change"] = change
    print(f"demo build ({planned:,} planned rows, {written:,} written, byte-identical in both modes), best of "
          f"{rounds} rounds x 2 builds\n")
    print("| mode | best build CPU s | median CPU s | rows/s (best) |")
    print("|---|---:|---:|---:|")
    for mode, m in result["modes"].items():
        print(f"| {mode} | {m['best_s']:.2f} | {m['median_s']:.2f} | {m['rows_per_s_best']:,.0f} |")
    print(f"\nlimited vs plain: {change:+.1%} rows/s")
    out = ROOT / "bench" / "results" / "sandbox.json"
    out.write_text(json.dumps({**result, "measured": time.strftime("%Y-%m-%d")}, indent=1) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
