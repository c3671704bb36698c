"""Atomic writes: a reader never sees a half-written file or folder.

Everything is written beside its destination as `NAME.tmp-<pid>` and renamed into place (`os.replace` is atomic on
one filesystem); on any error the temporary is removed. An output folder is written under a lock (`.NAME.lock`), so
two processes never write one folder at once, and the temporaries of dead processes are cleaned up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from flanmix.core.errors import FlanmixError


def temp_path(path: str | Path) -> Path:
    """The temporary sibling that `path` is written to before the rename."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def check_writable(path: str | Path, *, field: str | None = None, folder: bool = False) -> Path:
    """Fail now, not after hours of work, if `path` (a file, or with `folder` an output folder written beside
    itself, see `atomic_dir`) cannot be written: a file path must not be a folder, and the nearest existing folder
    above `path` must take a new file (probed by creating and removing one; nothing is left behind)."""
    path = Path(path)
    if not path.name or path.name == "..":
        raise FlanmixError("not a usable output path", file=path, field=field, expected="a path ending in a name")
    if path.is_dir() and not folder:
        raise FlanmixError("is a folder", file=path, field=field, expected="a file path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise FlanmixError(f"cannot write here: {err.strerror or err}", file=path, field=field,
                           expected="a writable location") from None
    return path


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it to `path` when the block ends without error.

    A path that cannot be written (a read-only folder, a file where a folder should be, an existing folder at
    `path`) is a FlanmixError."""
    path = Path(path)
    tmp = temp_path(path)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(tmp, mode, **kwargs)
    except OSError as err:
        raise FlanmixError(f"cannot write file: {err.strerror or err}", file=path,
                           expected="a writable location") from None
    try:
        with handle:
            yield handle
        if path.is_dir():
            raise FlanmixError("is a folder", file=path, expected="a file path")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_open(path) as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Write `obj` as JSON (UTF-8, keys in insertion order, trailing newline) atomically."""
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write one JSON value per line atomically; returns the number of lines."""
    count = 0
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(path: str | Path, *, note: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the `PATH.tmp-<pid>` folders (and `PATH.old-<pid>` copies) left by processes that died; a dead
    process's `PATH.old-<pid>` is put back first if `PATH` itself is missing (it died mid-swap). Call it only while
    holding `locked(path)`. Each removal is reported through `note` (default: one line on stderr)."""
    path = Path(path)
    note = note or (lambda text: print(f"flanmix: {text}", file=sys.stderr))
    removed = []
    for kind in ("old", "tmp"):  # old first: a restored folder must not be mistaken for a leftover
        for leftover in sorted(path.parent.glob(f"{glob.escape(path.name)}.{kind}-*")):
            pid = leftover.name.rpartition("-")[2]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            if kind == "old" and not path.exists():
                os.replace(leftover, path)
                note(f"restored {path} from {leftover.name} (left by process {pid}, which is no longer running)")
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed.append(leftover)
            note(f"removed {leftover} (left by process {pid}, which is no longer running)")
    return removed


def lock_path(path: str | Path) -> Path:
    """The lock file of an output `path`: a hidden sibling `.NAME.lock`."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on output `path` for the block (`fcntl.flock` on `.NAME.lock` beside it, released by
    the kernel if the process dies). A second writer of `path` fails at once with a FlanmixError; the lock file is
    removed when the block ends."""
    path = Path(path)
    lock = lock_path(path)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise FlanmixError(f"cannot create the lock file {lock.name}: {err.strerror}", file=path.parent,
                               expected="a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FlanmixError("another process is writing this output folder right now", file=path,
                               expected=f"one writer at a time (lock {lock.name})") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and our lock: take the new one
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # while still held, so nobody locks a file that is about to disappear
        os.close(fd)


def _finalize(tmp: Path, path: Path, replace: bool) -> None:
    """Rename `tmp` to `path`; checked at the moment of the rename (under the lock), not only when the block began."""
    appeared = FlanmixError("output folder appeared while this one was being written; not replaced", file=path,
                            expected="a new folder, or --overwrite")
    if not (path.exists() or path.is_symlink()):
        try:
            os.replace(tmp, path)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                raise appeared from None
            raise
        return
    if not replace:
        raise appeared
    old = path.with_name(f"{path.name}.old-{os.getpid()}")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)  # put the previous folder back: never leave DIR missing
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `path`; rename it to `path` when the block ends without error.

    The whole block holds `locked(path)`, so two writers of one folder never race; temporaries of dead writers are
    removed first (`remove_stale`). Without `replace` an existing `path` is never replaced, even one that appeared
    while the block ran (a FlanmixError). With `replace`, an existing `path` is swapped out only after the new
    folder is complete. On an error the temporary folder is removed and `path` is left as it was.
    """
    path = Path(path)
    if not path.name or path.name == "..":
        raise FlanmixError("not a usable output path", file=path, expected="a path ending in a name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FlanmixError(f"cannot create the folder: {err.strerror}", file=path.parent,
                           expected="a writable location") from None
    with locked(path):
        remove_stale(path)
        tmp = temp_path(path)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
        except OSError as err:
            raise FlanmixError(f"cannot write beside the output folder: {err.strerror}", file=path.parent,
                               expected="a writable folder") from None
        try:
            yield tmp
            _finalize(tmp, path, replace)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
