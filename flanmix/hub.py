"""The hub mirror: a folder holding every hub (and repository) source a mixture reads, so that the same mixture
builds on a machine without internet and in tests.

Layout (`flanmix data mirror` writes it; tests/fixtures/hub is one, written by hand):

    DIR/<hub name, "/" -> "__">/<config or "default">/<split>.parquet   (or <split>.jsonl, <split>.jsonl.gz)
    DIR/<hub name, "/" -> "__">/<config or "default">/_info.json        {"revision": ..., "splits": {...}}
    DIR/<owner>__<name>/<path inside the repository>                    files of a `repo:` source
    DIR/<owner>__<name>/_info.json                                      {"revision": ...}

`--hub-mirror DIR` (or `FLANMIX_HUB_MIRROR`, several folders separated by os.pathsep, the first holding a source
wins) makes hub and repo sources read from there; without one, hub sources load through `datasets` and repo
sources are unreachable.

A mirror holds whole splits: a source reading a slice (`split: train[:30000]`) reads `train.parquet` and slices it
on read, as `datasets` would (flanmix.slicing), so tasks slicing one split share one file. A split file may also be
a sample of the real split (tests/fixtures/hub): then `_info.json` gives the real split's length and the position
of each stored row in it, `"splits": {"train": {"rows": 2490, "positions": [0, 1, 2300, 2489]}}`, and a slice keeps
the stored rows whose positions fall inside it.

Nothing here keeps state: the mirror folders travel in the environment, so worker
processes see them too.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import socket
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from flanmix.core.atomic import temp_path, write_json
from flanmix.core.errors import FlanmixError, SourceUnavailable
from flanmix.core.jsonl import iter_jsonl, read_json
from flanmix.core.paths import confine
from flanmix.slicing import SplitSlice
from flanmix.spec import SourceSpec

MIRROR_ENV = "FLANMIX_HUB_MIRROR"
INFO_FILE = "_info.json"
SPLIT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
GITHUB_API = "https://api.github.com/repos/{repo}/git/trees/{revision}?recursive=1"
GITHUB_RAW = "https://raw.githubusercontent.com/{repo}/{revision}/{path}"


# ---------------------------------------------------------------------------------------------- layout
def mirror_roots() -> list[Path]:
    """The mirror folders in effect (`FLANMIX_HUB_MIRROR`, os.pathsep-separated), in lookup order."""
    return [Path(p) for p in os.environ.get(MIRROR_ENV, "").split(os.pathsep) if p]


@contextlib.contextmanager
def using_mirror(dirs: Iterable[str | Path] | None) -> Iterator[list[Path]]:
    """Read hub and repo sources from `dirs` (before any `FLANMIX_HUB_MIRROR` folders) while the block runs;
    worker processes inherit it. The variable is restored afterwards. A folder that does not exist is an error."""
    dirs = [Path(d) for d in dirs or []]
    for folder in dirs:
        if not folder.is_dir():
            raise FlanmixError("hub mirror folder not found", file=folder, field="--hub-mirror",
                               expected="a folder written by `flanmix data mirror` (or laid out like one)")
    before = os.environ.get(MIRROR_ENV)
    if dirs:
        os.environ[MIRROR_ENV] = os.pathsep.join([*(str(d.resolve()) for d in dirs), *([before] if before else [])])
    try:
        yield mirror_roots()
    finally:
        if before is None:
            os.environ.pop(MIRROR_ENV, None)
        else:
            os.environ[MIRROR_ENV] = before


def slug(name: str) -> str:
    """A hub dataset name or `owner/name` as one folder name (`/` becomes `__`)."""
    return name.replace("/", "__")


def dataset_dir(root: Path, source: SourceSpec) -> Path:
    """The folder of a hub source's config in a mirror."""
    return Path(root) / slug(source.hub or "") / (source.config or "default")


def repo_dir(root: Path, source: SourceSpec) -> Path:
    """The folder of a repo source's repository in a mirror (a partial checkout; a symlink to a clone works)."""
    return Path(root) / slug(source.repo or "")


def split_file(source: SourceSpec, roots: Iterable[Path] | None = None) -> Path | None:
    """The mirror file holding a hub source's split (first root, first suffix that exists), or None."""
    for root in mirror_roots() if roots is None else roots:
        folder = dataset_dir(root, source)
        for suffix in SPLIT_SUFFIXES:
            path = folder / f"{source.split_name}{suffix}"
            if path.is_file():
                return path
    return None


def repo_patterns(source: SourceSpec) -> list[str]:
    """A repo source's file patterns (paths or globs from the repository root)."""
    return [source.files] if isinstance(source.files, str) else list(source.files or [])


def matches(path: str, pattern: str) -> bool:
    """Whether a repository path matches a pattern segment by segment (`*` stays inside one folder, as in glob)."""
    parts, wanted = PurePosixPath(path).parts, PurePosixPath(pattern).parts
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted))


