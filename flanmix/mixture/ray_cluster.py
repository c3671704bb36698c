"""Connecting to a Ray cluster for `--engine ray` (builds and ablations), or starting a local one.

Ray is optional (`pip install 'flanmix[ray]'`): it is imported here, inside functions, only when an engine asks for
it, so `import flanmix` and every `--engine local` run work without it. Every way a connection can fail is turned
into a one-line `FlanmixError` before anything is rendered or trained.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from flanmix.core.errors import FlanmixError

ENGINES = ("local", "ray")
CONNECT_TIMEOUT_S = 5.0  # a TCP probe of the head before `ray.init`, which retries an unreachable address for minutes
DEFAULT_PORTS = {"ray": 10001, "": 6379}  # Ray Client (ray://) and the head's GCS
# The driver's environment variables that change what a worker reads or renders, passed on to every Ray worker: a
# worker on another node starts with that node's environment, not the driver's. Folder lists are made absolute.
# Those in IMPORT_TIME_ENVS are read when flanmix is imported (the template sandbox), so they must be in the worker's
# environment from its start (Ray's runtime environment); the others are read when used.
FORWARDED_PATH_ENVS = ("FLANMIX_HUB_MIRROR", "FLANMIX_ALLOW_PATHS")
IMPORT_TIME_ENVS = ("FLANMIX_TEMPLATE_MAX_CHARS", "FLANMIX_TEMPLATE_MAX_SECONDS")
FORWARDED_ENVS = (*FORWARDED_PATH_ENVS, *IMPORT_TIME_ENVS, "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def check_engine(engine: str, address: str | None) -> None:
    """Refuse an unknown engine, and `--address` without `--engine ray`."""
    if engine not in ENGINES:
        raise FlanmixError(f"unknown engine {engine!r}", field="--engine", expected=" | ".join(ENGINES))
    if address and engine != "ray":
        raise FlanmixError("--address is only used with --engine ray", field="--address",
                           expected="--engine ray --address HOST:PORT")


def import_ray() -> ModuleType:
    """The `ray` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FlanmixError("--engine ray needs Ray, which is not installed", field="--engine",
                           expected="pip install 'flanmix[ray]', or --engine local") from None
    return ray


def check_reachable(address: str) -> None:
    """Fail fast when nothing listens at `address` (HOST:PORT or ray://HOST:PORT; `auto` is checked by Ray)."""
    if address in ("auto", "local"):
        return
    scheme, _, hostport = address.rpartition("://")
    hostport = hostport.rstrip("/")
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", DEFAULT_PORTS.get(scheme, 6379))
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise FlanmixError(f"cannot reach a Ray cluster at {address} ({reason})", field="--address",
                           expected="the head's HOST:6379 printed by `ray start --head`, ray://HOST:10001 or auto"
                           ) from None


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[ModuleType]:
    """Ray, connected: to an already open session of this process as it is; else to `address` (or `RAY_ADDRESS`);
    else to a new local cluster with this machine's CPUs. A session opened here is shut down at the end."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_reachable(address)
    options = {"address": address} if address else {"include_dashboard": False}
    try:
        ray.init(logging_level=logging.WARNING, **options)
    except (ConnectionError, TimeoutError) as err:
        # Ray turns token authentication on for the clusters it starts, but a driver given an explicit address
        # sends its token only when told to: the usual reason a reachable head refuses us.
        auth = ("" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else
                "; a cluster with token authentication (Ray's default) also needs RAY_AUTH_MODE=token and its token "
                "(RAY_AUTH_TOKEN, or ~/.ray/auth_token as on the head)")
        raise FlanmixError(f"cannot connect to a Ray cluster at {address}: {str(err).splitlines()[0]}",
                           field="--address", expected="a running cluster (`ray start --head`), or no --address "
                           f"for a local one{auth}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def forwarded_env() -> dict[str, str]:
    """The driver's `FORWARDED_ENVS` that are set, folder lists made absolute."""
    env = {}
    for name in FORWARDED_ENVS:
        value = os.environ.get(name)
        if value is not None and name in FORWARDED_PATH_ENVS:
            value = os.pathsep.join(str(Path(p).resolve()) for p in value.split(os.pathsep) if p)
        if value is not None:
            env[name] = value
    return env


def worker_env_options(env: dict[str, str], only: tuple[str, ...] = FORWARDED_ENVS) -> dict:
    """Ray `.options(...)` that start a worker with the variables of `env` named in `only`, through the runtime
    environment's `env_vars` (Ray installs nothing for them); `{}` when there are none. A worker with a runtime
    environment of its own cannot be one of the idle workers Ray keeps started, so this costs a process start
    (0.7-2.7 s per demo build here, docs/scale-out.md): builds pass the variables read at use in their workers'
    arguments instead, and use this only for `IMPORT_TIME_ENVS`."""
    chosen = {name: value for name, value in env.items() if name in only}
    return {"runtime_env": {"env_vars": chosen}} if chosen else {}


def cluster_resources(ray: ModuleType) -> dict[str, float]:
    """The cluster's total CPUs and GPUs (`{"CPU": n, "GPU": m}`, 0 where absent)."""
    total = ray.cluster_resources()
    return {"CPU": float(total.get("CPU", 0)), "GPU": float(total.get("GPU", 0))}
