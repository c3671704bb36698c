"""Expanding the file patterns that configs name (paths or globs, relative to the config file)."""

from __future__ import annotations

import glob
from collections.abc import Iterable
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
