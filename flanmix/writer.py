"""Writing mixture shards and manifests: one shard file per plan chunk, per-shard statistics, content hashes, and
the checks on the output folder (which is built beside DIR and renamed into place, see `core.atomic.atomic_dir`).

A shard's bytes depend only on its rows, so a shard written by a worker, rewritten after cross-shard dedup or
rewritten by `flanmix merge` is byte-identical whenever the rows are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from flanmix.core.atomic import write_jsonl
from flanmix.core.capacity import check_fits
from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import read_json, read_jsonl
from flanmix.core.yamlio import validate_mapping

COLUMNS = ("inputs", "targets", "task_name", "task_source", "template_type", "template_idx", "example_id", "cot")
MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SCHEMA = pa.schema([("inputs", pa.string()), ("targets", pa.string()), ("task_name", pa.string()),
                    ("task_source", pa.string()), ("template_type", pa.string()), ("template_idx", pa.int32()),
                    ("example_id", pa.string()), ("cot", pa.bool_())])
FORMATS = ("parquet", "jsonl")
# Length histograms use fixed bins so per-shard statistics add up exactly across shards and parts.
LENGTH_BIN = 16
LENGTH_BINS = 1024  # last bin collects everything >= 16 * 1023 characters/tokens


def shard_name(index: int, fmt: str) -> str:
    """File name of shard `index` (global plan chunk index, so parts merge without renaming)."""
    return f"train-{index:05d}.{fmt}"


def make_table(columns: dict[str, list], messages: bool) -> pa.Table:
    """An Arrow table with the mixture columns (and the chat `messages` column when asked)."""
    arrays = [pa.array(columns[name], type=SCHEMA.field(name).type) for name in COLUMNS]
    table = pa.Table.from_arrays(arrays, schema=SCHEMA)
    if messages:
        msgs = [[{"role": "user", "content": i}, {"role": "assistant", "content": t}]
                for i, t in zip(columns["inputs"], columns["targets"])]
        table = table.append_column(pa.field("messages", MESSAGE_TYPE), pa.array(msgs, type=MESSAGE_TYPE))
    return table


def write_shard(table: pa.Table, path: Path, fmt: str) -> None:
    """Write one shard (one Parquet row group, or JSON lines) deterministically."""
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=max(1, table.num_rows), compression="zstd",
                       write_statistics=True)
    elif fmt == "jsonl":
        write_jsonl(path, table.to_pylist())
    else:
        raise FlanmixError(f"unknown output format {fmt!r}", field="--format", expected=" | ".join(FORMATS))


def read_shard(path: Path, fmt: str, messages: bool) -> pa.Table:
    """Read a shard written by `write_shard` back into a table with the same schema."""
    if fmt == "parquet":
        return pq.read_table(path)
    rows = read_jsonl(path)
    columns = {name: [row[name] for row in rows] for name in COLUMNS}
    return make_table(columns, messages)


def rewrite_shard(table: pa.Table, keep: np.ndarray, path: Path, fmt: str, messages: bool,
                  tokenizer=None) -> ShardStats:
    """Rewrite shard `path` with the rows of `table` where `keep` is true, and return its statistics.

    The table is rebuilt from the kept rows, so the file equals one written directly with them.
    """
    table = table.filter(keep)
    table = make_table({c: table[c].to_pylist() for c in table.column_names if c != "messages"}, messages)
    write_shard(table, path, fmt)
    return ShardStats.of_table(table, tokenizer)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- statistics

def _histogram(lengths: np.ndarray) -> np.ndarray:
    bins = np.minimum(lengths // LENGTH_BIN, LENGTH_BINS - 1)
    return np.bincount(bins, minlength=LENGTH_BINS).astype(np.int64)


def _lengths_of(column: pa.ChunkedArray) -> np.ndarray:
    return pc.utf8_length(column).to_numpy(zero_copy_only=False).astype(np.int64)


def load_tokenizer(path: str | Path):
    """A fast tokenizer from a folder (transformers layout) or a tokenizer.json; imported lazily."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FlanmixError("tokenizer not found", file=path, field="tokenizer",
                           expected="a folder with tokenizer.json or a tokenizer.json file")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise FlanmixError("counting tokens needs the `tokenizers` package", field="tokenizer",
                           expected="pip install tokenizers") from None
    return Tokenizer.from_file(str(file))


