"""Expanding the file patterns that configs name (paths or globs, relative to the config file), and keeping the
paths an untrusted task spec names inside its registry folder (plus the folders the user allows)."""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from flanmix.core.errors import FlanmixError


def expand_globs(patterns: Iterable[str], base_dir: Path, *, field: str, what: str = "file",
                 file: str | Path | None = None) -> list[Path]:
    """Each pattern (absolute, or relative to `base_dir`) expanded and sorted, in pattern order.

    A pattern that matches nothing is a FlanmixError naming the config `file` (if given) and its `field`.
    """
    paths: list[Path] = []
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(base_dir / pattern)
        matches = sorted(glob.glob(full, recursive=True))
        if not matches:
            raise FlanmixError(f"no {what} matches {pattern!r}", file=file, field=field,
                               expected="an existing file or glob, relative to the file that names it")
        paths.extend(Path(m) for m in matches)
    return paths


# Folders outside a task's registry folder that its data files may come from (os.pathsep-separated); the CLI's
# `--allow-path DIR` adds to it for the duration of a command.
ALLOW_PATHS_ENV = "FLANMIX_ALLOW_PATHS"


def allowed_paths() -> list[Path]:
    """The folders `FLANMIX_ALLOW_PATHS` allows, symlinks resolved."""
    return [Path(p).resolve() for p in os.environ.get(ALLOW_PATHS_ENV, "").split(os.pathsep) if p]


@contextlib.contextmanager
def allowing(paths: Iterable[str | Path]) -> Iterator[None]:
    """Add `paths` to `FLANMIX_ALLOW_PATHS` while the block runs (worker processes inherit it), then restore it."""
    paths = [str(Path(p).resolve()) for p in paths]
    before = os.environ.get(ALLOW_PATHS_ENV)
    if paths:
        os.environ[ALLOW_PATHS_ENV] = os.pathsep.join([*([before] if before else []), *paths])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ALLOW_PATHS_ENV, None)
        else:
            os.environ[ALLOW_PATHS_ENV] = before


def real_path(path: str | Path, *, file: str | Path | None = None, field: str | None = None) -> Path:
    """`path` with symlinks resolved; a symlink loop is a FlanmixError naming `file` (default: the path itself)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop is a RuntimeError before Python 3.13, an OSError after
        message = "symlink loop" if file is None else f"symlink loop at {path}"
        raise FlanmixError(message, file=file or path, field=field,
                           expected="symbolic links that end at a file or folder") from None


def _glob_base(pattern: Path) -> Path:
    """The leading part of a glob pattern without wildcards (the folder it searches)."""
    parts: list[str] = []
    for part in pattern.parts:
        if any(ch in part for ch in "*?["):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def confine(paths: Iterable[Path], root: Path, *, file: str | Path | None, field: str,
            what: str = "data file") -> None:
    """Refuse a path that is not inside `root` or a folder of `FLANMIX_ALLOW_PATHS`, symlinks resolved first.

    This is the boundary that keeps a shared task spec from reading the user's files: `root` is the registry folder
    the spec came from."""
    roots = [real_path(Path(root), file=file, field=field), *allowed_paths()]
    for path in paths:
        real = real_path(Path(path), file=file, field=field)
        if not any(real == r or real.is_relative_to(r) for r in roots):
            plain = Path(os.path.abspath(path))
            shown = f"{plain} (resolved: {real})" if real != plain else str(plain)
            raise FlanmixError(f"{what} {shown} is outside the task's registry folder {root}", file=file, field=field,
                               expected=f"a path inside {root}, or a folder allowed with --allow-path DIR "
                                        f"(or {ALLOW_PATHS_ENV})")


def expand_confined(patterns: Iterable[str], base_dir: Path, root: Path | None, *, field: str,
                    what: str = "file", file: str | Path | None = None) -> list[Path]:
    """`expand_globs`, confined to `root` (see `confine`) when one is given: each pattern's fixed folder is checked
    before it is searched, and every match after (a symlink or `..` could lead out)."""
    patterns = list(patterns)
    if root is not None:
        for pattern in patterns:
            full = Path(pattern) if Path(pattern).is_absolute() else base_dir / pattern
            base = _glob_base(full)
            confine([base], root, file=file, field=field, what=what if base == full else f"{what} folder")
    paths = expand_globs(patterns, base_dir, field=field, what=what, file=file)
    if root is not None:
        confine(paths, root, file=file, field=field, what=what)
    return paths
