"""Read FLAN's template tables (`templates.py`, `flan_templates_branched.py`, the Flan 2021 `templates.py`) as data.

The files are evaluated by `flan_eval`'s closed evaluator, never imported or run, in FLAN's own order and with
Python's semantics. That matters: importing FLAN's `templates.py` mutates the branched module's lists in place
(`PATTERNS_NO_OPTIONS.update(flan_templates.PATTERNS)` puts those very lists in the no-options table, whose replace
loop then rewrites them), aliased keys share one list, and the few-shot no-options loop mutates deep copies that
keep deepcopy's aliasing. `FlanTables.patterns_no_options` and `fewshot_patterns_no_options` are therefore exactly
what FLAN derives, and `branched_patterns` is the branched file's wording as written (read before `templates.py`
mutates it).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from flanmix.core.errors import FlanmixError
from flanmix.importers.flan_eval import EXPECTED, Budget, DataclassDef, Instance, Module, evaluate

Pair = tuple[str, str]

# File name -> its role. In FLAN's repository the Flan 2021 file is `flan/templates.py`; the shared data folder
# calls it `flan2021_templates.py` so that it can sit next to the v2 `templates.py`.
FILE_ROLES = {"templates.py": "templates", "flan_templates_branched.py": "branched",
              "flan2021_templates.py": "flan2021"}
BRANCHED_MODULE = "flan.v2.flan_templates_branched"
MAX_FILE_BYTES = 4 << 20
# Python's parser needs ~0.5 KB per AST node, so the number of tokens is capped before parsing (FLAN's templates.py
# has ~42k by the count below, which over-counts comments and triple-quoted strings).
MAX_TOKENS = 250_000
MAX_DEPTH = 100  # AST nesting: the evaluator recurses along the tree, so it is bounded here, before evaluation
_TOKEN = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|\w+|[^\s\w]""")


@dataclass(frozen=True)
class FewShotPatternData:
    """One FLAN `FewShotPattern`, every field resolved (the class's defaults filled in)."""

    inputs: str
    targets: str
    inputs_prefix: str
    targets_prefix: str
    x_y_delimiter: str
    example_separator: str
    final_suffix: str
    input_pattern: str
    in_template_mix: bool


FEWSHOT_FIELDS = tuple(f.name for f in fields(FewShotPatternData))


@dataclass(frozen=True)
class KeySource:
    """Where a key's list is written: file, line of the list literal, line of each item, and the earlier key it
    shares its list with (an alias such as `PATTERNS["wiki_dialog"] = PATTERNS["predict_next_turn_dialog"]`)."""

    file: str
    line: int
    item_lines: tuple[int, ...]
    alias_of: str | None = None


@dataclass(frozen=True)
class FlanTables:
    """FLAN's template tables as plain, immutable Python data (tables keep FLAN's key order)."""

    patterns: dict[str, tuple[Pair, ...]]
    patterns_no_options: dict[str, tuple[Pair, ...]]
    branched_patterns: dict[str, tuple[Pair, ...]]
    fewshot_patterns: dict[str, tuple[FewShotPatternData, ...]]
    fewshot_patterns_no_options: dict[str, tuple[FewShotPatternData, ...]]
    inline_fs_patterns: dict[str, tuple[Pair, ...]]
    opt_start_strings: tuple[str, ...]
    opt_item_names: tuple[tuple[str, ...], ...]
    opt_item_end_strings: tuple[tuple[str, ...], ...]
    dialog_start_strings: tuple[str, ...]
    dialog_item_names: tuple[tuple[str, ...], ...]
    dialog_item_end_strings: tuple[tuple[str, ...], ...]
    fewshot_defaults: dict[str, Any]  # FewShotPattern's field defaults as its class body declares them
    flan2021_patterns: dict[str, tuple[Pair, ...]] | None  # None when the Flan 2021 file was not given
    sources: dict[str, dict[str, KeySource]]  # table name (a field above) -> key -> where its list is written
    files: dict[str, str]  # role (templates, branched, flan2021) -> path read

    def aliases(self, table: str, key: str) -> list[str]:
        """Every key of `table` that shares `key`'s list (itself included), in table order."""
        sources = self.sources[table]
        root = sources[key].alias_of or key
        return [k for k, src in sources.items() if k == root or src.alias_of == root]


def flan_key_slug(key: str) -> str:
    """A FLAN key as a file/template-set name: lower-cased, every character outside `[a-z0-9_]` replaced by `_`."""
    return re.sub(r"[^a-z0-9_]", "_", key.lower())


