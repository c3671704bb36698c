"""YAML loading that keeps line numbers, so a validation error can point at the offending line.

Every YAML file flanmix reads goes through here, with the same bounds: the document is parsed once (libyaml when
present), aliases may not make it grow by more than `MAX_ALIAS_NODES` nodes or its own size (a "billion laughs"
file is refused before anything walks the expanded data), a recursive alias is refused, and every problem is one
`FlanmixError` naming file and line.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from flanmix.core.errors import FlanmixError

ModelT = TypeVar("ModelT", bound=BaseModel)

# Nodes that aliases may add to a document beyond its own (or, for a larger document, as many as it has): shared
# defaults (`<<: *base`) stay far below it, while a 1 kB "billion laughs" file would expand to 10^9 nodes.
MAX_ALIAS_NODES = 100_000

_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 5-10x faster


class _Loader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """SafeLoader that also knows promptsource's `!Template` / `!TemplateMetadata` tags (as plain mappings)."""


def _as_mapping(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("!Template", _as_mapping)
_Loader.add_constructor("!TemplateMetadata", _as_mapping)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_aliases(root: yaml.Node, path: Path | None) -> None:
    """Refuse a document whose aliases expand it by more than `MAX_ALIAS_NODES` nodes (or its own size), or that
    contains itself. Linear in the distinct nodes: each node's expanded size is computed once."""
    sizes: dict[int, int] = {}
    reused: dict[int, yaml.Node] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            continue
        if key in sizes:
            reused[key] = node
            continue
        if key in on_path:
            raise FlanmixError("YAML alias refers to a node that contains it", file=path,
                               line=node.start_mark.line + 1, expected="no recursive aliases")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    unique, expanded = len(sizes), sizes[id(root)]
    limit = unique + max(MAX_ALIAS_NODES, unique)
    if expanded > limit:
        worst = max(reused.values(), key=lambda n: sizes[id(n)])
        shown = f"{expanded:,}" if expanded < 10**12 else "more than 10^12"
        raise FlanmixError(f"YAML aliases expand the document to {shown} nodes (at most {limit:,} allowed; "
                           "the anchor on this line is the largest one reused)", file=path,
                           line=worst.start_mark.line + 1, expected="aliases that do not multiply the document")


def _parse(text: str, path: Path | None) -> tuple[yaml.Node | None, Any]:
    """Compose the node tree once, check its aliases, and construct the data from it."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        if "&" in text:  # no anchor, no alias: skip the walk
            _check_aliases(node, path)
        return node, loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else None
        raise FlanmixError(f"malformed YAML: {err.problem or err}", file=path, line=line,
                           expected="valid YAML") from None
    except yaml.reader.ReaderError as err:
        # Report a control character (a NUL byte, say) by line, not by character offset.
        position = max(0, err.position)
        if _BASE_LOADER is not yaml.SafeLoader:  # libyaml counts bytes, the Python reader characters
            position = len(text.encode("utf-8")[:position].decode("utf-8", errors="ignore"))
        position = min(position, len(text))
        line = text.count("\n", 0, position) + 1
        char = f" (character {ord(text[position]):#04x})" if position < len(text) else ""
        raise FlanmixError(f"malformed YAML: {err.reason}{char}", file=path, line=line,
                           expected="printable text") from None
    except yaml.YAMLError as err:
        raise FlanmixError(f"malformed YAML: {str(err).splitlines()[0]}", file=path, expected="valid YAML") from None
    except RecursionError:
        raise FlanmixError("YAML nested too deeply", file=path, expected="at most a few hundred levels") from None
    finally:
        loader.dispose()


def load_yaml(text: str, *, path: Path | str | None = None) -> Any:
    """The data of one YAML document (no line index kept), with the bounds and errors of `YamlDoc`."""
    return _parse(text, Path(path) if path is not None else None)[1]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FlanmixError("file not found", file=path) from None
    except IsADirectoryError:
        raise FlanmixError("is a folder, not a file", file=path, expected="a YAML file") from None
    except UnicodeDecodeError as err:
        raise FlanmixError(f"cannot read file: not UTF-8 text ({err.reason})", file=path) from None
    except OSError as err:
        raise FlanmixError(f"cannot read file: {err.strerror or err}", file=path) from None


def read_yaml(path: Path | str) -> Any:
    """The data of a YAML file (see `load_yaml`); a missing or unreadable file is a FlanmixError."""
    path = Path(path)
    return load_yaml(_read_text(path), path=path)


class YamlDoc:
    """A parsed YAML document plus its node tree (for line numbers)."""

    def __init__(self, path: Path | str, text: str) -> None:
        self.path = Path(path)
        self.node, self.data = _parse(text, self.path)
        self._keys: dict[int, dict[str, yaml.Node]] = {}  # mapping node -> {key: value node}, built on first use

    @classmethod
    def read(cls, path: Path | str) -> YamlDoc:
        """Read and parse a YAML file; a missing or unreadable file is a FlanmixError."""
        path = Path(path)
        return cls(path, _read_text(path))

    def require_mapping(self, what: str, expected: str) -> YamlDoc:
        """This document, if its top level is a mapping; else one error naming the file (`what`: "a mixture")."""
        if not isinstance(self.data, dict):
            raise FlanmixError(f"{what} must be a YAML mapping", file=self.path, line=1, expected=expected)
        return self

    def _child(self, node: yaml.Node, key: str | int) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode):
            index = self._keys.get(id(node))
            if index is None:
                # Indexed once per mapping, so looking up every field of a large document stays linear; the last of
                # duplicate keys wins, as in the loaded data.
                index = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
                self._keys[id(node)] = index
            return index.get(str(key))
        if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            return node.value[key]
        return None

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """1-based line of the value at `loc` (a pydantic-style path), or of the closest parent that exists."""
        node = self.node
        line = node.start_mark.line + 1 if node is not None else None
        for key in loc:
            node = self._child(node, key)
            if node is None:
                return line
            line = node.start_mark.line + 1
        return line

    def validate(self, model: type[ModelT], data: Any = None, *, prefix: Sequence[str | int] = ()) -> ModelT:
        """Validate `data` (default: the whole document) against a pydantic model, with a file:line error."""
        data = self.data if data is None else data
        try:
            return model.model_validate(data)
        except ValidationError as err:
            raise validation_error(err, path=self.path, line_of=lambda loc: self.line_of([*prefix, *loc]),
                                   prefix=prefix, model=model) from None


def format_loc(loc: Sequence[str | int]) -> str:
    """Render a pydantic location tuple as `a.b[2].c`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _members(annotation: Any) -> list[Any]:
    """The types an annotation allows (Optional, unions and Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        args = typing.get_args(annotation)
        return [m for a in (args[:1] if origin is typing.Annotated else args) for m in _members(a)]
    return [annotation]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def fields_at(model: type[BaseModel] | None, loc: Sequence[str | int]) -> list[str]:
    """The field names (and aliases) of the model(s) found at `loc` inside `model`, for "did you mean" hints."""
    current = [model] if model is not None else []
    for part in loc:
        found: list[Any] = []
        for tp in (m for c in current for m in _members(c)):
            args = typing.get_args(tp)
            if _is_model(tp) and isinstance(part, str) and part in tp.model_fields:
                found.append(tp.model_fields[part].annotation)
            elif _is_model(tp) and part == tp.__name__:  # pydantic's tag for a union member
                found.append(tp)
            elif typing.get_origin(tp) in (list, tuple, Sequence) and isinstance(part, int):
                found.extend(a for a in args if a is not Ellipsis)
            elif typing.get_origin(tp) is dict and len(args) == 2:
                found.append(args[1])
        current = found
    names: list[str] = []
    for tp in (m for c in current for m in _members(c)):
        if _is_model(tp):
            for name, info in tp.model_fields.items():
                names.extend(n for n in (name, info.alias) if n and n not in names)
    return names


def _unknown_key(errors: list[dict], first: dict, loc: list, model: type[BaseModel] | None) -> tuple[str, int]:
    """'unknown key' with the closest known key as a hint, and how many other errors the hint explains (pydantic
    also reports the field the misspelled key was meant to be as missing)."""
    key, parent = str(loc[-1]) if loc else "", list(first["loc"][:-1])
    missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and list(e["loc"][:-1]) == parent]
    hint = difflib.get_close_matches(key, missing, n=1) or difflib.get_close_matches(
        key, [n for n in fields_at(model, loc[:-1]) if n != key], n=1)
    if not hint:
        return "unknown key", 0
    return f"unknown key; did you mean {hint[0]}?", int(hint[0] in missing)


def validation_error(err: ValidationError, *, path: Path | str | None, line_of=None,
                     prefix: Sequence[str | int] = (), model: type[BaseModel] | None = None) -> FlanmixError:
    """Turn a pydantic error into a one-line FlanmixError naming file, line and field.

    An unknown key is reported before the other problems (a misspelled key also makes its field "missing"), with
    the closest known key of `model` as a hint."""
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    # Drop pydantic's union-branch tags (e.g. 'function-after[...]') from the location.
    loc = [p for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function")))]
    kind, explained = first["type"], 0
    if kind == "extra_forbidden":
        message, explained = _unknown_key(errors, first, loc, model)
    elif kind == "missing":
        message = "required field is missing"
    else:
        message = first["msg"]
    more = len(errors) - 1 - explained
    if more:
        message += f" (+{more} more problem{'s' if more > 1 else ''})"
    line = line_of(loc) if line_of else None
    return FlanmixError(message, file=path, line=line, field=format_loc([*prefix, *loc]) or None)


def load_yaml_model(path: str | Path, model: type[ModelT]) -> ModelT:
    """Read a YAML file and validate it against `model`; errors name file, line and field."""
    return YamlDoc.read(path).validate(model)


def validate_mapping(data: Any, model: type[ModelT], *, source: str | Path | None = None) -> ModelT:
    """Validate an in-memory mapping (no line numbers to give) with the same one-line error as a YAML file."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_error(err, path=source, model=model) from None
