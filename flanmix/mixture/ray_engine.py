"""`flanmix build --engine ray`: the plan's chunks render on a Ray cluster, and the build stays byte-identical.

The driver resolves the mixture and makes the plan once, as for a local build. Rendering runs in `ShardWorker`
actors (one per cluster CPU, spread over the nodes): each loads the mixture's tasks once — resolving the same spec
from the same registry and data files, as every machine of a `--num-shards` build does — and checks that what it
loaded matches the driver's (a fingerprint of leaves and input hashes); it also hashes the decontamination n-grams
itself (`flanmix.mixture.decontaminate`: string hashes differ between processes). Each shard is one actor task: the
worker renders plan chunk `index` with the same `ShardRenderer` a local build uses, into a node-local temporary
file, and returns the file's bytes with its dedup keys and statistics through Ray's object store. The driver writes
the bytes into its temporary output folder, in shard order, drops duplicates across shards and writes the manifest
exactly as a local build does, then renames the folder into place. So the outputs need no shared storage; the
inputs must be at the same paths on every node. The driver's hub mirror, allowed paths and offline switches travel
in the workers' recipe (`flanmix.mixture.ray_cluster.forwarded_env`), so a node's own environment does not decide.

The driver renders shards too, on a CPU of the cluster left to it (it has loaded the mixture to plan it; see
`RayEngine._in_order`): starting a worker costs seconds, which a one-shard build could never hide.

A worker process that dies (killed, OOM, node lost) is restarted by Ray, which re-runs the shard it was rendering
(`RETRIES` times); a shard's bytes depend only on the plan, so a retried shard is the same shard. Errors in the data
(a bad template, a broken source) are not retried: they stop the build with the task and row, as locally.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa

from flanmix.core.errors import FlanmixError
from flanmix.core.yamlio import YamlDoc
from flanmix.mixture.decontaminate import eval_grams
from flanmix.mixture.manifest import input_hashes
from flanmix.mixture.plan import part_range
from flanmix.mixture.ray_cluster import (
    IMPORT_TIME_ENVS,
    cluster_resources,
    forwarded_env,
    worker_env_options,
)
from flanmix.mixture.render import ShardRenderer
from flanmix.mixture.resolve import Resolved, resolve
from flanmix.mixture.spec import MixtureSpec, load_spec
from flanmix.registry import ENV_VAR, Registry
from flanmix.writer import shard_name

RETRIES = 3  # restarts of a dead worker, and re-runs of the shard it was rendering
DRIVER_RENDERS_ENV = "FLANMIX_RAY_DRIVER_RENDERS"  # "0": the driver never renders shards itself


@dataclass(frozen=True)
class WorkerRecipe:
    """What a worker needs to load the mixture's tasks itself: the spec (or the file it came from, read again so
    its hash is checked too), where its relative paths start, the registry folders (absolute; the bundled
    registry is the worker's own), and the driver's environment variables that loading reads."""

    spec: MixtureSpec
    spec_file: Path | None
    base_dir: Path
    registry_roots: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()  # the driver's variables a worker reads when loading (`forwarded_env`)

    def load(self) -> tuple[Resolved, set[int] | None]:
        """The mixture resolved on this node, as the driver resolved it, and its decontamination n-grams (hashed
        by this process: see `flanmix.mixture.decontaminate`)."""
        spec, doc = load_spec(self.spec_file) if self.spec_file else (self.spec, None)
        registry = Registry.discover(self.registry_roots, env=False, python=False)
        resolved = resolve(spec, registry, doc=doc, base_dir=self.base_dir)
        return resolved, eval_grams(spec, registry, self.base_dir, doc)[0]


def fingerprint(resolved: Resolved, grams: set[int] | None) -> str:
    """What a worker must agree on with the driver: every leaf (component, task, rate, rows per split), the
    content hashes of the spec, template and data files, and the number of decontamination n-grams."""
    leaves = [(leaf.component, leaf.task.name, leaf.rate, len(leaf.task.examples("train")),
               len(leaf.task.examples("validation"))) for leaf in resolved.leaves]
    hashes = {kind: sorted(h.values()) for kind, h in input_hashes(resolved, []).items()}
    grams_count = None if grams is None else len(grams)
    return hashlib.sha256(json.dumps([leaves, hashes, grams_count], sort_keys=True).encode()).hexdigest()


class ShardWorker:
    """A Ray actor that loads the mixture once and renders shards. Failures to load are kept and raised by the
    first `render` call, so they reach the driver as one-line errors (a constructor that raises would not)."""

    def __init__(self, recipe: WorkerRecipe) -> None:
        self.error: FlanmixError | None = None
        self.leaves: list = []
        self.grams: set[int] | None = None
        self.fingerprint = ""
        self.job_key: str | None = None
        self.job: dict[str, Any] = {}
        os.environ.update(recipe.env)  # this process is the actor's own, and ends with it
        try:
            resolved, self.grams = recipe.load()
            self.fingerprint = fingerprint(resolved, self.grams)  # loads every leaf's rows
            self.leaves = resolved.leaves
        except FlanmixError as err:
            self.error = FlanmixError(f"Ray worker on {socket.gethostname()}: {err}")
        except Exception as err:  # noqa: BLE001 - any failure to load is reported by the first shard
            self.error = FlanmixError(f"Ray worker on {socket.gethostname()} could not load the mixture: "
                                      f"{type(err).__name__}: {err}")
        pa.array(["warm-up"], type=pa.string())  # pyarrow's first string conversion probes for pandas
        # The loaded tasks live as long as this process: keep the collector from rescanning them (as a local build
        # does while rendering). This process is the actor's own and ends with it.
        gc.collect()
        gc.freeze()

    def ready(self) -> bool:
        """Answers once the constructor has run (the mixture is loaded, or its error kept)."""
        return True

    def render(self, index: int, job: list) -> dict:
        """Render shard `index` of the job in `job[0]` (an ObjectRef, passed in a list so that Ray hands it over
        unresolved and this worker fetches each job once); returns the shard's record plus its file's bytes."""
        if self.error is not None:
            raise self.error
        settings = self._job(job[0])
        with tempfile.TemporaryDirectory(prefix="flanmix-shard-") as tmp:
            renderer = ShardRenderer(leaves=self.leaves, grams=self.grams, out=Path(tmp), **settings)
            result = renderer.render_shard(index)
            result["data"] = (Path(tmp) / shard_name(index, renderer.fmt)).read_bytes()
        return result

    def _job(self, ref: Any) -> dict[str, Any]:
        if ref.hex() != self.job_key:
            import ray

            job = ray.get(ref)
            if job["fingerprint"] != self.fingerprint:
                raise FlanmixError(f"Ray worker on {socket.gethostname()} loaded different tasks or files than "
                                   "the driver", field="--engine ray",
                                   expected="the same registry, mixture and data files at the same paths on every "
                                            "node")
            self.job_key, self.job = ref.hex(), job["settings"]
        return self.job


class RayEngine:
    """Renders a build's shards on ShardWorker actors of the connected cluster."""

    name = "ray"

    def __init__(self, ray: ModuleType, driver_renders: bool | None = None) -> None:
        self.ray = ray
        self.actors: list = []
        self.starting: dict[Any, Any] = {}  # `ready()` reference -> actor, for actors still loading the mixture
        if driver_renders is None:
            driver_renders = os.environ.get(DRIVER_RENDERS_ENV, "1") != "0"
        self.driver_renders = driver_renders

    def prepare(self, *, spec: MixtureSpec, doc: YamlDoc | None, base_dir: Path, registry: Registry | None,
                registry_dirs: Iterable[str], rows_per_shard: int, part: tuple[int, int]) -> None:
        """Start the workers, which load the mixture while the driver resolves and plans it."""
        if registry is not None and registry.folders is None:
            raise FlanmixError("--engine ray loads the tasks again on every worker, from folders", field="registry",
                               expected="registry_dirs=[...] or a Registry from Registry.discover, not one built "
                                        "by hand")
        cpus = int(cluster_resources(self.ray)["CPU"])
        if cpus < 1:
            raise FlanmixError("the Ray cluster has no CPUs", field="--address", expected="a cluster with CPU nodes")
        # The driver renders shards too (it has loaded the mixture to plan it, so it needs no start-up): one CPU
        # of the cluster is left to it, unless told not to or the cluster has only one.
        self.driver_renders = self.driver_renders and cpus > 1
        count = cpus - 1 if self.driver_renders else cpus
        if spec.size is not None and spec.size.examples is not None:  # the number of shards is known already
            num_files = max(1, -(-spec.size.examples // rows_per_shard))
            count = min(count, max(1, len(part_range(num_files, *part))))
        if registry is not None:  # the driver's own registry: its workers discover the same folders
            roots = [str(Path(p).resolve()) for p in registry.folders or ()]
        else:
            roots = _env_registry_dirs() + [str(Path(p).resolve()) for p in registry_dirs]
        env = forwarded_env()
        recipe = WorkerRecipe(spec, doc.path.resolve() if doc else None, Path(base_dir).resolve(), tuple(roots),
                              tuple(sorted(env.items())))
        worker = self.ray.remote(ShardWorker).options(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES,
                                                      scheduling_strategy="SPREAD",
                                                      **worker_env_options(env, IMPORT_TIME_ENVS))
        self.actors = [worker.remote(recipe) for _ in range(count)]
        self.starting = {actor.ready.remote(): actor for actor in self.actors}

    def render(self, resolved: Resolved, renderer: ShardRenderer, indices: list[int],
               consume: Callable[[Iterable[dict]], None]) -> None:
        """Render shards `indices` on the workers and pass their results to `consume` in index order, each shard
        file written into `renderer.out` first."""
        python_tasks = sorted({leaf.task.name for leaf in resolved.leaves if leaf.task.spec_file is None})
        if python_tasks:
            raise FlanmixError(f"task(s) {', '.join(python_tasks)} are registered from Python, which Ray workers "
                               "cannot see", field="--engine ray",
                               expected="tasks in a registry folder (--registry DIR), or --engine local")
        shipped = {f.name: getattr(renderer, f.name) for f in fields(renderer)
                   if f.name not in ("leaves", "grams", "out")}
        job = [self.ray.put({"settings": shipped, "fingerprint": fingerprint(resolved, renderer.grams)})]
        if self.driver_renders:
            pa.array(["warm-up"], type=pa.string())  # pyarrow's first string conversion probes for pandas
        consume(self._in_order(renderer, indices, job))

    def _in_order(self, renderer: ShardRenderer, indices: list[int], job: list) -> Iterator[dict]:
        """Results in index order. Shards go to workers that have loaded the mixture, at most two per worker ahead
        of the one awaited (so the object store and the driver hold a bounded number of shard files); free workers
        get their next shard before the driver hands a result on (writing it, dropping duplicates across shards).

        The driver renders shards itself whenever it would otherwise wait, with the same renderer: it has loaded
        the mixture already, so it starts at once where a worker's new process takes seconds to load it - a small
        build is done before a worker would be ready. `FLANMIX_RAY_DRIVER_RENDERS=0` keeps every shard on the
        workers (a driver on a small login node)."""
        todo = list(reversed(indices))
        starting = dict(self.starting)
        free: list = []
        running: dict[Any, tuple[int, Any]] = {}
        ready: dict[int, dict] = {}
        window = 2 * len(self.actors)

        def submit() -> None:
            while free and todo and len(running) + len(ready) < window:
                shard, actor = todo.pop(), free.pop()
                running[actor.render.remote(shard, job)] = (shard, actor)

        def settle(done: list) -> None:
            for ref in done:
                if ref in starting:
                    free.append(starting.pop(ref))
                else:
                    shard, actor = running.pop(ref)
                    free.append(actor)
                    ready[shard] = self._fetch(ref, shard)
            submit()

        for index in indices:
            submit()
            while index not in ready:
                pending = list(running) + list(starting)
                if self.driver_renders and todo and len(ready) < window:
                    settle(self.ray.wait(pending, num_returns=len(pending), timeout=0)[0] if pending else [])
                    if todo and index not in ready:
                        shard = todo.pop()
                        ready[shard] = renderer.render_shard(shard)  # writes its file into renderer.out itself
                else:
                    settle(self.ray.wait(pending, num_returns=1)[0])
            result = ready.pop(index)
            submit()
            data = result.pop("data", None)
            if data is not None:  # rendered on a worker: its bytes came back through the object store
                (renderer.out / shard_name(index, renderer.fmt)).write_bytes(data)
            yield result

    def _fetch(self, ref: Any, index: int) -> dict:
        """A shard's result; a failure as a one-line FlanmixError."""
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, FlanmixError):
                raise FlanmixError(str(cause)) from None
            raise FlanmixError(f"shard {index} failed on a Ray worker: {type(cause).__name__}: {cause}") from None
        except exceptions.RayError as err:  # the worker died more often than Ray restarts it
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise FlanmixError(f"shard {index}: its Ray worker died {RETRIES + 1} times ({first})",
                               field="--engine ray", expected="enough memory per worker; see `ray logs` on the node"
                               ) from None

    def close(self) -> None:
        """Stop the workers."""
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


def _env_registry_dirs() -> list[str]:
    """The driver's `FLANMIX_REGISTRY` folders, absolute (a worker's environment may differ)."""
    return [str(Path(p).resolve()) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