def locate_files(src: Path | str | Sequence[Path | str]) -> dict[str, Path]:
    """role -> file, from a folder holding FLAN's files or from a list of files named as in `FILE_ROLES`."""
    if isinstance(src, (str, Path)) and Path(src).is_dir():
        found = {role: Path(src) / name for name, role in FILE_ROLES.items() if (Path(src) / name).is_file()}
    else:
        paths = [Path(src)] if isinstance(src, (str, Path)) else [Path(p) for p in src]
        found = {}
        for path in paths:
            if path.name not in FILE_ROLES:
                raise FlanmixError("not a FLAN template file name", file=path, expected=" or ".join(FILE_ROLES))
            if not path.is_file():
                raise FlanmixError("file not found", file=path, expected="a FLAN template file")
            found[FILE_ROLES[path.name]] = path
    if "templates" not in found:
        raise FlanmixError("FLAN's templates.py not found", file=src if isinstance(src, (str, Path)) else None,
                           expected="a folder or files including templates.py and flan_templates_branched.py")
    return found


def parse_file(path: Path) -> ast.Module:
    """Parse a FLAN file (size-capped, UTF-8) into an AST no deeper than `MAX_DEPTH`; nothing is compiled or run."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FlanmixError(f"file is {size:,} bytes, over the {MAX_FILE_BYTES:,} limit", file=path)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise FlanmixError(f"cannot read FLAN template file: {err}", file=path) from None
    tokens = sum(1 for _ in _TOKEN.finditer(text))
    if tokens > MAX_TOKENS:
        raise FlanmixError(f"about {tokens:,} tokens, over the {MAX_TOKENS:,} limit", file=path, expected=EXPECTED)
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as err:
        raise FlanmixError(f"Python syntax error: {err.msg}", file=path, line=err.lineno) from None
    except (ValueError, RecursionError, MemoryError) as err:
        raise FlanmixError(f"cannot parse ({type(err).__name__}): nesting too deep", file=path,
                           line=_longest_statement(text), expected=EXPECTED) from None
    stack = [(tree, 0, 1)]
    while stack:  # iterative, so a deep tree cannot exhaust the stack here
        node, depth, line = stack.pop()
        line = getattr(node, "lineno", line)
        if depth > MAX_DEPTH:
            raise FlanmixError(f"nesting deeper than {MAX_DEPTH} levels", file=path, line=line, expected=EXPECTED)
        stack.extend((child, depth + 1, line) for child in ast.iter_child_nodes(node))
    return tree


def _longest_statement(text: str) -> int | None:
    """The first line of the statement with the most tokens: where a parse too deep for Python's parser failed."""
    best, start, count, line = 0, None, 0, None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            start = tok.start[0] if start is None else start
            count += 1
            if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                if count > best:
                    best, line = count, start
                start, count = None, 0
    except (tokenize.TokenError, SyntaxError):
        return line
    return line



def evaluate_file(path: Path | str, budget: Budget, importable: dict[str, Module] | None = None) -> dict[str, Any]:
    """The top-level names of one FLAN template file: parsed, depth-checked, then evaluated (never imported or run)."""
    path = Path(path)
    return evaluate(parse_file(path), path, budget, importable)


def read_flan_tables(src: Path | str | Sequence[Path | str]) -> FlanTables:
    """Read FLAN's tables from a folder (or files) holding `templates.py`, `flan_templates_branched.py` and
    optionally `flan2021_templates.py`. Raises a one-line `FlanmixError` (file:line, construct) for anything the
    closed evaluator does not accept; nothing in the files is executed."""
    files = locate_files(src)
    budget = Budget()
    keyed: dict[str, tuple[dict, dict[str, KeySource]]] = {}
    importable: dict[str, Module] = {}
    if "branched" in files:  # without it, templates.py's import of it is refused with a clear message
        branched = evaluate_file(files["branched"], budget)
        # Snapshot (immutable pairs) before templates.py rewrites these very lists in place.
        keyed["branched_patterns"] = _Reader(files["branched"], branched, budget).pairs("PATTERNS")
        importable[BRANCHED_MODULE] = Module("flan_templates_branched", branched)
    names = evaluate_file(files["templates"], budget, importable)
    v2 = _Reader(files["templates"], names, budget)
    fewshot_cls = names.get("FewShotPattern")
    if not isinstance(fewshot_cls, DataclassDef):
        raise FlanmixError("no @dataclass FewShotPattern", file=files["templates"], expected="FLAN's templates.py")
    if set(fewshot_cls.fields) != set(FEWSHOT_FIELDS):
        raise FlanmixError(f"FewShotPattern has fields {sorted(fewshot_cls.fields)}", file=files["templates"],
                           line=fewshot_cls.line, expected=", ".join(FEWSHOT_FIELDS))
    keyed["patterns"] = v2.pairs("PATTERNS")
    keyed["patterns_no_options"] = v2.pairs("PATTERNS_NO_OPTIONS")
    keyed["fewshot_patterns"] = v2.fewshot("FEWSHOT_PATTERNS", fewshot_cls)
    keyed["fewshot_patterns_no_options"] = v2.fewshot("FEWSHOT_PATTERNS_NO_OPTIONS", fewshot_cls)
    keyed["inline_fs_patterns"] = v2.pairs("INLINE_FS_PATTERNS")
    if "flan2021" in files:
        keyed["flan2021_patterns"] = _Reader(files["flan2021"], evaluate_file(files["flan2021"], budget),
                                             budget).pairs("PATTERNS")
    tables = {name: table for name, (table, _) in keyed.items()}
    return FlanTables(
        patterns=tables["patterns"], patterns_no_options=tables["patterns_no_options"],
        branched_patterns=tables["branched_patterns"], fewshot_patterns=tables["fewshot_patterns"],
        fewshot_patterns_no_options=tables["fewshot_patterns_no_options"],
        inline_fs_patterns=tables["inline_fs_patterns"],
        opt_start_strings=v2.strings("OPT_START_STRING_CANDIDATES"),
        opt_item_names=v2.string_lists("OPT_ITEM_NAME_CANDIDATES"),
        opt_item_end_strings=v2.string_lists("OPT_ITEM_END_STR_CANDIDATES"),
        dialog_start_strings=v2.strings("DIALOG_START_STRING_CANDIDATES"),
        dialog_item_names=v2.string_lists("DIALOG_ITEM_NAME_CANDIDATES"),
        dialog_item_end_strings=v2.string_lists("DIALOG_ITEM_END_STR_CANDIDATES"),
        fewshot_defaults=fewshot_cls.defaults(), flan2021_patterns=tables.get("flan2021_patterns"),
        sources={name: src for name, (_, src) in keyed.items()},
        files={role: str(path) for role, path in files.items()})


