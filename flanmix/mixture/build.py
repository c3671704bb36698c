"""Building a mixture: resolve the spec, plan every row, render the plan's chunks into shard files (in worker
processes when asked), drop duplicates across shards, and write the manifest — all into a temporary folder that
replaces the output folder only when complete."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from flanmix.core.atomic import atomic_dir
from flanmix.core.errors import FlanmixError
from flanmix.dedup import SeenKeys
from flanmix.fewshot import TokenCounter
from flanmix.mixture.decontaminate import eval_grams
from flanmix.mixture.engines import LocalEngine, open_engine
from flanmix.mixture.manifest import Manifest, input_hashes, make_manifest
from flanmix.mixture.plan import epoch_size, make_plan, part_range, planned_rows
from flanmix.mixture.ray_engine import RayEngine
from flanmix.mixture.render import ShardRenderer
from flanmix.mixture.resolve import resolve
from flanmix.mixture.spec import MixtureSpec, as_spec, where
from flanmix.registry import Registry
from flanmix.writer import (
    FORMATS,
    check_out_dir,
    check_plan_fits,
    file_sha256,
    load_tokenizer,
    read_shard,
    rewrite_shard,
    shard_name,
    token_lengths,
    write_manifest,
)

DEFAULT_ROWS_PER_SHARD = 25_000
PILOT_ROWS = 2_000  # rows rendered to estimate the mean tokens per row of a `size: {tokens: N}` mixture


def build(spec: MixtureSpec | dict | str | Path, out_dir: str | Path, *, seed: int | None = None,
          num_proc: int = 1, fmt: str = "parquet", overwrite: bool = False, registry: Registry | None = None,
          registry_dirs: Iterable[str] = (), messages: bool = False, num_shards: int = 1, shard_index: int = 0,
          rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, progress: bool = True, engine: str = "local",
          address: str | None = None) -> Manifest:
    """Build a mixture into `out_dir` (shards + manifest.json) and return the manifest.

    `spec` is a mixture file, a bundled mixture name, a dict or a MixtureSpec. `num_shards`/`shard_index` build
    one deterministic part of the mixture (merge the parts with `merge`). `engine="ray"` renders the shards on a
    Ray cluster (`address`, else a local one; docs/scale-out.md) instead of `num_proc` local processes.
    """
    _check_options(fmt, num_shards, shard_index, num_proc, rows_per_shard)
    with open_engine(engine, address, num_proc) as runner:
        return _build(runner, spec, out_dir, seed=seed, fmt=fmt, overwrite=overwrite, registry=registry,
                      registry_dirs=registry_dirs, messages=messages, num_shards=num_shards, shard_index=shard_index,
                      rows_per_shard=rows_per_shard, progress=progress)


def _build(runner: LocalEngine | RayEngine, spec: MixtureSpec | dict | str | Path, out_dir: str | Path, *,
           seed: int | None, fmt: str, overwrite: bool, registry: Registry | None, registry_dirs: Iterable[str],
           messages: bool, num_shards: int, shard_index: int, rows_per_shard: int, progress: bool) -> Manifest:
    spec, doc = as_spec(spec)
    if spec.size is None:
        raise FlanmixError("required field is missing", field="size", expected="examples: N, tokens: N or epoch",
                           **where(doc, ["size"]))
    base_dir = doc.path.parent if doc else Path.cwd()
    seed = spec.seed if seed is None else seed
    runner.prepare(spec=spec, doc=doc, base_dir=base_dir, registry=registry, registry_dirs=registry_dirs,
                   rows_per_shard=rows_per_shard, part=(num_shards, shard_index))
    registry = registry if registry is not None else Registry.discover(registry_dirs)
    resolved = resolve(spec, registry, doc=doc, base_dir=base_dir)
    grams, eval_files = eval_grams(spec, registry, base_dir, doc)
    tokenizer_path = None
    if spec.size.tokenizer:
        tok = Path(spec.size.tokenizer)
        tokenizer_path = str(tok if tok.is_absolute() else base_dir / tok)
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    fewshot_tokenizer = Path(spec.tokenizer) if spec.tokenizer else None
    if fewshot_tokenizer is not None and not fewshot_tokenizer.is_absolute():
        fewshot_tokenizer = base_dir / fewshot_tokenizer
    render_settings = {"leaves": resolved.leaves, "seed": seed, "rows_per_shard": rows_per_shard, "fmt": fmt,
                       "messages": messages, "dedup": spec.dedup, "grams": grams,
                       "ngram": spec.decontaminate.ngram if spec.decontaminate else 13, "tokenizer": tokenizer,
                       "count_tokens": TokenCounter(load_tokenizer(fewshot_tokenizer)) if fewshot_tokenizer else None}
    total, replacement = _row_count(spec, render_settings)
    check_plan_fits(total, out_dir, **where(doc, ["size"]))
    plan = make_plan(resolved.leaves, total, seed, replacement)
    num_files = max(1, -(-len(plan) // rows_per_shard))
    mine = list(part_range(num_files, num_shards, shard_index))
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    with atomic_dir(out_dir, replace=overwrite) as tmp:
        renderer = ShardRenderer(plan=plan, out=tmp, **render_settings)
        collector = _Collector(renderer, sum(planned_rows(len(plan), rows_per_shard, i) for i in mine), progress)
        runner.render(resolved, renderer, mine, collector.consume)
        collector.bar.close()
        options = {"format": fmt, "messages": messages, "rows_per_shard": rows_per_shard, "num_files": num_files,
                   "part": {"count": num_shards, "index": shard_index} if num_shards > 1 else None,
                   "tokenizer": tokenizer_path, "engine": runner.name}
        manifest = make_manifest(resolved, spec, seed, plan, collector.records, collector.counters, options,
                                 input_hashes(resolved, eval_files))
        write_manifest(tmp, manifest)
    return Manifest(manifest, out_dir)


def _check_options(fmt: str, num_shards: int, shard_index: int, num_proc: int, rows_per_shard: int) -> None:
    if fmt not in FORMATS:
        raise FlanmixError(f"unknown output format {fmt!r}", field="--format", expected=" | ".join(FORMATS))
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise FlanmixError(f"shard index {shard_index} out of range for {num_shards} shards", field="--shard-index",
                           expected=f"0..{num_shards - 1}")
    if num_proc < 1 or rows_per_shard < 1:
        raise FlanmixError("--num-proc and --rows-per-shard must be >= 1", field="--num-proc")


def _row_count(spec: MixtureSpec, render_settings: dict) -> tuple[int, bool]:
    """How many rows to plan, and whether with replacement: given, one epoch, or the token budget divided by the
    mean tokens per row of a seeded pilot plan (rendered and filtered like the real one)."""
    size, leaves = spec.size, render_settings["leaves"]
    if size.examples is not None:
        return size.examples, spec.replacement
    if size.epoch:
        return epoch_size(leaves), False
    pilot_plan = make_plan(leaves, PILOT_ROWS, render_settings["seed"], spec.replacement)
    cols, _, _ = ShardRenderer(plan=pilot_plan, out=Path("."), **render_settings).render_rows(0, len(pilot_plan))
    tokenizer = render_settings["tokenizer"]
    per_row = (token_lengths(tokenizer, cols["inputs"]).sum() + token_lengths(tokenizer, cols["targets"]).sum()
               ) / max(1, len(cols["inputs"]))
    return max(1, math.ceil(size.tokens / max(per_row, 1e-9))), spec.replacement


class _Collector:
    """Takes rendered shards in index order: drops rows whose key an earlier shard already had (rewriting that shard
    file from its remaining rows, so it equals one written directly), and records each shard for the manifest."""

    def __init__(self, renderer: ShardRenderer, planned: int, progress: bool) -> None:
        self.renderer = renderer
        self.seen = SeenKeys()
        self.records: list[dict] = []
        self.counters = {"duplicates": 0, "decontaminated": 0, "fewshot_replaced": 0, "fewshot_dropped": 0}
        self.bar = tqdm(total=planned, unit="rows", file=sys.stderr, disable=not progress, desc="build")

    def consume(self, results: Iterable[dict]) -> None:
        """Record every result of `results` (rendered shards, in index order)."""
        r = self.renderer
        for res in results:
            path = r.out / shard_name(res["index"], r.fmt)
            stats = res["stats"]
            self.counters["duplicates"] += res["duplicates"]
            self.counters["decontaminated"] += res["decontaminated"]
            self.counters["fewshot_replaced"] += res["fewshot_replaced"]
            self.counters["fewshot_dropped"] += res["fewshot_dropped"]
            if r.dedup:
                new = self.seen.filter_new(np.frombuffer(res["keys"], dtype=np.uint64))
                if not new.all():
                    stats = rewrite_shard(read_shard(path, r.fmt, r.messages), new, path, r.fmt, r.messages,
                                          r.tokenizer)
                    self.counters["duplicates"] += int((~new).sum())
            self.records.append({"index": res["index"], "file": path.name, "rows": stats.rows,
                                 "sha256": file_sha256(path), "stats": stats.to_json()})
            self.bar.update(res["planned"])
