"""Benchmark: how fast `flanmix studio` answers (not a test). Prints a Markdown table and writes
bench/results/studio.json.

    .venv/bin/python bench/bench_studio.py

A studio is started as a user starts it (`python -m flanmix studio --port 0`); each figure is the best and the
median of REPEAT requests over loopback HTTP, after one warm-up request (which loads the registry and the rows):

- task page: /tasks/arith_add with 20 rows, so every template (8 zero-shot + 3 CoT) in all 4 variants on each row,
  880 renders, randomized options; the whole HTML page (~400 kB).
- preview: the template editor's request after an edit (the set parsed, validated, compiled and rendered on 3 rows,
  and on 20 rows), as the page sends it.
- shares: the target shares of the bundled `demo` mixture after a weight change (resolve + shares + tree).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 15


def start() -> tuple[subprocess.Popen, str, str]:
    process = subprocess.Popen([sys.executable, "-m", "flanmix", "studio", "--port", "0", "--runs", "/nonexistent"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    match = re.search(r"(http://[^/]+)/\?token=(\S+)", process.stdout.readline())
    assert match, process.stderr.read()
    for _ in range(600):
        try:
            urllib.request.urlopen(match.group(1) + "/static/studio.css", timeout=5).read()
            break
        except OSError:
            time.sleep(0.05)
    return process, match.group(1), match.group(2)


def request(url: str, body: dict | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as response:
        return response.read()


def measure(name: str, url: str, body: dict | None = None) -> dict:
    size = len(request(url, body))  # warm-up
    times = []
    for _ in range(REPEAT):
        start_t = time.perf_counter()
        request(url, body)
        times.append((time.perf_counter() - start_t) * 1000)
    return {"name": name, "best_ms": round(min(times), 1), "median_ms": round(statistics.median(times), 1),
            "bytes": size}


def main() -> None:
    process, url, _ = start()
    try:
        text = (ROOT / "templates" / "arithmetic" / "add.yaml").read_text()
        results = [
            measure("task page, 20 rows x 11 templates x 4 variants (880 renders)",
                    url + "/tasks/arith_add?n=20&random=1"),
            measure("task page, 1 row (44 renders)", url + "/tasks/arith_add"),
            measure("preview after an edit, 3 rows (132 renders)", url + "/api/tasks/arith_add/preview",
                    {"text": text + "\n# edit", "n": 3}),
            measure("preview after an edit, 20 rows (880 renders)", url + "/api/tasks/arith_add/preview",
                    {"text": text + "\n# edit", "n": 20}),
            measure("mixture shares after a weight change (demo, 33 tasks)", url + "/api/mixture",
                    {"ref": "bundled:demo.yaml", "overrides": {"components.0.weight": 0.6}}),
        ]
    finally:
        process.terminate()
        process.wait(timeout=10)
    print("| request | best ms | median ms | bytes |\n|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['name']} | {r['best_ms']} | {r['median_ms']} | {r['bytes']:,} |")
    out = ROOT / "bench" / "results" / "studio.json"
    out.write_text(json.dumps({"repeat": REPEAT, "results": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
