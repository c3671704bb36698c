"""`flanmix build --engine ray`: byte-identical to a local build, a killed worker is retried, bad input is one line.

The tests share one local 2-CPU Ray cluster per session (`ray_cluster` in conftest.py) and skip without Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flanmix.core.errors import FlanmixError
from flanmix.mixture import build
from flanmix.mixture.ray_cluster import FORWARDED_ENVS, IMPORT_TIME_ENVS, forwarded_env, worker_env_options
from helpers import write_task

pytest.importorskip("ray")

SPEC = {
    "seed": 5, "size": {"examples": 2400}, "rate": {"by": "examples", "cap": 400}, "cot": 0.4, "inversion": 0.3,
    "randomize_options": True, "replacement": True,  # with replacement: duplicates across shards for dedup to drop
    "components": [{"cluster": "alpha", "weight": 0.5},
                   {"mixture": {"components": [{"tasks": ["t1", "t3"]}, {"task": "t5"}],
                                "template_types": {"zs_noopt": 1, "fs_noopt": 1}}, "weight": 0.5}],
}


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory) -> Path:
    """Six tasks t0..t5 in clusters alpha/beta from a bundled generator (a generator registered in this process
    would not exist on the Ray workers)."""
    root = tmp_path_factory.mktemp("ray-reg")
    for i in range(6):
        write_task(root, f"t{i}", ["alpha", "beta"][i % 2], 100 * (i + 1), options=i != 0, cot=i != 1,
                   generator="arithmetic.add")
    return root


def _build(registry_dir: Path, out: Path, spec=SPEC, **kw):
    kw.setdefault("rows_per_shard", 300)
    return build(spec, out, registry_dirs=[registry_dir], progress=False, **kw)


def _same_build(a: Path, b: Path) -> None:
    """Equal shard files, and manifests equal except `build.engine` (which engine rendered them)."""
    files_a, files_b = sorted(p.name for p in a.iterdir()), sorted(p.name for p in b.iterdir())
    assert files_a == files_b
    for name in files_a:
        if name != "manifest.json":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert {ma["build"].pop("engine"), mb["build"].pop("engine")} == {"local", "ray"}
    assert ma == mb


@pytest.mark.parametrize("driver_renders", ["1", "0"])  # the driver renders while workers start / never
def test_ray_build_is_byte_identical_to_local(ray_cluster, registry_dir, tmp_path, monkeypatch, driver_renders):
    monkeypatch.setenv("FLANMIX_RAY_DRIVER_RENDERS", driver_renders)
    # decontamination n-grams (here: t4's validation rows' words) travel to the workers with the plan
    spec = dict(SPEC, decontaminate={"tasks": ["t4"], "ngram": 3})
    local = _build(registry_dir, tmp_path / "local", spec=spec, messages=True)
    ray = _build(registry_dir, tmp_path / "ray", spec=spec, messages=True, engine="ray")
    assert len(ray["shards"]) == 8 and ray["size"]["dedup_dropped"] > 0 and ray["size"]["decontaminated"] > 0
    assert ray["build"]["engine"] == "ray" and local["build"]["engine"] == "local"
    _same_build(tmp_path / "local", tmp_path / "ray")
    # a part of a --num-shards build, as JSON lines
    for engine in ("local", "ray"):
        _build(registry_dir, tmp_path / f"part-{engine}", fmt="jsonl", num_shards=3, shard_index=1, engine=engine)
    _same_build(tmp_path / "part-local", tmp_path / "part-ray")
    # the driver's own discovered registry (as the CLI passes it): the workers discover its folders again
    from flanmix.registry import Registry

    build(SPEC, tmp_path / "reg-ray", registry=Registry.discover([registry_dir]), rows_per_shard=300, engine="ray",
          progress=False)
    _build(registry_dir, tmp_path / "reg-local")
    _same_build(tmp_path / "reg-local", tmp_path / "reg-ray")
    # one shard on a 2-CPU cluster: one worker starts, and the driver renders while it loads
    for engine in ("local", "ray"):
        _build(registry_dir, tmp_path / f"one-{engine}", rows_per_shard=5000, engine=engine)
    _same_build(tmp_path / "one-local", tmp_path / "one-ray")
    assert not list(tmp_path.glob("*.tmp-*"))


def _kill_first_renderer(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first Ray worker process seen rendering a shard (Ray titles it `ray::ShardWorker.render`)."""
    while not stop.is_set() and not killed:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::ShardWorker.render"):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.005)