def repo_root(source: SourceSpec, roots: Iterable[Path] | None = None) -> Path | None:
    """The first mirror folder of a repo source in which every file pattern matches something, or None."""
    for root in mirror_roots() if roots is None else roots:
        folder = repo_dir(root, source)
        if folder.is_dir() and all(any(folder.glob(p)) for p in repo_patterns(source)):
            return folder
    return None


def describe_missing(source: SourceSpec, roots: list[Path]) -> str:
    """Where a mirror should hold a source (for errors)."""
    if source.kind == "repo":
        return " or ".join(str(repo_dir(r, source) / p) for r in roots for p in repo_patterns(source))
    return " or ".join(f"{dataset_dir(r, source) / source.split_name}.parquet|.jsonl" for r in roots)


# ---------------------------------------------------------------------------------------------- reading
def read_rows(path: Path, start: int = 0, stop: int | None = None) -> list[dict]:
    """The rows `[start, stop)` (all by default) of one mirror file (Parquet, JSONL or gzipped JSONL)."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
            stop = table.num_rows if stop is None else stop
            # Only the slice becomes Python rows: FLAN reads 30,000 rows of splits ten or a hundred times larger.
            return table.slice(start, max(stop - start, 0)).to_pylist()
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise FlanmixError(f"cannot read Parquet: {type(err).__name__}: {str(err)[:200]}", file=path,
                               expected="a Parquet file written by `flanmix data mirror`") from None
    return [row for _, row in iter_jsonl(path)][start:stop]


def file_rows(path: Path) -> int:
    """How many rows a mirror file holds (Parquet: from its footer, without reading the rows)."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise FlanmixError(f"cannot read Parquet: {type(err).__name__}: {str(err)[:200]}", file=path,
                               expected="a Parquet file written by `flanmix data mirror`") from None
    return sum(1 for _ in iter_jsonl(path))


def sample_positions(path: Path, stored: int) -> tuple[int, list[int]] | None:
    """(length of the real split, position of each stored row) when the mirror's `_info.json` says a split file is
    a sample of its split; None for a whole split. A malformed record is a FlanmixError naming `_info.json`."""
    info = _info(path.parent)
    entry = info.get("splits", {}).get(path.name.split(".")[0], {}) if isinstance(info, dict) else {}
    if not isinstance(entry, dict) or "positions" not in entry:
        return None
    total, positions = entry.get("rows"), entry["positions"]
    good = (isinstance(total, int) and isinstance(positions, list) and len(positions) == stored
            and all(isinstance(p, int) and 0 <= p < total for p in positions)
            and all(a < b for a, b in zip(positions, positions[1:])))
    if not good:
        raise FlanmixError(f"sample positions of {path.name} do not fit its {stored} rows",
                           file=path.parent / INFO_FILE, field="splits.positions",
                           expected="the real split's length as `rows` and one increasing position below it per "
                           "stored row")
    return total, positions


def mirror_split(path: Path, split: SplitSlice) -> list[tuple[int, dict]]:
    """The rows of a mirror split file inside a slice, with their positions in the split (see the module doc)."""
    stored = file_rows(path)
    sample = sample_positions(path, stored)
    if sample is None:
        start, stop = split.bounds(stored)
        return list(enumerate(read_rows(path, start, stop), start))
    start, stop = split.bounds(sample[0])
    return [(p, row) for p, row in zip(sample[1], read_rows(path)) if start <= p < stop]


def hub_rows(source: SourceSpec, *, task_name: str, file: str | None = None,
             sliced: bool = True) -> list[tuple[int, dict]]:
    """A hub source's rows with their positions in the split: from the mirror when one is in effect, else through
    `datasets` (the hub or its cache). `sliced=False` reads the whole split (the caller slices after `explode`).

    A source missing from the mirror is a FlanmixError naming the task, the source and where the file should be;
    so is a slice holding no rows (`datasets` refuses one too)."""
    roots = mirror_roots()
    split = source.split_slice if sliced else SplitSlice(source.split_name)
    if roots:
        path = split_file(source, roots)
        if path is None:
            raise SourceUnavailable(f"task {task_name!r}: hub source {source.describe()} is not in the mirror",
                                    file=file, field="source.hub", expected=describe_missing(source, roots))
        if not sliced and not source.split_slice.whole and sample_positions(path, file_rows(path)) is not None:
            raise FlanmixError(f"task {task_name!r}: {path.name} is a sample of its split, which cannot be sliced "
                               "after explode", file=path.parent / INFO_FILE, field="splits.positions",
                               expected="the whole split in the mirror")
        rows = mirror_split(path, split)
        if not rows:
            raise FlanmixError(f"task {task_name!r}: hub source {source.describe()} has no rows", file=path,
                               field="source.split" if not split.whole else "source.hub",
                               expected="a split (slice) holding at least one row")
        return rows
    return load_online(source, split, task_name=task_name, file=file)


