"""Resource limits for the template sandbox: templates and data are untrusted (docs/security.md), so a render may
neither allocate without bound nor run without end.

Jinja's `SandboxedEnvironment` stops attribute escapes but not `{{ 'a' * 10**9 }}`, `{{ 'a' | center(10**9) }}`,
`{{ 9 ** 999999999 }}`, `lipsum(n=100000)` or two nested `range(99999)` loops. `LimitedSandbox` adds:

- every operation that could build a large value (`*`, `**`, `+`, `%` and `~` on strings, lists and numbers;
  `center`, `indent`, `format`, `join`, `replace`, `batch`, `slice`, `lipsum`; `str.center/ljust/rjust/zfill/
  expandtabs/format/join/replace`) is sized before it runs and refused when its result would exceed `max_chars`;
- every `{% for %}` loop checks the render's deadline (`max_seconds` after its first loop) on each iteration;
- a rendered text longer than `max_chars` is refused (`concat`).

A limit that is hit raises a `FlanmixError` naming the limit; `templates.Compiled` adds the template's file, line
and field. Both limits are generous and configurable through `FLANMIX_TEMPLATE_MAX_CHARS` and
`FLANMIX_TEMPLATE_MAX_SECONDS` (read when the environment is made).
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.nodes as nodes
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from flanmix.core.errors import FlanmixError

MAX_CHARS_ENV = "FLANMIX_TEMPLATE_MAX_CHARS"
MAX_SECONDS_ENV = "FLANMIX_TEMPLATE_MAX_SECONDS"
DEADLINE_VARIABLE = "_flanmix_deadline"
# Digits of an integer a template may compute: numbers in prompts are small, and 9 ** 9999999 takes seconds.
MAX_INT_DIGITS = 100_000
_LOOP_FILTER = "_flanmix_loop"
_CONCAT_FILTER = "_flanmix_concat"
# Widths and precisions in %-format and str.format specs ("%0999999999d", "{:>999999999}").
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*?:[^{}]*?(\d+)(?:\.(\d+))?[^{}]*\}")


@dataclass(frozen=True)
class Limits:
    """Per-render limits: characters of any value a template builds (and of its output), seconds of looping."""

    max_chars: int = 10_000_000
    max_seconds: float = 10.0

    @classmethod
    def from_env(cls) -> Limits:
        """Defaults, overridden by `FLANMIX_TEMPLATE_MAX_CHARS` / `FLANMIX_TEMPLATE_MAX_SECONDS`."""
        try:
            chars = int(os.environ.get(MAX_CHARS_ENV) or cls.max_chars)
            seconds = float(os.environ.get(MAX_SECONDS_ENV) or cls.max_seconds)
        except ValueError:
            raise FlanmixError("template limits must be numbers", field=f"{MAX_CHARS_ENV} / {MAX_SECONDS_ENV}",
                               expected="e.g. 10000000 and 10") from None
        if chars < 1 or not seconds > 0:
            raise FlanmixError("template limits must be positive", field=f"{MAX_CHARS_ENV} / {MAX_SECONDS_ENV}")
        return cls(chars, seconds)


def _size(value: Any) -> int | None:
    """Characters (or items) of a sized value; None for numbers and other values that are not sequences."""
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _int_bits(value: Any) -> int:
    return abs(int(value)).bit_length() if isinstance(value, int) and not isinstance(value, bool) else 0


class _Bounded(NodeTransformer):
    """Route loops and `~` through the sandbox's checks: each `{% for %}` iterable through the loop filter, each
    concatenation through the concat filter."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 - NodeTransformer's naming
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _LOOP_FILTER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), _CONCAT_FILTER, [], [], None, None,
                            lineno=node.lineno)


