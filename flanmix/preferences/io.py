"""Reading and writing preference files: our JSONL/JSON rows or any third-party set, validated into `Group`s."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from flanmix.core.atomic import write_jsonl
from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import iter_jsonl, read_head, read_json
from flanmix.preferences.importers import IMPORTERS, detect_format
from flanmix.preferences.schema import Group, row_to_group


def read_rows(path: str | Path) -> list[tuple[dict, str]]:
    """(row, 'file:line') for every row of a JSONL (optionally .gz) or JSON-list file."""
    path = Path(path)
    if not path.is_file():
        raise FlanmixError("preference file not found", file=path)
    if read_head(path).lstrip().startswith("["):
        data = read_json(path, what="preference file")
        return [(row, f"{path}[{i}]") for i, row in enumerate(data)]
    return [(row, f"{path}:{n}") for n, row in iter_jsonl(path, objects=False)]


def load_preferences(path: str | Path, fmt: str = "auto") -> list[Group]:
    """Load and validate a preference file (our rows, or an HH-RLHF / PandaLM / ShareGPT file) as Groups."""
    path = Path(path)
    if not path.is_file():
        raise FlanmixError("preference file not found", file=path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt in IMPORTERS:
        rows, _ = IMPORTERS[fmt](path)
        return [row_to_group(r, f"{path}[{i}]") for i, r in enumerate(rows)]
    groups = [row_to_group(row, where) for row, where in read_rows(path)]
    if not groups:
        raise FlanmixError("no preference rows", file=path)
    return groups


def write_rows(rows: Iterable[dict], out: str | Path) -> int:
    """Write rows as JSONL atomically; returns the count."""
    return write_jsonl(out, rows)


def split_groups(groups: Sequence[Group], eval_fraction: float, seed: int = 0) -> tuple[list[Group], list[Group]]:
    """Seeded train/held-out split by prompt."""
    idx = list(range(len(groups)))
    random.Random(seed).shuffle(idx)
    n_eval = int(round(len(groups) * eval_fraction))
    if eval_fraction > 0 and n_eval == 0 and len(groups) > 1:
        n_eval = 1
    held = set(idx[:n_eval])
    return [g for i, g in enumerate(groups) if i not in held], [g for i, g in enumerate(groups) if i in held]