def test_the_driver_passes_its_hub_mirror_and_template_limits_to_workers(ray_cluster, monkeypatch, tmp_path):
    """A worker on another node does not have the driver's environment: `bool_q` reads its rows from the hub mirror
    named only in the driver's FLANMIX_HUB_MIRROR (set after the cluster started, and relative to the driver's
    folder), so the workers see it only if it is forwarded; and a template limit the driver sets (read when a worker
    imports flanmix) fails the build on Ray as it does locally."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("FLANMIX_HUB_MIRROR", "fixtures/hub")
    monkeypatch.setenv("FLANMIX_ALLOW_PATHS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = forwarded_env()
    assert env["FLANMIX_HUB_MIRROR"] == str(Path("fixtures/hub").resolve()) and env["HF_HUB_OFFLINE"] == "1"
    assert env["FLANMIX_ALLOW_PATHS"] == str(tmp_path.resolve())
    assert worker_env_options(env, IMPORT_TIME_ENVS) == {}  # read at use: they travel with the worker's recipe
    spec = {"seed": 1, "size": {"examples": 30}, "replacement": True, "components": [{"task": "bool_q"}]}
    for engine in ("local", "ray"):
        build(spec, tmp_path / engine, engine=engine, progress=False)
    _same_build(tmp_path / "local", tmp_path / "ray")
    monkeypatch.setenv("FLANMIX_TEMPLATE_MAX_CHARS", "5")
    assert worker_env_options(forwarded_env(), IMPORT_TIME_ENVS) == {
        "runtime_env": {"env_vars": {"FLANMIX_TEMPLATE_MAX_CHARS": "5"}}}
    errors = []
    for engine in ("local", "ray"):
        code = (f"from flanmix.mixture import build\n"
                f"build({spec!r}, {str(tmp_path / ('limit-' + engine))!r}, engine={engine!r}, progress=False)\n")
        if engine == "ray":  # the template limits are read on import: a fresh process of the test's cluster
            code = f"import ray\nray.init(address={ray_cluster.get_runtime_context().gcs_address!r})\n" + code
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode != 0
        errors.append([line for line in proc.stderr.splitlines() if line.startswith("flanmix.core.errors.")][-1])
    assert "of 5 (expected smaller values (or raise FLANMIX_TEMPLATE_MAX_CHARS))" in errors[0]
    assert errors[1] == errors[0], errors
    for name in FORWARDED_ENVS:
        monkeypatch.delenv(name, raising=False)
    assert forwarded_env() == {}


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the worker process through /proc")
def test_a_killed_worker_is_retried_and_the_build_is_unchanged(ray_cluster, registry_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FLANMIX_RAY_DRIVER_RENDERS", "0")  # every shard on a worker, so there is one to kill
    spec = dict(SPEC, size={"examples": 6000})
    _build(registry_dir, tmp_path / "local", spec=spec, rows_per_shard=750)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_renderer, args=(stop, killed))
    killer.start()
    try:
        _build(registry_dir, tmp_path / "ray", spec=spec, rows_per_shard=750, engine="ray")
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was seen rendering"
    _same_build(tmp_path / "local", tmp_path / "ray")


def test_errors_on_workers_are_one_line_and_leave_nothing(ray_cluster, registry_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FLANMIX_RAY_DRIVER_RENDERS", "0")  # the error must come from a worker, not the driver
    bad = tmp_path / "bad-reg"
    bad.mkdir()
    write_task(bad, "broken", "gamma", 50, generator="arithmetic.add")
    text = (bad / "broken.yaml").read_text().replace("compute {{ question }}", "compute {{ question.nope }}")
    (bad / "broken.yaml").write_text(text)
    spec = {"seed": 1, "size": {"examples": 200}, "components": [{"task": "broken"}]}
    with pytest.raises(FlanmixError, match=r"task 'broken', row .*undefined"):
        build(spec, tmp_path / "out", registry_dirs=[bad], progress=False, engine="ray")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))
    # a registry object cannot be re-created on the workers; Python-registered tasks are not seen there
    from flanmix.registry import Registry, register_task, unregister_task

    with pytest.raises(FlanmixError, match="registry_dirs"):  # a registry built by hand cannot be found again
        build(SPEC, tmp_path / "o2", registry=Registry(Registry.discover([registry_dir]).select("t0")),
              engine="ray", progress=False)
    register_task({"name": "pytask", "cluster": "py", "source": {"builtin": "arithmetic.add", "examples": 20},
                   "fields": {"question": "{{ a }} + {{ b }}", "answer": "{{ a + b }}"},
                   "templates": {"zero_shot": [{"input": "{{ question }}", "target": "{{ answer }}"}]}})
    try:
        with pytest.raises(FlanmixError, match="pytask.*registered from Python"):
            build({"seed": 1, "size": {"examples": 20}, "components": [{"task": "pytask"}]}, tmp_path / "o3",
                  engine="ray", progress=False)
    finally:
        unregister_task("pytask")
    with pytest.raises(FlanmixError, match="--address is only used with --engine ray"):
        build(SPEC, tmp_path / "o4", address="127.0.0.1:1", progress=False)
    assert not any(tmp_path.glob("o*"))


def test_ray_missing_is_one_line(monkeypatch, tmp_path, capsys):
    from flanmix.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    code = main(["build", "demo", "--out", str(tmp_path / "out"), "--engine", "ray"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "needs Ray, which is not installed" in err and "pip install 'flanmix[ray]'" in err
    assert not (tmp_path / "out").exists()


def test_unreachable_address_fails_fast_from_the_cli(tmp_path):
    """In a fresh process (the test session's cluster would be reused): nothing listens at the address."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flanmix", "build", "demo", "--out", str(tmp_path / "out"),
                           "--engine", "ray", "--address", "127.0.0.1:9"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot reach a Ray cluster at 127.0.0.1:9" in proc.stderr
    assert "ray start --head" in proc.stderr and "Traceback" not in proc.stderr
    assert time.perf_counter() - start < 30 and not (tmp_path / "out").exists()


def test_a_refused_connection_names_token_authentication(monkeypatch):
    """What `ray.init` raises when a reachable head refuses the driver (Ray starts clusters with token authentication
    on, and sends the token to an explicit address only with RAY_AUTH_MODE=token): the fix is in the message."""
    import ray

    from flanmix.mixture import ray_cluster

    def refused(**_):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379\n(more)")

    monkeypatch.setattr(ray_cluster, "check_reachable", lambda address: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refused)
    for mode, hint in ((None, True), ("token", False)):
        if mode:
            monkeypatch.setenv("RAY_AUTH_MODE", mode)
        else:
            monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        with pytest.raises(FlanmixError) as err:
            with ray_cluster.ray_session("10.0.0.5:6379"):
                pass
        message = str(err.value)
        assert "\n" not in message and "cannot connect to a Ray cluster at 10.0.0.5:6379" in message
        assert ("RAY_AUTH_MODE=token" in message) is hint


def test_local_builds_never_import_ray(registry_dir, tmp_path):
    code = (f"import sys, flanmix, flanmix.cli, flanmix.mixture\n"
            f"from flanmix.mixture import build\n"
            f"build({SPEC!r}, {str(tmp_path / 'out')!r}, registry_dirs=[{str(registry_dir)!r}], num_proc=2,"
            f" rows_per_shard=600, progress=False)\n"
            f"assert 'ray' not in sys.modules, 'ray imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


class _FakeRay:
    """Just enough of `ray` for `RayEngine._in_order`: a worker that becomes ready after `ready_after` polls, and
    shard tasks that finish at once."""

    class exceptions:  # noqa: N801 - mirrors `ray.exceptions`
        RayTaskError = RayError = RuntimeError

    def __init__(self, ready_after: int | None) -> None:
        self.polls, self.ready_after = 0, ready_after

    def wait(self, refs, num_returns=1, timeout=None):
        started = self.ready_after is not None and self.polls >= self.ready_after
        done = [r for r in refs if r != "ready" or started]
        if timeout == 0:
            self.polls += 1
            return done, [r for r in refs if r not in done]
        assert done, "the driver blocked on a worker that never starts"
        return done[:num_returns], [r for r in refs if r not in done[:num_returns]]

    def get(self, ref):
        return {"index": ref[1], "data": f"worker {ref[1]}".encode()}


class _FakeActor:
    class render:  # noqa: N801 - `actor.render.remote(...)`
        @staticmethod
        def remote(shard, job):
            return ("shard", shard)


class _FakeRenderer:
    fmt = "jsonl"

    def __init__(self, out: Path) -> None:
        self.out, self.rendered = out, []

    def render_shard(self, index: int) -> dict:
        self.rendered.append(index)
        from flanmix.writer import shard_name

        (self.out / shard_name(index, self.fmt)).write_text(f"driver {index}")
        return {"index": index}


@pytest.mark.parametrize("ready_after", [None, 1])
def test_the_driver_renders_while_no_worker_is_ready(tmp_path, ready_after):
    """The driver renders a shard whenever it would otherwise wait (first while the worker loads the mixture);
    results come in shard order, each file written once, by whoever rendered it."""
    from flanmix.mixture.ray_engine import RayEngine
    from flanmix.writer import shard_name

    engine = RayEngine(_FakeRay(ready_after), driver_renders=True)
    engine.actors = [_FakeActor()]
    engine.starting = {"ready": engine.actors[0]}
    renderer = _FakeRenderer(tmp_path)
    results = list(engine._in_order(renderer, [0, 1, 2], [None]))
    assert [r["index"] for r in results] == [0, 1, 2]
    texts = [(tmp_path / shard_name(i, "jsonl")).read_text() for i in range(3)]
    if ready_after is None:  # no worker ever ready: the driver renders everything and never blocks
        assert renderer.rendered == [0, 1, 2] and texts == ["driver 0", "driver 1", "driver 2"]
    else:  # ready after the driver's first shard: the worker takes the next, the driver the one after
        assert renderer.rendered == [0, 2] and texts == ["driver 0", "worker 1", "driver 2"]