class _Reader:
    """Checks the shape of one file's evaluated tables and turns them into immutable data with their sources."""

    def __init__(self, file: Path, names: dict[str, Any], budget: Budget) -> None:
        self.file, self.names, self.budget = file, names, budget

    def _get(self, name: str, kind: type) -> Any:
        value = self.names.get(name)
        if not isinstance(value, kind):
            raise FlanmixError(f"{name} is {'missing' if value is None else 'a ' + type(value).__name__}",
                               file=self.file, expected=f"a {kind.__name__} as in FLAN's files")
        return value

    def _keyed(self, name: str, item: Any) -> tuple[dict[str, tuple], dict[str, KeySource]]:
        """name -> {key: checked items}, {key: source}; `item(value, where)` checks and converts one item."""
        table = self._get(name, dict)
        out: dict[str, tuple] = {}
        sources: dict[str, KeySource] = {}
        first_key: dict[int, str] = {}
        for key, items in table.items():
            if not isinstance(key, str) or not isinstance(items, list):
                raise FlanmixError(f"{name}[{key!r}] is not a list", file=self.file, expected="a list per key")
            origin = self.budget.origin_of(items)
            lines = origin.item_lines if origin else ()
            out[key] = tuple(item(value, f"{name}[{key!r}][{i}]", lines[i] if i < len(lines) else None)
                             for i, value in enumerate(items))
            alias = first_key.setdefault(id(items), key)
            sources[key] = KeySource(origin.file if origin else str(self.file), origin.line if origin else 0, lines,
                                     alias if alias != key else None)
        return out, sources

    def _fail(self, where: str, line: int | None, what: str) -> FlanmixError:
        return FlanmixError(f"{where} is not {what}", file=self.file, line=line, expected="FLAN's table layout")

    def pairs(self, name: str) -> tuple[dict[str, tuple[Pair, ...]], dict[str, KeySource]]:
        def pair(value: Any, where: str, line: int | None) -> Pair:
            if not (isinstance(value, tuple) and len(value) == 2 and all(isinstance(s, str) for s in value)):
                raise self._fail(where, line, "an (input, target) pair of strings")
            return value
        return self._keyed(name, pair)

    def fewshot(self, name: str, cls: DataclassDef) -> tuple[dict[str, tuple[FewShotPatternData, ...]],
                                                             dict[str, KeySource]]:
        def pattern(value: Any, where: str, line: int | None) -> FewShotPatternData:
            if not isinstance(value, Instance) or value.cls is not cls:
                raise self._fail(where, line, f"a {cls.name}")
            data = {k: value.values[k] for k in FEWSHOT_FIELDS}
            if any(not isinstance(v, bool if k == "in_template_mix" else str) for k, v in data.items()):
                raise self._fail(where, line, f"a {cls.name} with string fields and a boolean in_template_mix")
            return FewShotPatternData(**data)
        return self._keyed(name, pattern)

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._get(name, list)
        if not all(isinstance(s, str) for s in value):
            raise self._fail(name, None, "a list of strings")
        return tuple(value)

    def string_lists(self, name: str) -> tuple[tuple[str, ...], ...]:
        value = self._get(name, list)
        if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in value):
            raise self._fail(name, None, "a list of lists of strings")
        return tuple(tuple(v) for v in value)
