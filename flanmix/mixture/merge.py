"""Merging the parts of a `--num-shards K` build into one folder, byte-identical to a single-machine build."""

from __future__ import annotations

import shutil
from pathlib import Path

from flanmix.core.atomic import atomic_dir
from flanmix.core.errors import FlanmixError
from flanmix.dedup import SeenKeys, row_keys
from flanmix.mixture.manifest import Manifest, summarize
from flanmix.writer import (
    check_out_dir,
    file_sha256,
    load_tokenizer,
    read_manifest,
    read_shard,
    rewrite_shard,
    write_manifest,
)


def merge(part_dirs: list[str | Path], out_dir: str | Path, *, overwrite: bool = False,
          progress: bool = True) -> Manifest:
    """Combine the parts of a `--num-shards K` build into one mixture equal to a single-machine build.

    `progress` is accepted for symmetry with `build`; merging copies files and shows no progress bar.
    """
    if not part_dirs:
        raise FlanmixError("no parts given", field="PART_DIRS", expected="the folders of every part")
    manifests = [(Path(d), read_manifest(d)) for d in part_dirs]
    _check_parts(manifests)
    shards = _part_shards(manifests)
    first = manifests[0][1]
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    with atomic_dir(out_dir, replace=overwrite) as tmp:
        counters = {"duplicates": sum(m["size"]["dedup_dropped"] for _, m in manifests),
                    "decontaminated": sum(m["size"]["decontaminated"] for _, m in manifests),
                    "fewshot_replaced": sum(m["size"].get("fewshot_replaced", 0) for _, m in manifests),
                    "fewshot_dropped": sum(m["size"].get("fewshot_dropped", 0) for _, m in manifests)}
        records = _copy_shards(shards, tmp, first, counters)
        manifest = {k: v for k, v in first.items() if k not in ("shards", "size", "lengths")}
        manifest["build"] = dict(first["build"], part=None)
        manifest["shards"] = records
        for target in manifest["targets"]:
            target.pop("realized", None)
            target.pop("realized_cot", None)
        summarize(manifest, counters)
        write_manifest(tmp, manifest)
    return Manifest(manifest, out_dir)


def _check_parts(manifests: list[tuple[Path, dict]]) -> None:
    """The parts come from one build (same spec hash and seed, same part count) and each part is there once."""
    first_dir, first = manifests[0]
    for directory, m in manifests:
        part = m["build"].get("part")
        if part is None:
            raise FlanmixError("not a part of a sharded build", file=directory, field="build.part",
                               expected="a folder built with --num-shards K --shard-index I")
        if m["spec_hash"] != first["spec_hash"] or m["seed"] != first["seed"]:
            raise FlanmixError(f"part was built from a different spec or seed than {first_dir}", file=directory,
                               field="spec_hash", expected="parts of one build")
        if part["count"] != first["build"]["part"]["count"]:
            raise FlanmixError("parts disagree on the number of parts", file=directory, field="build.part.count")
    count = first["build"]["part"]["count"]
    indices = sorted(m["build"]["part"]["index"] for _, m in manifests)
    if len(set(indices)) != len(indices):
        dup = sorted({i for i in indices if indices.count(i) > 1})
        raise FlanmixError(f"part index given twice: {dup}", field="PART_DIRS", expected="each part once")
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise FlanmixError(f"missing part(s) {missing} of {count}", field="PART_DIRS", expected="every part")


def _part_shards(manifests: list[tuple[Path, dict]]) -> list[tuple[Path, dict]]:
    """(part folder, shard record) of every shard, in shard order; each shard in one part, unchanged since built."""
    shards: list[tuple[Path, dict]] = []
    owner: dict[int, Path] = {}
    for directory, m in sorted(manifests, key=lambda dm: dm[1]["build"]["part"]["index"]):
        for shard in m["shards"]:
            if shard["index"] in owner:
                raise FlanmixError(f"shard {shard['index']} is in two parts ({owner[shard['index']]})",
                                   file=directory, field="shards", expected="disjoint parts")
            owner[shard["index"]] = directory
            path = directory / shard["file"]
            if not path.is_file() or file_sha256(path) != shard["sha256"]:
                raise FlanmixError("shard file missing or changed since the part was built", file=path,
                                   field="shards", expected="the part folder as built")
            shards.append((directory, shard))
    return sorted(shards, key=lambda ds: ds[1]["index"])


def _copy_shards(shards: list[tuple[Path, dict]], tmp: Path, first: dict, counters: dict) -> list[dict]:
    """Copy the shards into `tmp` in order, dropping rows an earlier part already had (as a single build would);
    returns their records and adds the dropped rows to `counters`."""
    fmt, messages = first["build"]["format"], first["build"]["messages"]
    tokenizer_path = first["build"].get("tokenizer")
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    seen = SeenKeys()
    records = []
    for directory, shard in shards:
        target = tmp / shard["file"]
        shutil.copyfile(directory / shard["file"], target)
        record = dict(shard)
        if first["spec"].get("dedup", True):
            table = read_shard(target, fmt, messages)
            new = seen.filter_new(row_keys(table["inputs"].to_pylist(), table["targets"].to_pylist()))
            if not new.all():
                stats = rewrite_shard(table, new, target, fmt, messages, tokenizer)
                counters["duplicates"] += int((~new).sum())
                record.update(rows=stats.rows, sha256=file_sha256(target), stats=stats.to_json())
        records.append(record)
    return records
