"""Where a build's shards render: `local` (this process, or forked worker processes) or `ray` (a Ray cluster).

Both render the same plan chunks with the same `ShardRenderer` and hand the results to the build in shard order,
so the output is byte-identical whichever engine renders it; the manifest records which one did (`build.engine`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flanmix.mixture.ray_cluster import check_engine, ray_session
from flanmix.mixture.ray_engine import RayEngine
from flanmix.mixture.render import ShardRenderer, render_shards
from flanmix.mixture.resolve import Resolved


class LocalEngine:
    """Renders in this process, or in `num_proc` forked workers."""

    name = "local"

    def __init__(self, num_proc: int) -> None:
        self.num_proc = num_proc

    def prepare(self, **_: Any) -> None:
        """Nothing to start ahead of rendering."""

    def render(self, resolved: Resolved, renderer: ShardRenderer, indices: list[int],
               consume: Callable[[Iterable[dict]], None]) -> None:
        """Render shards `indices` and pass their results to `consume` in index order."""
        render_shards(renderer, indices, self.num_proc, consume)


@contextlib.contextmanager
def open_engine(engine: str, address: str | None, num_proc: int) -> Iterator[LocalEngine | RayEngine]:
    """The engine called `engine`, connected (Ray: to `address`, else a local cluster); stopped at the end."""
    check_engine(engine, address)
    if engine == "local":
        yield LocalEngine(num_proc)
        return
    with ray_session(address) as ray:
        runner = RayEngine(ray)
        try:
            yield runner
        finally:
            runner.close()
