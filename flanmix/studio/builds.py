"""A mixture build started from the studio: `flanmix build` in a child process (so the server keeps answering and
the build is exactly the CLI's), its tqdm progress read from stderr, and `flanmix stats` of the result.

A build writes only under the runs folder's `studio-builds/`, replacing that mixture's previous studio build.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flanmix.core.atomic import write_text
from flanmix.core.errors import FlanmixError
from flanmix.stats import mixture_stats

_PROGRESS = re.compile(r"(\d+)/(\d+)")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class BuildJob:
    """One background build: its state (`running`, `done`, `failed`), progress, last message and final stats."""

    id: str
    label: str
    out: Path
    command: list[str]
    state: str = "running"
    done: int = 0
    total: int = 0
    message: str = ""
    stats: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    process: subprocess.Popen | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The job as the page polls it."""
        return {"id": self.id, "label": self.label, "out": str(self.out), "state": self.state, "done": self.done,
                "total": self.total, "message": self.message, "stats": self.stats,
                "seconds": round(self.seconds or time.time() - self.started, 1)}


def safe_name(text: str) -> str:
    """A folder name made of the mixture's name."""
    return _SAFE.sub("_", text).strip("._") or "mixture"


def build_command(spec_file: Path, out: Path, registry_dirs: list[Path]) -> list[str]:
    """The `flanmix build` command line of a studio build."""
    command = [sys.executable, "-m", "flanmix", "build", str(spec_file), "--out", str(out), "--overwrite",
               "--num-proc", "1"]
    for folder in registry_dirs:
        command += ["--registry", str(folder)]
    return command


def write_spec(data: dict, path: Path) -> Path:
    """Write a (changed, absolutized) mixture spec for the build to read."""
    return write_text(path, "# written by flanmix studio: the mixture with the page's changes\n"
                      + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


class Builds:
    """The studio's builds: at most one running at a time, each kept for the page to poll."""

    def __init__(self) -> None:
        self.jobs: dict[str, BuildJob] = {}
        self.lock = threading.Lock()

    def start(self, label: str, out: Path, command: list[str]) -> BuildJob:
        """Start a build in a child process and a thread that follows it."""
        with self.lock:
            if any(job.state == "running" for job in self.jobs.values()):
                raise FlanmixError("a build is already running", field="build", expected="one build at a time")
            job = BuildJob(str(len(self.jobs) + 1), label, out, command)
            self.jobs[job.id] = job
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        except OSError as err:
            job.state, job.message = "failed", f"cannot start the build: {err}"
            return job
        job.process = proc
        threading.Thread(target=_follow, args=(job, proc), daemon=True, name=f"build-{job.id}").start()
        return job

    def stop_all(self) -> None:
        """Stop the builds still running (the studio is shutting down); their temporary folders are removed by the
        build itself or by the next build of the same folder."""
        for job in self.jobs.values():
            if job.state == "running" and job.process is not None and job.process.poll() is None:
                job.process.terminate()

    def get(self, job_id: str) -> BuildJob:
        """A job by id."""
        job = self.jobs.get(job_id)
        if job is None:
            raise FlanmixError(f"no build {job_id!r}", field="job")
        return job


def _follow(job: BuildJob, proc: subprocess.Popen) -> None:
    """Read the build's stderr (tqdm redraws with carriage returns), keep the progress and the last message, then
    read the stats of the result."""
    assert proc.stderr is not None
    buffer = b""
    lines: list[str] = []
    while True:
        chunk = proc.stderr.read1(4096) if hasattr(proc.stderr, "read1") else proc.stderr.read(4096)
        if not chunk:
            break
        buffer += chunk
        *parts, buffer = re.split(rb"[\r\n]", buffer)
        for raw in parts:
            _take(job, raw.decode("utf-8", "replace").strip(), lines)
    _take(job, buffer.decode("utf-8", "replace").strip(), lines)
    code = proc.wait()
    job.seconds = time.time() - job.started
    if code != 0:
        errors = [line for line in lines if line.startswith("flanmix: error:")]
        job.message = (errors[-1] if errors else (lines[-1] if lines else f"build exited with code {code}"))
        job.state = "failed"
        return
    try:
        job.stats = mixture_stats(job.out)
        job.done = job.total = max(job.total, job.stats["rows"]["planned"])
        job.message = f"built {job.stats['rows']['rows']:,} rows into {job.out}"
        job.state = "done"
    except FlanmixError as err:
        job.state, job.message = "failed", str(err)


def _take(job: BuildJob, line: str, lines: list[str]) -> None:
    if not line:
        return
    if line.startswith("build:"):
        match = _PROGRESS.search(line)
        if match:
            job.done, job.total = int(match.group(1)), int(match.group(2))
        return
    lines.append(line)
    job.message = line[:500]
