"""Loading raw rows for a task: bundled generators, local files (through `datasets`), the hub, importer formats.

Every source yields `(example_id, row)` pairs. `example_id` traces a rendered row back to its source row.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import read_json
from flanmix.core.paths import expand_globs
from flanmix.spec import SourceSpec

Generator = Callable[[random.Random], dict]
_GENERATORS: dict[str, Generator] = {}


def register_generator(name: str, fn: Generator) -> None:
    """Register a row generator under `name` for `source: {builtin: NAME}` (Python registration API)."""
    _GENERATORS[name] = fn


def resolve_generator(name: str, *, file: str | None = None) -> Generator:
    """Find a generator: registered name, bundled `cluster.function`, or `package.module:function`."""
    if name in _GENERATORS:
        return _GENERATORS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
    else:
        module_name, _, attr = name.rpartition(".")
        module_name = f"flanmix.builtin.{module_name}"
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise FlanmixError(f"unknown generator {name!r}", file=file, field="source.builtin",
                           expected="a bundled generator like 'arithmetic.add' or 'package.module:function'"
                           ) from None
    if not callable(fn):
        raise FlanmixError(f"{name!r} is not callable", file=file, field="source.builtin")
    return fn


def _generate(source: SourceSpec, task_name: str, file: str | None) -> Iterator[tuple[str, dict]]:
    fn = resolve_generator(source.builtin or "", file=file)
    rng = random.Random(f"{source.seed}:{task_name}")
    for i in range(source.examples):
        try:
            row = fn(rng)
        except FlanmixError:
            raise
        except Exception as err:  # noqa: BLE001 - a user's generator can raise anything; name the task and row
            raise FlanmixError(f"task {task_name!r}, row {task_name}:{i}: generator {source.builtin!r} failed: "
                               f"{type(err).__name__}: {err}", file=file, field="source.builtin") from None
        yield f"{task_name}:{i}", row


def resolve_files(source: SourceSpec, base_dir: Path, file: str | None) -> list[Path]:
    """The data files of a `files` source: each pattern (a path or glob, relative to `base_dir`) expanded and
    sorted. A pattern matching nothing or an empty file is a FlanmixError (naming the spec `file` if given)."""
    patterns = [source.files] if isinstance(source.files, str) else list(source.files or [])
    paths = expand_globs(patterns, base_dir, field="source.files", what="data file", file=file)
    for path in paths:
        if path.stat().st_size == 0:
            raise FlanmixError("data file is empty", file=path, field="source.files", expected="at least one row")
    return paths


def _infer_format(path: Path) -> str:
    suffixes = "".join(path.suffixes[-2:]).lower()
    for fmt in ("jsonl", "json", "csv", "tsv", "parquet"):
        if suffixes.endswith("." + fmt) or suffixes.endswith(f".{fmt}.gz"):
            return fmt
    raise FlanmixError(f"cannot infer the format of {path.name}", file=path, field="source.format",
                       expected="one of json, jsonl, csv, tsv, parquet, flan_cot_tsv, niv2")


def read_flan_cot_tsv(path: Path) -> Iterator[dict]:
    """Flan CoT TSV: no header, question | answer | rationale, with literal `\\n` escapes in the text."""
    with open(path, encoding="utf-8", newline="") as handle:
        for lineno, fields in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not fields:
                continue
            if len(fields) != 3:
                raise FlanmixError(f"expected 3 tab-separated fields, got {len(fields)}", file=path, line=lineno,
                                   expected="question<TAB>answer<TAB>rationale")
            question, answer, rationale = (f.replace("\\n", "\n").strip() for f in fields)
            yield {"question": question, "answer": answer, "rationale": rationale}


def read_niv2(path: Path) -> Iterator[dict]:
    """Super-NaturalInstructions task JSON: one row per instance, with the task definition and examples."""
    data = read_json(path, what="Super-NaturalInstructions task")
    if not isinstance(data, dict) or not isinstance(data.get("Instances"), list):
        raise FlanmixError("not a Super-NaturalInstructions task", file=path, field="Instances",
                           expected="a JSON object with an Instances list")
    definition = data.get("Definition") or [""]
    definition = definition[0] if isinstance(definition, list) else str(definition)
    positives = [{"input": ex.get("input", ""), "output": ex.get("output", ""),
                  "explanation": ex.get("explanation", "")} for ex in data.get("Positive Examples") or []]
    negatives = [{"input": ex.get("input", ""), "output": ex.get("output", ""),
                  "explanation": ex.get("explanation", "")} for ex in data.get("Negative Examples") or []]
    for index, instance in enumerate(data["Instances"]):
        outputs = instance.get("output")
        if isinstance(outputs, str):
            outputs = [outputs]
        if not outputs:
            raise FlanmixError("instance has no output", file=path, field=f"Instances[{index}].output",
                               expected="a non-empty list of strings")
        yield {"id": instance.get("id", f"{path.stem}-{index}"), "input": instance.get("input", ""),
               "output": outputs[0], "outputs": list(outputs), "definition": definition,
               "positive_examples": positives, "negative_examples": negatives}


_PLAIN_READERS: dict[str, Callable[[Path], Iterator[dict]]] = {
    "flan_cot_tsv": read_flan_cot_tsv,
    "niv2": read_niv2,
}


def _load_with_datasets(paths: list[Path], fmt: str, source: SourceSpec, file: str | None) -> list[dict]:
    import datasets  # heavy import, only when files are read

    builder = {"jsonl": "json", "tsv": "csv"}.get(fmt, fmt)
    kwargs: dict[str, Any] = {}
    if fmt == "tsv":
        kwargs["delimiter"] = "\t"
    if source.columns and fmt in ("csv", "tsv"):
        kwargs["column_names"] = source.columns
    # Quiet while reading, then as the caller had it (the switch is process-wide).
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        dataset = datasets.load_dataset(builder, data_files=[str(p) for p in paths], split="train", **kwargs)
    except Exception as err:  # noqa: BLE001 - datasets raises many types for malformed files
        raise FlanmixError(f"cannot read {fmt} data: {type(err).__name__}: {str(err).splitlines()[0][:200]}",
                           file=", ".join(map(str, paths)), field="source.files",
                           expected=f"well-formed {fmt}") from None
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    if len(dataset) == 0:
        raise FlanmixError("data file has no rows", file=", ".join(map(str, paths)), field="source.files")
    return dataset.to_list()


def _load_hub(source: SourceSpec, file: str | None) -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(source.hub, source.config, split=source.split, revision=source.revision)
    except Exception as err:  # noqa: BLE001
        raise FlanmixError(f"cannot load hub dataset {source.describe()}: {type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200] if str(err) else ''}", file=file, field="source.hub",
                           expected="a dataset available offline (HF_HUB_OFFLINE) or reachable hub") from None
    return dataset.to_list()


def iter_source(source: SourceSpec, *, task_name: str, base_dir: Path, file: str | None = None
                ) -> Iterator[tuple[str, dict]]:
    """Yield `(example_id, raw_row)` for a task's source."""
    if source.kind == "builtin":
        yield from _generate(source, task_name, file)
        return
    if source.kind == "hub":
        for index, row in enumerate(_load_hub(source, file)):
            yield f"{source.hub}:{source.split}:{index}", row
        return
    paths = resolve_files(source, base_dir, file)
    fmt = source.format or _infer_format(paths[0])
    if fmt in _PLAIN_READERS:
        for path in paths:
            for index, row in enumerate(_PLAIN_READERS[fmt](path)):
                yield (str(row["id"]) if fmt == "niv2" else f"{path.name}:{index}"), row
        return
    rows = _load_with_datasets(paths, fmt, source, file)
    label = paths[0].name if len(paths) == 1 else f"{paths[0].parent.name}/*"
    for index, row in enumerate(rows):
        yield f"{label}:{index}", row


# The same encoding as json.dumps(row, sort_keys=True, default=str), without building an encoder per row.
_ROW_ENCODER = json.JSONEncoder(sort_keys=True, default=str)


def is_validation(row: dict, fraction: float) -> bool:
    """Content-based split: identical rows always land on the same side, so held-out rows never leak."""
    if fraction <= 0:
        return False
    digest = hashlib.blake2b(_ROW_ENCODER.encode(row).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def stable_seed(*parts: Any) -> int:
    """A 64-bit seed derived from any parts (seed, task, example id, template index, ...)."""
    text = "\x1f".join(map(str, parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


