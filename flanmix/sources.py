"""Loading raw rows for a task: bundled generators, local files (through `datasets`), the hub, importer formats.

Every source yields `(example_id, row)` pairs. `example_id` traces a rendered row back to its source row.

A task spec is untrusted input (docs/security.md): `builtin:` names a generator from a closed set (bundled,
registered from Python, or declared by an installed package under the `flanmix.generators` entry point group), and
`files:` stays inside the spec's registry folder unless the user allows more (`--allow-path`, `FLANMIX_ALLOW_PATHS`).
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import pkgutil
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flanmix.core.capacity import check_fits
from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import iter_jsonl, read_json
from flanmix.core.paths import expand_confined
from flanmix.slicing import explode_row
from flanmix.spec import SourceSpec

Generator = Callable[[random.Random], dict]
# Memory a loaded row takes beyond twice its JSON size (its Example, dict and id string): a lower bound, measured
# on the bundled generators, so a source the machine could hold is never refused.
ROW_OVERHEAD_BYTES = 200
_GENERATORS: dict[str, Generator] = {}
ENTRY_POINT_GROUP = "flanmix.generators"
_BUNDLED_NAME = re.compile(r"^([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)$")


def register_generator(name: str, fn: Generator) -> None:
    """Register a row generator under `name` for `source: {builtin: NAME}` (Python registration API)."""
    _GENERATORS[name] = fn


def _bundled(name: str) -> Generator | None:
    """`module.function` of `flanmix/builtin/`: a public function defined in that module, nothing it imports."""
    match = _BUNDLED_NAME.match(name)
    if not match:
        return None
    import flanmix.builtin as package

    module_name, attr = match.groups()
    if module_name not in {m.name for m in pkgutil.iter_modules(package.__path__)}:
        return None
    module = importlib.import_module(f"{package.__name__}.{module_name}")
    fn = getattr(module, attr, None)
    return fn if inspect.isfunction(fn) and fn.__module__ == module.__name__ else None


def _entry_point(name: str, file: str | None) -> Generator | None:
    """A generator an installed package declares under the `flanmix.generators` entry point group."""
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if point.name == name:
            try:
                fn = point.load()
            except Exception as err:  # noqa: BLE001 - a broken plugin can raise anything; name it
                raise FlanmixError(f"generator {name!r} (entry point {point.value}) failed to load: "
                                   f"{type(err).__name__}: {err}", file=file, field="source.builtin") from None
            return fn if callable(fn) else None
    return None


def resolve_generator(name: str, *, file: str | None = None) -> Generator:
    """Find a generator in the closed set a task spec may name: one registered from Python, a bundled
    `module.function`, or an entry point of the `flanmix.generators` group. Nothing else is imported."""
    fn = _GENERATORS.get(name) or _bundled(name) or _entry_point(name, file)
    if fn is None:
        raise FlanmixError(f"unknown generator {name!r}", file=file, field="source.builtin",
                           expected="a bundled generator like 'arithmetic.add', one registered with "
                                    f"flanmix.sources.register_generator, or an entry point of {ENTRY_POINT_GROUP}")
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
        if i == 0:  # preflight from the first row: every row is kept in memory (task splits)
            check_fits(source.examples * (ROW_OVERHEAD_BYTES + 2 * len(_ROW_ENCODER.encode(row))),
                       what=f"task {task_name!r}: {source.examples:,} generated rows", file=file,
                       field="source.examples", expected="fewer examples")
        yield f"{task_name}:{i}", row


def resolve_files(source: SourceSpec, base_dir: Path, file: str | None, *, root: Path | None = None) -> list[Path]:
    """The data files of a `files` source: each pattern (a path or glob, relative to `base_dir`) expanded and
    sorted. A pattern matching nothing or an empty file is a FlanmixError (naming the spec `file` if given).

    With `root` (the registry folder of a spec file) every file must lie inside it or inside a folder of
    `FLANMIX_ALLOW_PATHS`, symlinks resolved; without it (a task registered from Python) files may be anywhere."""
    patterns = [source.files] if isinstance(source.files, str) else list(source.files or [])
    paths = expand_confined(patterns, base_dir, root, field="source.files", what="data file", file=file)
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
                       expected="one of json, jsonl, csv, tsv, parquet, flan_cot_tsv, simple_cot_tsv, niv2")


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


def read_simple_cot_tsv(path: Path) -> Iterator[dict]:
    """A FLAN CoT TSV read as FLAN's `prep.simple_cot_tsv` reads it (the catalog's CoT tasks render byte for byte):
    one row per line, fields split on tabs, `question` and `chain_of_thought` with literal `\\n` turned into
    newlines, `answer` as written, nothing stripped (FLAN keeps e.g. sensemaking's trailing newline); fields after
    the third are ignored, as FLAN ignores them."""
    with open(path, encoding="utf-8", newline="") as handle:
        lines = handle.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline ends the last line
    for lineno, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) < 3:
            raise FlanmixError(f"expected 3 tab-separated fields, got {len(fields)}", file=path, line=lineno,
                               expected="question<TAB>answer<TAB>chain of thought")
        yield {"question": fields[0].replace("\\n", "\n"), "answer": fields[1],
               "chain_of_thought": fields[2].replace("\\n", "\n")}


# The task file's name (FLAN's `task_name`, e.g. task001_quoref_question_generation) on every NIv2 row: provenance,
# not content, so the content-based split (`is_validation`) leaves it out (`flanmix.task`).
NIV2_TASK_FIELD = "task_name"


def read_niv2(path: Path) -> Iterator[dict]:
    """Super-NaturalInstructions task JSON: one row per instance, with the task definition and examples, and the
    task's name (the file's stem) in `task_name`."""
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
               "positive_examples": positives, "negative_examples": negatives, NIV2_TASK_FIELD: path.stem}


_PLAIN_READERS: dict[str, Callable[[Path], Iterator[dict]]] = {
    "flan_cot_tsv": read_flan_cot_tsv,
    "simple_cot_tsv": read_simple_cot_tsv,
    "niv2": read_niv2,
}


def _locate_bad_line(paths: list[Path], fmt: str) -> None:
    """After `datasets` failed on JSON data: raise the first JSON problem with the data file's own line, if any."""
    for path in paths:
        if fmt == "json":
            try:
                read_json(path, what="JSON data file")
                continue
            except FlanmixError as err:
                if "Extra data" not in err.message:  # several values: JSON lines, which `datasets` also reads
                    raise
        if fmt in ("json", "jsonl"):
            for _ in iter_jsonl(path):
                pass