def load_online(source: SourceSpec, split: SplitSlice, *, task_name: str,
                file: str | None = None) -> list[tuple[int, dict]]:
    """A hub source's rows inside `split` through `datasets.load_dataset` (network, or its cache when offline),
    with their positions. The whole split is loaded (as `datasets` does for a slice too) and sliced here, so the
    online and the mirror path resolve a slice identically."""
    import datasets

    try:
        dataset = datasets.load_dataset(source.hub, source.config, split=split.name, revision=source.revision)
    except Exception as err:  # noqa: BLE001 - datasets raises many types (network, missing config, ...)
        first = str(err).splitlines()[0][:200] if str(err) else ""
        # No network (or the hub switched off): the data is out of reach, not wrong.
        unreachable = offline() or "Connection" in type(err).__name__ or "Offline" in first
        raise (SourceUnavailable if unreachable else FlanmixError)(
            f"task {task_name!r}: cannot load hub dataset {source.describe()}: {type(err).__name__}: {first}",
            file=file, field="source.hub", expected="a reachable hub, a cached dataset, or --hub-mirror DIR") from None
    start, stop = split.bounds(len(dataset))
    if start >= stop:
        raise FlanmixError(f"task {task_name!r}: hub source {source.describe()} has no rows", file=file,
                           field="source.split", expected=f"a slice holding at least one of {len(dataset)} rows")
    rows = dataset.to_list() if split.whole else dataset.select(range(start, stop)).to_list()
    return list(enumerate(rows, start))


def repo_files_root(source: SourceSpec, *, task_name: str, file: str | None = None) -> Path:
    """The mirror folder a repo source's files are read from (they must stay inside it)."""
    roots = mirror_roots()
    folder = repo_root(source, roots)
    if folder is None:
        why = "is not in the mirror" if roots else "needs a hub mirror (--hub-mirror DIR or FLANMIX_HUB_MIRROR)"
        raise SourceUnavailable(f"task {task_name!r}: repo source {source.describe()} {why}", file=file,
                           field="source.files", expected=describe_missing(source, roots) if roots else
                           "`flanmix data mirror MIXTURE --to DIR`, then --hub-mirror DIR")
    return folder


# ---------------------------------------------------------------------------------------------- reachability
def offline() -> bool:
    """True when the user switched the hub off (`HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE`)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in OFFLINE_ENVS)


def network_available(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the hub can be reached (never, when offline mode is on)."""
    if offline():
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def reachable(source: SourceSpec, roots: list[Path], online: bool) -> bool:
    """Whether a build can read a hub or repo source: from the mirror, or (hub only) online."""
    if source.kind == "repo":
        return repo_root(source, roots) is not None
    if roots:
        return split_file(source, roots) is not None
    return online


