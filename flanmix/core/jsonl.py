"""The JSON and JSONL readers: every error names the file and the line."""

from __future__ import annotations

import gzip
import json
import zlib
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


def _open_binary(path: Path) -> IO[bytes]:
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")
    except FileNotFoundError:
        raise FlanmixError("file not found", file=path) from None
    except OSError as err:
        raise FlanmixError(f"cannot read file: {err.strerror or err}", file=path) from None


# What reading a damaged file raises: bytes that are not UTF-8, a truncated or corrupt gzip stream, an I/O error.
READ_ERRORS = (UnicodeDecodeError, EOFError, zlib.error, OSError)


def read_error(path: str | Path, err: BaseException, *, line: int | None = None) -> FlanmixError:
    """The one-line FlanmixError for one of `READ_ERRORS` while reading `path` (at `line`, when known)."""
    if isinstance(err, UnicodeDecodeError):
        return FlanmixError(f"not UTF-8 text: {err.reason}", file=path, line=line, expected="a UTF-8 text file")
    if isinstance(err, (EOFError, zlib.error, gzip.BadGzipFile)):
        return FlanmixError(f"truncated or corrupt gzip data ({err})", file=path, line=line,
                            expected="a complete .gz file")
    if isinstance(err, OSError):
        return FlanmixError(f"cannot read file: {err.strerror or err}", file=path, line=line)
    return FlanmixError(f"cannot read file: {type(err).__name__}: {err}", file=path, line=line)


def read_head(path: str | Path, size: int = 4096) -> str:
    """The first `size` characters of a text file (gunzipped for `*.gz`), for sniffing its format."""
    with open_text(path) as handle:
        try:
            return handle.read(size)
        except READ_ERRORS as err:
            raise read_error(path, err) from None


def iter_jsonl(path: str | Path, *, objects: bool = True) -> Iterator[tuple[int, Any]]:
    """Yield `(line_number, value)` for each non-blank line of a JSONL file.

    Invalid JSON, and with `objects` a value that is not a JSON object, is a FlanmixError naming file and line; so
    are bytes that are not UTF-8 and a truncated gzip stream.
    """
    path = Path(path)
    number = 0
    with _open_binary(path) as handle:
        try:
            # Bytes decoded line by line, so an invalid byte is reported at its own line.
            for number, raw in enumerate(handle, 1):
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    raise FlanmixError(f"invalid JSON: {err.msg}", file=path, line=number,
                                       expected="one JSON value per line") from None
                except RecursionError:
                    raise FlanmixError("JSON nested too deeply", file=path, line=number) from None
                if objects and not isinstance(value, dict):
                    raise FlanmixError("each line must be a JSON object", file=path, line=number)
                yield number, value
        except UnicodeDecodeError as err:
            raise read_error(path, err, line=number) from None
        except READ_ERRORS as err:  # a damaged gzip stream: decompressed in blocks, so no exact line
            error = read_error(path, err)
            if number:
                error.message += f" after line {number}"
            raise FlanmixError(error.message, file=path, expected=error.expected) from None


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
        except READ_ERRORS as err:
            raise read_error(path, err) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FlanmixError(f"cannot read {what}: invalid JSON: {err.msg}", file=path, line=err.lineno) from None
    except RecursionError:
        raise FlanmixError(f"cannot read {what}: JSON nested too deeply", file=path) from None
