"""The JSON and JSONL readers: every error names the file and the line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from flanmix.core.errors import FlanmixError


def open_text(path: str | Path) -> IO[str]:
    """Open a UTF-8 text file, transparently gunzipping `*.gz`; a missing file is a FlanmixError."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rt", encoding="utf-8")
        return path.open(encoding="utf-8")
    except FileNotFoundError:
        raise FlanmixError("file not found", file=path) from None
    except OSError as err:
        raise FlanmixError(f"cannot read file: {err.strerror or err}", file=path) from None


def iter_jsonl(path: str | Path, *, objects: bool = True) -> Iterator[tuple[int, Any]]:
    """Yield `(line_number, value)` for each non-blank line of a JSONL file.

    Invalid JSON, and with `objects` a value that is not a JSON object, is a FlanmixError naming file and line.
    """
    path = Path(path)
    with open_text(path) as handle:
        try:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    raise FlanmixError(f"invalid JSON: {err.msg}", file=path, line=number,
                                       expected="one JSON value per line") from None
                if objects and not isinstance(value, dict):
                    raise FlanmixError("each line must be a JSON object", file=path, line=number)
                yield number, value
        except UnicodeDecodeError as err:
            raise FlanmixError(f"not UTF-8 text: {err.reason}", file=path) from None


def read_jsonl(path: str | Path, *, objects: bool = True) -> list[Any]:
    """All values of a JSONL file (see `iter_jsonl`)."""
    return [value for _, value in iter_jsonl(path, objects=objects)]


def read_json(path: str | Path, *, what: str = "JSON file") -> Any:
    """The value of a JSON file; a missing, unreadable or invalid file is a FlanmixError naming file and line."""
    path = Path(path)
    with open_text(path) as handle:
        try:
            text = handle.read()
        except UnicodeDecodeError as err:
            raise FlanmixError(f"cannot read {what}: not UTF-8 text ({err.reason})", file=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FlanmixError(f"cannot read {what}: invalid JSON: {err.msg}", file=path, line=err.lineno) from None
