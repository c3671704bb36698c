"""YAML loading that keeps line numbers, so a validation error can point at the offending line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from flanmix.core.errors import FlanmixError

ModelT = TypeVar("ModelT", bound=BaseModel)


_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 5-10x faster


class _Loader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """SafeLoader that also knows promptsource's `!Template` / `!TemplateMetadata` tags (as plain mappings)."""


def _as_mapping(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("!Template", _as_mapping)
_Loader.add_constructor("!TemplateMetadata", _as_mapping)


class YamlDoc:
    """A parsed YAML document plus its node tree (for line numbers)."""

    def __init__(self, path: Path | str, text: str) -> None:
        self.path = Path(path)
        try:
            self.node = yaml.compose(text, Loader=_Loader)
            self.data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
        except yaml.MarkedYAMLError as err:
            line = err.problem_mark.line + 1 if err.problem_mark else None
            raise FlanmixError(f"malformed YAML: {err.problem or err}", file=self.path, line=line,
                               expected="valid YAML") from None
        except yaml.YAMLError as err:
            raise FlanmixError(f"malformed YAML: {err}", file=self.path, expected="valid YAML") from None

    @classmethod
    def read(cls, path: Path | str) -> YamlDoc:
        """Read and parse a YAML file; a missing or unreadable file is a FlanmixError."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FlanmixError("file not found", file=path) from None
        except (OSError, UnicodeDecodeError) as err:
            raise FlanmixError(f"cannot read file: {err}", file=path) from None
        return cls(path, text)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """1-based line of the value at `loc` (a pydantic-style path), or of the closest parent that exists."""
        node = self.node
        line = node.start_mark.line + 1 if node is not None else None
        for key in loc:
            if isinstance(node, yaml.MappingNode):
                match = next((v for k, v in node.value if getattr(k, "value", None) == str(key)), None)
                if match is None:
                    # An unknown key is reported at the key itself when present.
                    return line
                node = match
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
            else:
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
                                   prefix=prefix) from None


def format_loc(loc: Sequence[str | int]) -> str:
    """Render a pydantic location tuple as `a.b[2].c`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_error(err: ValidationError, *, path: Path | str | None, line_of=None,
                     prefix: Sequence[str | int] = ()) -> FlanmixError:
    """Turn the first pydantic error into a one-line FlanmixError naming file, line and field."""
    first = err.errors()[0]
    # Drop pydantic's union-branch tags (e.g. 'function-after[...]') from the location.
    loc = [p for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function")))]
    kind = first["type"]
    if kind == "extra_forbidden":
        message, expected = "unknown key", None
    elif kind == "missing":
        message, expected = "required field is missing", None
    else:
        message, expected = first["msg"], None
    more = len(err.errors()) - 1
    if more:
        message += f" (+{more} more problem{'s' if more > 1 else ''})"
    line = line_of(loc) if line_of else None
    return FlanmixError(message, file=path, line=line, field=format_loc([*prefix, *loc]) or None,
                        expected=expected)


def load_yaml_model(path: str | Path, model: type[ModelT]) -> ModelT:
    """Read a YAML file and validate it against `model`; errors name file, line and field."""
    return YamlDoc.read(path).validate(model)


def validate_mapping(data: Any, model: type[ModelT], *, source: str | Path | None = None) -> ModelT:
    """Validate an in-memory mapping (no line numbers to give) with the same one-line error as a YAML file."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_error(err, path=source) from None