class LimitedSandbox(SandboxedEnvironment):
    """The sandbox with limits on the size of every value a template builds and on the time its loops run."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *, limits: Limits | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.limits = limits or Limits.from_env()
        self.filters[_LOOP_FILTER] = self._loop
        self.filters[_CONCAT_FILTER] = self._concat
        guards: dict[str, Callable[..., None]] = {
            "center": lambda value, width=80, *a, **k: self._check_chars(_width(width), "center"),
            "indent": self._check_indent, "format": self._check_format, "batch": self._check_batch,
            "slice": self._check_slice, "replace": self._check_replace,
        }
        for name, check in guards.items():
            self.filters[name] = _guarded(self.filters[name], check)
        self.filters["join"] = self._guarded_join(self.filters["join"])
        self.globals["lipsum"] = self._guarded_lipsum(self.globals["lipsum"])

    # ------------------------------------------------------------------------------------------ checks
    def _check_chars(self, chars: int, what: str) -> None:
        if chars > self.limits.max_chars:
            raise FlanmixError(f"{what} would build {chars:,} characters or items, more than the template limit of "
                               f"{self.limits.max_chars:,}", expected=f"smaller values (or raise {MAX_CHARS_ENV})")

    def _refuse_number(self, what: str) -> None:
        raise FlanmixError(f"{what} would compute a number of more than {MAX_INT_DIGITS:,} digits",
                           expected="numbers of a reasonable size")

    def _check_spec(self, spec: str, what: str) -> None:
        """Widths and precisions of a %-format or str.format string, before it is applied."""
        for match in (*_PERCENT_SPEC.finditer(spec), *_BRACE_SPEC.finditer(spec)):
            for number in match.groups():
                if number == "*":
                    raise FlanmixError(f"{what}: '*' widths are not allowed in templates", expected="fixed widths")
                if number and (len(number) > 12 or int(number) > self.limits.max_chars):
                    self._check_chars(10**12 if len(number) > 12 else int(number), what)

    def _check_indent(self, s: Any, width: Any = 4, *args: Any, **kwargs: Any) -> None:
        lines = str(s).count("\n") + 1
        self._check_chars(len(str(s)) + lines * _width(width), "indent")

    def _check_format(self, value: Any, *args: Any, **kwargs: Any) -> None:
        self._check_spec(str(value), "format")

    def _check_batch(self, value: Any, linecount: Any = 0, fill_with: Any = None, *args: Any, **kwargs: Any) -> None:
        if fill_with is not None:
            self._check_chars(_width(linecount), "batch")

    def _check_slice(self, value: Any, slices: Any = 0, *args: Any, **kwargs: Any) -> None:
        self._check_chars(_width(slices), "slice")

    def _check_replace(self, s: Any, old: Any = "", new: Any = "", count: Any = None, *a: Any, **k: Any) -> None:
        s, old, new = str(s), str(old), str(new)
        hits = len(s) + 1 if old == "" else s.count(old)
        if count is not None and isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        self._check_chars(len(s) + hits * max(0, len(new) - len(old)), "replace")

    def _guarded_join(self, original: Callable) -> Callable:
        @functools.wraps(original)
        def join(eval_ctx: Any, value: Iterable, d: str = "", attribute: Any = None) -> Any:
            items = value if isinstance(value, Sized) else list(value)
            if attribute is None:
                self._check_chars(sum(len(str(v)) for v in items) + len(str(d)) * len(items), "join")
            return original(eval_ctx, items, d, attribute)

        return join

    def _guarded_lipsum(self, original: Callable) -> Callable:
        @functools.wraps(original)
        def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
            self._check_chars(_width(n) * _width(max) * 12, "lipsum")
            return original(n, html, min, max)

        return lipsum

    # ------------------------------------------------------------------------------------------ hooks
    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Size `*`, `**`, `+` and `%` before they run."""
        if operator == "*":
            size, count = (_size(left), right) if _size(left) is not None else (_size(right), left)
            if size is not None and isinstance(count, int):
                self._check_chars(size * max(0, count), "'*'")
            elif (_int_bits(left) + _int_bits(right)) * 0.302 > MAX_INT_DIGITS:  # log10(2) digits per bit
                self._refuse_number("'*'")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                if right * math.log10(abs(left)) > MAX_INT_DIGITS:
                    self._refuse_number("'**'")
        elif operator == "+":
            if _size(left) is not None and _size(right) is not None:
                self._check_chars(_size(left) + _size(right), "'+'")
        elif operator == "%" and isinstance(left, str):
            self._check_spec(left, "'%'")
        result = super().call_binop(context, operator, left, right)
        if operator == "%" and isinstance(result, str):
            self._check_chars(len(result), "'%'")
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        """Size the str methods that build large strings before they run."""
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            if name in ("center", "ljust", "rjust", "zfill") and args:
                __self._check_chars(_width(args[0]), f"str.{name}")
            elif name == "expandtabs":
                size = kwargs.get("tabsize", args[0] if args else 8)
                __self._check_chars(len(owner) + owner.count("\t") * _width(size), "str.expandtabs")
            elif name in ("format", "format_map"):
                __self._check_spec(owner, f"str.{name}")
            elif name == "replace" and len(args) >= 2:
                __self._check_replace(owner, *args[:3])
            elif name == "join" and args:
                items = args[0] if isinstance(args[0], Sized) else list(args[0])
                __self._check_chars(sum(len(str(v)) for v in items) + len(owner) * len(items), "str.join")
                args = (items, *args[1:])
        return super().call(__context, __obj, *args, **kwargs)

    def concat(self, pieces: Iterable[str]) -> str:  # type: ignore[override]
        """Join a render's output, refusing it once it passes `max_chars` (before joining the rest)."""
        out: list[str] = []
        total, limit = 0, self.limits.max_chars
        for piece in pieces:
            total += len(piece)
            if total > limit:
                self._check_chars(total, "the rendered text")
            out.append(piece)
        return "".join(out)

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        """Jinja's documented hook for generating code: route loops and `~` through the checks first."""
        return super()._generate(_Bounded().visit(source), name, filename, defer_init=defer_init)

    @jinja2.pass_context
    def _loop(self, context: Any, iterable: Any) -> Iterator[Any]:
        deadline = context.get(DEADLINE_VARIABLE)
        if deadline is None:
            deadline = time.monotonic() + self.limits.max_seconds
            context.vars[DEADLINE_VARIABLE] = deadline  # shared by the render's later loops
        return self._deadline_iter(iterable, deadline)

    def _deadline_iter(self, iterable: Any, deadline: float) -> Iterator[Any]:
        for item in iterable:
            if time.monotonic() > deadline:
                raise FlanmixError(f"template render took longer than {self.limits.max_seconds:g} s",
                                   expected=f"smaller loops (or raise {MAX_SECONDS_ENV})")
            yield item

    def _concat(self, items: list[Any]) -> str:
        texts = [str(v) for v in items]
        self._check_chars(sum(map(len, texts)), "'~'")
        return "".join(texts)


def _width(value: Any) -> int:
    """A width argument as a number of characters (a string width counts its length)."""
    if isinstance(value, str):
        return len(value)
    try:
        return max(0, int(value))
    except (TypeError, ValueError, OverflowError):
        return 0


def _guarded(original: Callable, check: Callable[..., None]) -> Callable:
    """`original` (a Jinja filter) with `check(value, *args)` run first; context arguments pass through."""
    passes_context = getattr(original, "jinja_pass_arg", None) is not None

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check(*(args[1:] if passes_context else args), **kwargs)
        return original(*args, **kwargs)

    return guarded
