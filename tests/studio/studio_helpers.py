"""Helpers of the studio tests: a workspace (a writable registry with one task, its template set and two mixtures; a
runs folder with a training run, a damaged one, a live one and an ablation) and starting `flanmix studio` on a free
loopback port."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_SET = textwrap.dedent("""\
    # The studio test task's templates.
    zero_shot:
      - {input: "Hello {{ name }}! Do you live in {{ city }}?\\n\\n{{ options_ }}", target: "{{ answer }}"}
      - {input: "Is {{ city }} the home of {{ name }}?\\n{{ options_ }}", target: "{{ answer }}"}
      - {input: "Name someone who lives in {{ city }}.", target: "{{ name }}", inverted: true}
    cot:
      - {input: "Does {{ name }} live in {{ city }}? Think first.\\n\\n{{ options_ }}",
         target: "{{ why }} So: {{ answer }}."}
    """)
TASK_SPEC = textwrap.dedent("""\
    name: studio_greet
    description: A small task of the studio tests (who lives where).
    cluster: studio
    source: {files: data/rows.jsonl}
    options_field: options
    rationale_field: why
    templates: studio/greet
    license: CC0-1.0
    """)
SMALL_MIXTURE = textwrap.dedent("""\
    name: small
    description: The studio test task and the bundled arithmetic cluster.
    seed: 7
    size: {examples: 400}
    rate: {by: examples, cap: 200}
    template_types: {zs_opt: 0.25, zs_noopt: 0.25, fs_opt: 0.25, fs_noopt: 0.25}
    randomize_options: true
    components:
      - {task: studio_greet, weight: 1}
      - {cluster: arithmetic, weight: 1}
    """)
BAD_MIXTURE = textwrap.dedent("""\
    name: bad
    size: {examples: 100}
    components:
      - {task: no_such_task_here, weight: 1}
    """)
NAMES = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "John", "Margaret", "Ken"]
CITIES = ["Paris", "London", "Boston", "Zurich", "Berlin", "Tokyo"]


def _rows() -> str:
    lines = []
    for i in range(40):
        name, city = NAMES[i % len(NAMES)], CITIES[(i * 7) % len(CITIES)]
        lives = i % 3 != 0
        lines.append(json.dumps({"name": name, "city": city, "options": ["yes", "no"],
                                 "answer": "yes" if lives else "no",
                                 "why": f"{name} {'lives' if lives else 'does not live'} in {city}."}))
    return "\n".join(lines) + "\n"


def _metrics(steps: int, *, start: float = 2.5) -> str:
    lines = []
    for step in range(10, steps * 10 + 1, 10):
        record = {"step": step, "loss": start * 0.93 ** (step / 10), "lr": 1e-3 * min(1.0, step / 50),
                  "tokens_per_s": 5000 + step, "tokens": 4096, "time_s": 0.8, "epoch": step / 400}
        if step % 50 == 0:
            record["eval_loss"] = record["loss"] * 1.1
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


EVAL_REPORT = {"model": "runs/sft-demo/final", "tasks_spec": ["cluster:arithmetic"], "settings": {},
               "tasks": {"arith_add": {"cluster": "arithmetic", "n": 50, "metrics": {"exact_match": 0.62,
                                                                                      "rank_classification": 0.8},
                                       "score": 0.71},
                         "arith_sub": {"cluster": "arithmetic", "n": 50, "metrics": {"exact_match": 0.4,
                                                                                      "rank_classification": 0.7},
                                       "score": 0.55}},
               "clusters": {"arithmetic": {"score": 0.63, "n_tasks": 2}},
               "overall": {"score": 0.63, "n_tasks": 2, "n_items": 100, "cluster_macro": 0.63, "n_clusters": 1}}
RESULTS_MD = textwrap.dedent("""\
    # tiny-ablation

    Held-out clusters: logic (5 tasks). Scores: mean ± std over seeds.

    | tasks | model | params | held-out | seen | steps | tokens | seeds |
    |---:|---|---:|---:|---:|---:|---:|---:|
    | 1 | nano | 0.25M | 0.312 ± 0.010 | 0.401 ± 0.020 | 40 | 81,920 | 2 |
    | 4 | nano | 0.25M | 0.355 ± 0.012 | 0.420 ± 0.015 | 40 | 81,920 | 2 |
    """)


def _plot_png(path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    ax.errorbar([1, 4], [0.312, 0.355], yerr=[0.01, 0.012], marker="o", capsize=3, label="nano")
    ax.set_xlabel("number of training tasks")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


@dataclass
class Workspace:
    root: Path
    registry: Path
    template_file: Path
    runs: Path


def make_workspace(root: Path) -> Workspace:
    """Write the registry, mixtures and runs the studio tests use."""
    registry = root / "reg"
    (registry / "data").mkdir(parents=True)
    (registry / "data" / "rows.jsonl").write_text(_rows())
    (registry / "greet.yaml").write_text(TASK_SPEC)
    template_file = registry / "templates" / "studio" / "greet.yaml"
    template_file.parent.mkdir(parents=True)
    template_file.write_text(TEMPLATE_SET)
    (registry / "mixtures").mkdir()
    (registry / "mixtures" / "small.yaml").write_text(SMALL_MIXTURE)
    (registry / "mixtures" / "bad.yaml").write_text(BAD_MIXTURE)
    runs = root / "runs"
    demo = runs / "sft-demo"
    demo.mkdir(parents=True)
    (demo / "metrics.jsonl").write_text(_metrics(40))
    (demo / "eval_heldout.json").write_text(json.dumps(EVAL_REPORT))
    (demo / "sft_config.json").write_text(json.dumps({"lr": 1e-3, "batch_size": 8}))
    (demo / "final").mkdir()
    broken = runs / "broken"
    broken.mkdir()
    lines = _metrics(8).splitlines()
    (broken / "metrics.jsonl").write_text("\n".join(lines[:4] + ['{"step": 50, "loss": 1.2', *lines[4:]]) + "\n")
    live = runs / "live"
    live.mkdir()
    (live / "metrics.jsonl").write_text(_metrics(5))
    ablation = runs / "tiny-ablation"
    (ablation / "cells" / "n1-nano-s0" / "sft").mkdir(parents=True)
    (ablation / "cells" / "n1-nano-s0" / "sft" / "metrics.jsonl").write_text(_metrics(4))
    (ablation / "cells" / "n1-nano-s0" / "result.json").write_text("{}")
    (ablation / "results.md").write_text(RESULTS_MD)
    (ablation / "results.jsonl").write_text("")
    _plot_png(ablation / "plot_tasks.png")
    return Workspace(root, registry, template_file, runs)


@dataclass
class Server:
    url: str
    token: str
    process: subprocess.Popen
    workspace: Workspace

    def get(self, path: str, *, headers: dict | None = None) -> tuple[int, str]:
        """GET `path`; (status, body)."""
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8")

    def post(self, path: str, body: dict, *, token: bool = True) -> tuple[int, dict]:
        """POST a JSON body (with the token header unless `token=False`); (status, JSON answer)."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["X-Studio-Token"] = self.token
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


def start_server(args: list[str], *, cwd: Path, env: dict | None = None) -> tuple[subprocess.Popen, str, str]:
    """Start `flanmix studio --port 0 ARGS`; returns the process, its base URL and its token."""
    process = subprocess.Popen([sys.executable, "-m", "flanmix", "studio", "--port", "0", *args], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env or dict(os.environ))
    line = process.stdout.readline()
    match = re.search(r"(http://[^/]+)/\?token=(\S+)", line)
    if match is None:
        process.kill()
        raise AssertionError(f"no URL from flanmix studio: {line!r} {process.stderr.read()[-2000:]}")
    url = match.group(1)
    deadline = time.time() + 60
    while True:  # the URL is printed just before the server starts answering
        try:
            with urllib.request.urlopen(url + "/static/studio.css", timeout=5):
                break
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                raise AssertionError(f"flanmix studio did not answer: {process.stderr.read()[-2000:]}") from None
            time.sleep(0.1)
    return process, url, match.group(2)
