"""Exact deduplication and n-gram decontamination of rendered rows.

Dedup keys are a 64-bit hash of the normalized (lower-cased, whitespace-collapsed) input and target, so the key of
a row depends only on its text: a merge can recompute it from the shard files. Decontamination drops a training row
when any of its word n-grams (13 by default, as in GPT-3) also occurs in a named evaluation set.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import iter_jsonl
from flanmix.core.paths import expand_globs

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """Lower-case and collapse whitespace (what 'exact' dedup compares)."""
    return _WS.sub(" ", text.lower()).strip()


def row_key(inputs: str, targets: str) -> int:
    """The dedup key of a row: a 64-bit blake2b of its normalized input and target."""
    text = normalize(inputs) + "\x00" + normalize(targets)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def row_keys(inputs: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """Dedup keys of many rows as a uint64 array."""
    return np.fromiter((row_key(i, t) for i, t in zip(inputs, targets)), dtype=np.uint64, count=len(inputs))


def first_occurrence_mask(keys: np.ndarray) -> np.ndarray:
    """True for the first occurrence of each key (in order)."""
    if len(keys) == 0:
        return np.ones(0, dtype=bool)
    _, first = np.unique(keys, return_index=True)
    mask = np.zeros(len(keys), dtype=bool)
    mask[first] = True
    return mask


class SeenKeys:
    """Keys seen so far across shards, kept as one sorted uint64 array (8 bytes a row, not a Python set)."""

    def __init__(self) -> None:
        self._keys = np.zeros(0, dtype=np.uint64)

    def filter_new(self, keys: np.ndarray) -> np.ndarray:
        """Mask of `keys` not seen before (keys must already be unique among themselves); remembers them."""
        if len(self._keys):
            pos = np.searchsorted(self._keys, keys)
            pos[pos == len(self._keys)] = 0
            new = self._keys[pos] != keys
        else:
            new = np.ones(len(keys), dtype=bool)
        self._keys = np.union1d(self._keys, keys[new])
        return new


# ---------------------------------------------------------------------------------------------- decontamination

def words(text: str) -> list[str]:
    """Lower-cased word tokens used for n-gram overlap."""
    return _WORD.findall(text.lower())


def ngram_hashes(text: str, n: int) -> Iterator[int]:
    """Hashes of the word n-grams of `text` (nothing for a text shorter than n words)."""
    toks = words(text)
    for i in range(len(toks) - n + 1):
        yield hash(" ".join(toks[i:i + n]))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _file_records(path: Path) -> Iterator[Any]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            for _, value in iter_jsonl(path, objects=False):
                yield value
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            # BIG-Bench Hard files carry a canary string that is not evaluation content.
            if isinstance(data, dict):
                data = {k: v for k, v in data.items() if k != "canary"}
            yield data
        elif suffix in (".csv", ".tsv"):
            with open(path, encoding="utf-8", newline="") as handle:
                yield from csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
        else:
            raise FlanmixError(f"cannot read evaluation file {path.name}", file=path, field="decontaminate.files",
                               expected="a .jsonl, .json, .csv or .tsv file")
    except FlanmixError as err:  # a JSONL line that is not JSON: the error names file and line
        raise err.with_context(field="decontaminate.files") from None
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as err:
        raise FlanmixError(f"cannot parse evaluation file: {err}", file=path, field="decontaminate.files") from None


def eval_texts_from_files(patterns: Iterable[str], base_dir: Path) -> tuple[list[str], list[Path]]:
    """All strings in the evaluation files matching `patterns` (relative to `base_dir`), and the files read."""
    texts: list[str] = []
    files: list[Path] = []
    for pattern in patterns:
        for path in expand_globs([pattern], base_dir, field="decontaminate.files", what="evaluation file"):
            if path.is_dir():
                continue
            files.append(path)
            for record in _file_records(path):
                texts.extend(_strings(record))
    return texts, files


def build_ngram_set(texts: Iterable[str], n: int) -> set[int]:
    """The n-gram hashes of evaluation texts."""
    grams: set[int] = set()
    for text in texts:
        grams.update(ngram_hashes(text, n))
    return grams


def contaminated(text: str, grams: set[int], n: int) -> bool:
    """Whether any word n-gram of `text` is in `grams`."""
    return any(h in grams for h in ngram_hashes(text, n))