def token_lengths(tokenizer, texts: list[str]) -> np.ndarray:
    """Token counts (no special tokens) of many texts."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    return np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))


@dataclass
class ShardStats:
    """Additive statistics of one shard: row counts per (task, template type, cot) and length histograms."""

    rows: int = 0
    counts: dict[tuple[str, str, bool], int] = field(default_factory=dict)
    lengths: dict[str, list] = field(default_factory=dict)  # name -> [sum, min, max, histogram]

    @classmethod
    def of_table(cls, table: pa.Table, tokenizer=None) -> ShardStats:
        stats = cls(rows=table.num_rows)
        if table.num_rows == 0:
            return stats
        grouped = table.group_by(["task_name", "template_type", "cot"]).aggregate([([], "count_all")])
        for task, ttype, cot, count in zip(*(grouped.column(i).to_pylist() for i in range(4))):
            stats.counts[(task, ttype, bool(cot))] = int(count)
        measured = {"inputs_chars": _lengths_of(table["inputs"]), "targets_chars": _lengths_of(table["targets"])}
        if tokenizer is not None:
            measured["inputs_tokens"] = token_lengths(tokenizer, table["inputs"].to_pylist())
            measured["targets_tokens"] = token_lengths(tokenizer, table["targets"].to_pylist())
        for name, values in measured.items():
            stats.lengths[name] = [int(values.sum()), int(values.min()), int(values.max()), _histogram(values)]
        return stats

    def add(self, other: ShardStats) -> None:
        self.rows += other.rows
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
        for name, (total, low, high, hist) in other.lengths.items():
            if name in self.lengths:
                mine = self.lengths[name]
                self.lengths[name] = [mine[0] + total, min(mine[1], low), max(mine[2], high), mine[3] + hist]
            else:
                self.lengths[name] = [total, low, high, hist.copy()]

    def to_json(self) -> dict:
        return {"rows": self.rows,
                "counts": [[t, tt, c, n] for (t, tt, c), n in sorted(self.counts.items())],
                "lengths": {name: {"sum": v[0], "min": v[1], "max": v[2], "hist": _sparse(v[3])}
                            for name, v in sorted(self.lengths.items())}}

    @classmethod
    def from_json(cls, data: dict) -> ShardStats:
        stats = cls(rows=data["rows"])
        stats.counts = {(t, tt, bool(c)): n for t, tt, c, n in data["counts"]}
        for name, v in data["lengths"].items():
            stats.lengths[name] = [v["sum"], v["min"], v["max"], _dense(v["hist"])]
        return stats


def _sparse(hist: np.ndarray) -> list[list[int]]:
    nz = np.nonzero(hist)[0]
    return [[int(i), int(hist[i])] for i in nz]


def _dense(pairs: list[list[int]]) -> np.ndarray:
    hist = np.zeros(LENGTH_BINS, dtype=np.int64)
    for i, n in pairs:
        hist[i] = n
    return hist


def length_summary(stats: ShardStats) -> dict[str, dict]:
    """mean/min/max and histogram quantiles (p50/p90/p99, to a 16-unit bin) of each measured length."""
    out = {}
    for name, (total, low, high, hist) in sorted(stats.lengths.items()):
        count = int(hist.sum())
        cum = np.cumsum(hist)
        p50, p90, p99 = (min(high, (int(np.searchsorted(cum, q * count)) + 1) * LENGTH_BIN - 1)
                         for q in (0.5, 0.9, 0.99))
        out[name] = {"total": total, "mean": round(total / count, 2) if count else 0.0, "min": low, "max": high,
                     "p50": p50, "p90": p90, "p99": p99}
    return out


# ---------------------------------------------------------------------------------------------- output folder

def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an existing DIR unless overwriting (and a file in any case). The output is then built in a temporary
    folder beside DIR (`core.atomic.atomic_dir`) that replaces DIR only when complete."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FlanmixError("output folder already exists", file=out_dir, field="--out",
                           expected="a new folder, or --overwrite")
    if out_dir.exists() and not out_dir.is_dir():
        raise FlanmixError("output path is a file", file=out_dir, field="--out", expected="a folder")


# Preflight of a build: the plan's arrays while planning and shuffling (measured peak, rounded up), and the fewest
# bytes a row takes in a shard (a demo row takes ~70 in zstd Parquet; a bound, not an estimate, so nothing that
# fits is refused).
PLAN_BYTES_PER_ROW = 64
MIN_SHARD_BYTES_PER_ROW = 16


def check_plan_fits(rows: int, out_dir: Path | str, *, file: str | Path | None = None, line: int | None = None
                    ) -> None:
    """Refuse a plan of `rows` rows that cannot fit in memory or on the disk under `out_dir`, before planning (the
    error names the mixture's `file` and `line` of `size` when given)."""
    check_fits(rows * PLAN_BYTES_PER_ROW, rows * MIN_SHARD_BYTES_PER_ROW, what=f"a plan of {rows:,} rows",
               disk_path=Path(out_dir).parent, file=file, line=line, field="size",
               expected="fewer rows (size.examples or size.tokens)")


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write `DIR/manifest.json` (sorted keys, so equal manifests are equal bytes)."""
    (Path(directory) / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n",
                                                   encoding="utf-8")


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class _LengthStats(_Loose):
    sum: int
    min: int
    max: int
    hist: list[tuple[Annotated[int, Field(ge=0, lt=LENGTH_BINS)], int]]


class _ShardStatsShape(_Loose):
    rows: int = Field(ge=0)
    counts: list[tuple[str, str, bool, int]]
    lengths: dict[str, _LengthStats]


class _ShardRecord(_Loose):
    index: int = Field(ge=0)
    file: str = Field(pattern=r"^[^/\\]+$", description="a file of the folder itself, never a path out of it")
    rows: int = Field(ge=0)
    sha256: str
    stats: _ShardStatsShape


class _Part(_Loose):
    count: int = Field(ge=1)
    index: int = Field(ge=0)


class _BuildShape(_Loose):
    format: Literal[FORMATS]
    messages: bool
    part: _Part | None = None
    tokenizer: str | None = None


class _Size(_Loose):
    rows: int = Field(ge=0)
    planned: int = Field(ge=0)
    dedup_dropped: int = Field(ge=0)
    decontaminated: int = Field(ge=0)


class _Target(_Loose):
    task: str
    template_type: str
    target_rate: float
    realized: int = 0


class _Leaf(_Loose):
    component: str
    task: str
    rate: float


class _Length(_Loose):
    mean: float
    min: int
    max: int
    p50: int
    p90: int
    p99: int


class ManifestShape(_Loose):
    """The parts of manifest.json that `stats` and `merge` read, checked before they are read: a hand-edited or
    damaged manifest is one error naming the field, not a traceback."""

    spec_hash: str
    seed: int
    spec: dict
    build: _BuildShape
    size: _Size
    shards: list[_ShardRecord]
    targets: list[_Target]
    leaves: list[_Leaf]
    lengths: dict[str, _Length]
    fallbacks: dict[str, Any] = {}


def read_manifest(directory: Path | str) -> dict:
    """Load `DIR/manifest.json` of a built mixture, checked against `ManifestShape`."""
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise FlanmixError("not a built mixture (no manifest.json)", file=directory,
                           expected="a folder written by `flanmix build`")
    manifest = read_json(path, what="manifest")
    if not isinstance(manifest, dict):
        raise FlanmixError("invalid manifest: not a JSON object", file=path, expected="a manifest.json of a build")
    validate_mapping(manifest, ManifestShape, source=path)
    return manifest


def total_stats(shards: Iterable[dict]) -> ShardStats:
    """Sum the per-shard statistics recorded in a manifest."""
    total = ShardStats()
    for shard in shards:
        total.add(ShardStats.from_json(shard["stats"]))
    return total