# ---------------------------------------------------------------------------------------------- mirroring
def fetch_url(url: str, timeout: float = 60.0) -> bytes:
    """GET a URL (GitHub's API and raw files); tests replace this function."""
    request = urllib.request.Request(url, headers={"User-Agent": "flanmix"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - fixed https URLs
        return response.read()


def resolved_revision(name: str, revision: str | None) -> str | None:
    """The commit a hub dataset's revision points at (None when the hub cannot say: offline, no access)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name, revision=revision).sha
    except Exception:  # noqa: BLE001 - any failure only means the commit is not recorded
        return None


def _info(folder: Path) -> dict:
    path = folder / INFO_FILE
    return read_json(path, what="mirror info") if path.is_file() else {}


def mirror_hub(source: SourceSpec, root: Path) -> tuple[str, int]:
    """Download a hub source's split into the mirror (skipped when present at the same revision).

    Returns ("skipped" | "downloaded", rows). The split file appears only when complete (resumable)."""
    folder = dataset_dir(root, source)
    info = _info(folder)
    done = split_file(source, [root])
    name = source.split_name  # the whole split, once for every slice of it
    if done is not None and info.get("revision") == source.revision:
        return "skipped", info.get("splits", {}).get(name, {}).get("rows", -1)
    import datasets

    dataset = datasets.load_dataset(source.hub, source.config, split=name, revision=source.revision)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{name}.parquet"
    tmp = temp_path(final)
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # one progress line per source is ours; the setting is restored below
    try:
        dataset.to_parquet(str(tmp))
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
        if bars_were_on:
            datasets.enable_progress_bars()
    for suffix in SPLIT_SUFFIXES[1:]:  # a stale JSONL of the split would shadow nothing, but confuse readers
        (folder / f"{name}{suffix}").unlink(missing_ok=True)
    info.update({"dataset": source.hub, "config": source.config, "revision": source.revision,
                 "resolved_revision": resolved_revision(source.hub or "", source.revision)})
    info.setdefault("splits", {})[name] = {"rows": len(dataset), "file": final.name}
    write_json(folder / INFO_FILE, info)
    return "downloaded", len(dataset)


def _repo_listing(source: SourceSpec, checkout: Path | None) -> list[str]:
    """Repository paths matching a repo source's patterns: from a local checkout, else GitHub's tree API."""
    patterns = repo_patterns(source)
    if checkout is not None:
        found = sorted({p.relative_to(checkout).as_posix() for pattern in patterns for p in checkout.glob(pattern)
                        if p.is_file()})
        confine([checkout / p for p in found], checkout, file=None, field="--checkout", what="repository file")
        return found
    url = GITHUB_API.format(repo=source.repo, revision=source.revision or "HEAD")
    tree = json.loads(fetch_url(url)).get("tree", [])
    return sorted(item["path"] for item in tree
                  if item.get("type") == "blob" and any(matches(item["path"], p) for p in patterns))


def mirror_repo(source: SourceSpec, root: Path, checkout: Path | None = None) -> tuple[str, int]:
    """Copy a repo source's files into the mirror from a local `checkout`, or download them from GitHub at the
    source's revision. Files already there are kept (resumable); each file appears only when complete."""
    folder = repo_dir(root, source)
    names = _repo_listing(source, checkout)
    if not names:
        raise FlanmixError(f"repo source {source.describe()}: no file matches", field="source.files",
                           expected="paths that exist in the repository" + (f" checkout {checkout}" if checkout
                                                                            else f" at {source.revision or 'HEAD'}"))
    fetched = 0
    for name in names:
        target = folder / name
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(target)
        try:
            if checkout is not None:
                shutil.copyfile(checkout / name, tmp)
            else:
                tmp.write_bytes(fetch_url(GITHUB_RAW.format(repo=source.repo, revision=source.revision or "HEAD",
                                                            path=name)))
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        fetched += 1
    info = _info(folder)
    info.update({"repo": source.repo, "revision": source.revision,
                 "from": str(checkout) if checkout is not None else "github"})
    write_json(folder / INFO_FILE, info)
    return ("downloaded" if fetched else "skipped"), len(names)


def mirror_key(source: SourceSpec) -> tuple:
    """What a mirror stores a source as: sources slicing one split (or exploding its rows) share it."""
    if source.kind == "hub":
        return "hub", source.hub, source.config, source.split_name, source.revision
    return "repo", source.describe(), source.revision


def mirror_revision(source: SourceSpec) -> dict | None:
    """The revision a mirror in effect recorded for a hub or repo source (`revision`, `resolved_revision` of its
    `_info.json`), or None without a mirror holding it or without a record: a build's input hash includes it, so
    one spec over two mirror snapshots hashes differently."""
    roots = mirror_roots()
    if not roots or source.kind not in ("hub", "repo"):
        return None
    if source.kind == "hub":
        path = split_file(source, roots)
        folder = path.parent if path is not None else None
    else:
        folder = repo_root(source, roots)
    info = _info(folder) if folder is not None else {}
    record = {k: info[k] for k in ("revision", "resolved_revision") if isinstance(info, dict) and info.get(k)}
    return record or None


def mirror_sources(sources: list[SourceSpec], root: Path, *, checkouts: dict[str, Path] | None = None,
                   note: Callable[[str], Any] | None = None) -> dict[str, int]:
    """Mirror each hub/repo source (once per distinct source) into `root`; `note` gets one progress line each.

    Returns counts of downloaded / skipped sources. A failure names the source; what finished stays (rerun to
    resume)."""
    checkouts = checkouts or {}
    counts = {"downloaded": 0, "skipped": 0}
    unique = list({mirror_key(s): s for s in sources if s.kind in ("hub", "repo")}.values())
    for i, source in enumerate(unique, 1):
        try:
            if source.kind == "hub":
                state, rows = mirror_hub(source, root)
            else:
                state, rows = mirror_repo(source, root, checkouts.get(source.repo or ""))
        except FlanmixError:
            raise
        except Exception as err:  # noqa: BLE001 - network and dataset errors come in many types
            first = str(err).splitlines()[0][:200] if str(err) else ""
            raise FlanmixError(f"cannot mirror {source.describe()}: {type(err).__name__}: {first} ({i - 1} of "
                               f"{len(unique)} sources done; rerun to resume)", field="source") from None
        counts[state] += 1
        if note:
            unit = "rows" if source.kind == "hub" else "files"
            whole = source.model_copy(update={"split": source.split_name})  # the whole split is what is stored
            note(f"[{i}/{len(unique)}] {whole.describe()}: {state} ({rows} {unit})")
    return counts