def _load_with_datasets(paths: list[Path], fmt: str, source: SourceSpec, file: str | None) -> list[dict]:
    import datasets  # heavy import, only when files are read

    builder = {"jsonl": "json", "tsv": "csv"}.get(fmt, fmt)
    kwargs: dict[str, Any] = {}
    if fmt == "tsv":
        kwargs["delimiter"] = "\t"
    if source.columns and fmt in ("csv", "tsv"):
        kwargs["column_names"] = source.columns
    # Quiet while reading (no progress bars, no logged second line about a bad file), then as the caller had it:
    # both switches are process-wide.
    bars_were_on = not datasets.are_progress_bars_disabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        dataset = datasets.load_dataset(builder, data_files=[str(p) for p in paths], split="train", **kwargs)
    except Exception as err:  # noqa: BLE001 - datasets raises many types for malformed files
        _locate_bad_line(paths, fmt)  # a JSON error: the data file's own line
        cause = err.__cause__ or err.__context__ or err
        raise FlanmixError(f"cannot read {fmt} data: {type(cause).__name__}: {str(cause).splitlines()[0][:200]}"
                           if str(cause) else f"cannot read {fmt} data: {type(cause).__name__}",
                           file=", ".join(map(str, paths)), field="source.files",
                           expected=f"well-formed {fmt}") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars_were_on:
            datasets.enable_progress_bars()
    if len(dataset) == 0:
        raise FlanmixError("data file has no rows", file=", ".join(map(str, paths)), field="source.files")
    return dataset.to_list()


def iter_source(source: SourceSpec, *, task_name: str, base_dir: Path, file: str | None = None,
                root: Path | None = None) -> Iterator[tuple[str, dict]]:
    """Yield `(example_id, raw_row)` for a task's source; `root` confines data files (see `resolve_files`).

    With `explode`, each row becomes one row per item of its list columns (id `<row id>-<k>`); a hub source's
    split slice then applies to the exploded rows (FLAN slices TFDS splits whose rows are the single items)."""
    if source.explode is None:
        yield from _iter_rows(source, task_name=task_name, base_dir=base_dir, file=file, root=root, sliced=True)
        return
    rows = _iter_rows(source, task_name=task_name, base_dir=base_dir, file=file, root=root, sliced=False)
    exploded = (pair for example_id, row in rows for pair in _explode(example_id, row, source, task_name, file))
    if source.split_slice.whole:
        yield from exploded
        return
    items = list(exploded)
    start, stop = source.split_slice.bounds(len(items))
    if start >= stop:
        raise FlanmixError(f"task {task_name!r}: hub source {source.describe()} has no rows", file=file,
                           field="source.split", expected=f"a slice holding at least one of {len(items)} "
                           "exploded rows")
    yield from items[start:stop]


def _explode(example_id: str, row: dict, source: SourceSpec, task_name: str,
             file: str | None) -> list[tuple[str, dict]]:
    try:
        return [(f"{example_id}-{k}", item) for k, item in enumerate(explode_row(row, source.explode or []))]
    except ValueError as err:
        raise FlanmixError(f"task {task_name!r}, row {example_id}: cannot explode: {err}", file=file,
                           field="source.explode", expected="list columns of equal length in every row") from None


def _iter_rows(source: SourceSpec, *, task_name: str, base_dir: Path, file: str | None, root: Path | None,
               sliced: bool) -> Iterator[tuple[str, dict]]:
    """`(example_id, raw_row)` of a source as stored (a hub split sliced unless `sliced` is false)."""
    if source.kind == "builtin":
        yield from _generate(source, task_name, file)
        return
    if source.kind == "hub":
        from flanmix.hub import hub_rows  # the mirror or `datasets` (flanmix.hub)

        # The position in the whole split: a row keeps its id whichever slice reads it.
        for position, row in hub_rows(source, task_name=task_name, file=file, sliced=sliced):
            yield f"{source.hub}:{source.split_name}:{position}", row
        return
    if source.kind == "repo":  # a repository's files, read from the hub mirror and confined to it
        from flanmix.hub import repo_files_root

        base_dir = root = repo_files_root(source, task_name=task_name, file=file)
    paths = resolve_files(source, base_dir, file, root=root)
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


