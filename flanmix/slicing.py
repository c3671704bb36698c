"""Split slices (`train[:30000]`, `train[30200:60200]`, `train[:-200]`, `train[:10%]`) and exploded rows.

A hub source's `split` may name a slice of a split in the syntax of `datasets` (and TFDS, which FLAN uses):
`NAME[FROM:TO]` with absolute or percent boundaries, negative ones counting from the end. The boundaries resolve
against the split's length exactly as `datasets` resolves them (`datasets.arrow_reader._rel_to_abs_instr` with its
default "closest" rounding): out-of-range boundaries clamp to the split, so a slice beyond the end is empty.
`datasets` refuses an empty slice, and so does a build (a source without rows is an error).

`explode` turns one source row into one row per item of some equal-length list columns (QuAC's hub rows are whole
dialogues; FLAN's TFDS rows are single questions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# The split name as `datasets` allows it (`\w+(\.\w+)*`), then an optional [FROM:TO] slice.
_SPLIT = re.compile(r"^(?P<name>\w+(?:\.\w+)*)(?:\[(?P<from>-?\d+%?)?:(?P<to>-?\d+%?)?\])?$")
SPLIT_SYNTAX = "NAME or NAME[FROM:TO] as in `datasets`, e.g. train, train[:30000], train[30200:60200], " \
               "train[:-200], train[:10%]"


@dataclass(frozen=True)
class SplitSlice:
    """A split name and an optional slice of it; `unit` is "abs" (rows) or "%" (percent of the split)."""

    name: str
    start: int | None = None
    stop: int | None = None
    unit: str = "abs"

    @property
    def whole(self) -> bool:
        """True when the whole split is read (no slice, or `[:]`)."""
        return self.start is None and self.stop is None

    def bounds(self, length: int) -> tuple[int, int]:
        """The absolute `[start, stop)` of the slice in a split of `length` rows, as `datasets` resolves it
        (percent boundaries rounded to the closest row; negative ones from the end; clamped to the split)."""
        def absolute(value: int | None, default: int) -> int:
            if value is None:
                return default
            if self.unit == "%":
                value = int(round(value * length / 100.0))
            if value < 0:
                value = max(length + value, 0)
            return min(value, length)

        return absolute(self.start, 0), absolute(self.stop, length)


def parse_split(text: str) -> SplitSlice:
    """Parse a split with an optional slice; ValueError (with the accepted syntax) when malformed."""
    match = _SPLIT.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"malformed split {text!r}: expected {SPLIT_SYNTAX}")
    ends = [match.group("from"), match.group("to")]
    percent = [e is not None and e.endswith("%") for e in ends]
    if any(percent) and not all(p or e is None for p, e in zip(percent, ends)):
        raise ValueError(f"split {text!r} mixes rows and percents in one slice: use one unit for both ends")
    values = [int(e.rstrip("%")) if e is not None else None for e in ends]
    if any(percent) and any(v is not None and abs(v) > 100 for v in values):
        raise ValueError(f"split {text!r}: percent boundaries must lie between -100% and 100%")
    return SplitSlice(match.group("name"), values[0], values[1], "%" if any(percent) else "abs")


# ---------------------------------------------------------------------------------------------- explode
def get_path(row: dict, path: str) -> Any:
    """The value at a dotted path of a row (`orig_answers.texts` is row['orig_answers']['texts'])."""
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def _with_path(row: dict, path: str, value: Any) -> dict:
    """A copy of `row` with the value at a dotted path replaced (the dicts along the path are copied)."""
    head, _, rest = path.partition(".")
    out = dict(row)
    out[head] = _with_path(row[head], rest, value) if rest else value
    return out


def explode_row(row: dict, paths: list[str]) -> list[dict]:
    """One row per item of the list columns at `paths` (zipped): row k holds item k of each of them, every other
    column as it is. ValueError naming the columns when one is missing, is no list, or the lengths differ."""
    columns = []
    for path in paths:
        try:
            value = get_path(row, path)
        except KeyError:
            raise ValueError(f"column {path!r} is missing (columns: {', '.join(sorted(row))})") from None
        if not isinstance(value, list | tuple):
            raise ValueError(f"column {path!r} is a {type(value).__name__}, not a list")
        columns.append(value)
    lengths = {path: len(value) for path, value in zip(paths, columns)}
    if len(set(lengths.values())) > 1:
        raise ValueError("list columns differ in length: " + ", ".join(f"{p} has {n}" for p, n in lengths.items()))
    out = []
    for items in zip(*columns):
        exploded = row
        for path, item in zip(paths, items):
            exploded = _with_path(exploded, path, item)
        out.append(exploded)
    return out
