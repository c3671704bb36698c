"""Sandboxed Jinja: compiling templates and field expressions, and rendering answer options.

Templates come from files users download, so they run in `jinja2.sandbox.SandboxedEnvironment` with
`StrictUndefined`: a template cannot reach the filesystem or private attributes, and a missing field is an error
rather than an empty string.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from flanmix.core.errors import FlanmixError


_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{|\{%).)*)\}\}\s*$", re.S)
_BARE_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")


class _ChoiceRng:
    """Holds the RNG the `choice` filter uses during one render (templates are rendered single-threaded)."""

    rng: random.Random | None = None


_CHOICE = _ChoiceRng()


@jinja2.pass_context  # also keeps Jinja from constant-folding `[...] | choice` at compile time
def _seeded_choice(_context: Any, values: Sequence[Any]) -> Any:
    values = list(values)
    if not values:
        raise FlanmixError("choice filter got an empty list")
    rng = _CHOICE.rng or random.Random(0)
    return values[rng.randrange(len(values))]


def make_environment() -> SandboxedEnvironment:
    """The one Jinja environment flanmix renders with; promptsource's `choice` filter draws from the seeded RNG."""
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["choice"] = _seeded_choice
    env.globals["zip"] = zip  # promptsource templates use it; it only pairs values, so it is safe in the sandbox
    return env


ENV = make_environment()


@dataclass(frozen=True)
class Compiled:
    """A compiled template string or expression, with where it came from (for errors)."""

    source: str
    where: str  # "file:line field" description used in error messages
    fn: Callable[[dict[str, Any]], Any]
    field: str
    file: str | None
    line: int | None

    def __call__(self, context: dict[str, Any], rng: random.Random | None = None) -> Any:
        _CHOICE.rng = rng
        try:
            return self.fn(context)
        except jinja2.UndefinedError as err:
            raise FlanmixError(f"undefined variable at render time: {err.message}", file=self.file,
                               line=self.line, field=self.field,
                               expected=f"one of the row's fields {sorted(context)[:12]}") from None
        except SecurityError as err:
            raise FlanmixError(f"blocked by the template sandbox: {err}", file=self.file, line=self.line,
                               field=self.field, expected="plain data access, no private attributes") from None
        except FlanmixError as err:
            raise err.with_context(file=self.file, line=self.line, field=self.field) from None
        except Exception as err:  # noqa: BLE001 - any template runtime error is a user error in the template
            raise FlanmixError(f"template failed: {type(err).__name__}: {err}", file=self.file, line=self.line,
                               field=self.field) from None
        finally:
            _CHOICE.rng = None


def referenced_names(source: str) -> set[str]:
    """Variables a template reads (an unparsable template reads nothing; compiling it reports the error)."""
    try:
        return jinja2.meta.find_undeclared_variables(ENV.parse(source))
    except jinja2.TemplateSyntaxError:
        return set()


def compile_template(source: str, *, field: str, file: str | None = None, line: int | None = None) -> Compiled:
    """Compile a Jinja template string that renders to text."""
    try:
        render = _fast_render(ENV.parse(source)) or _direct_render(ENV.from_string(source))
    except jinja2.TemplateSyntaxError as err:
        raise FlanmixError(f"Jinja syntax error: {err.message} (template line {err.lineno})", file=file,
                           line=line, field=field, expected="a valid Jinja template") from None
    return Compiled(source, f"{file}:{line}", render, field, file, line)


def _direct_render(template: jinja2.Template) -> Callable[[dict[str, Any]], str]:
    """`template.render` without its per-call costs (copying the ChainMap of globals, re-deriving their keys);
    the context and output are the same as `Template.render`'s."""
    env = template.environment
    global_vars = dict(template.globals)
    blocks, name, root = template.blocks, template.name, template.root_render_func

    def render(context: dict[str, Any]) -> str:
        ctx = env.context_class(env, {**global_vars, **context}, name, blocks, globals=global_vars)
        try:
            return env.concat(root(ctx))
        except Exception:
            env.handle_exception()

    return render


def _fast_render(tree: jinja2.nodes.Template) -> Callable[[dict[str, Any]], str] | None:
    """For the most common templates — literal text and bare `{{ name }}` substitutions — render by joining
    strings directly (no Jinja compile needed). Same output as Jinja (`str(value)`, StrictUndefined's error);
    None for anything else."""
    body = tree.body
    parts: list[tuple[bool, str]] = []  # (is_name, text-or-name)
    for node in body:
        if not isinstance(node, jinja2.nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, jinja2.nodes.TemplateData):
                parts.append((False, child.data))
            elif isinstance(child, jinja2.nodes.Name) and child.ctx == "load":
                parts.append((True, child.name))
            else:
                return None
    global_vars = dict(ENV.globals)
    pieces = tuple(parts)

    def render(context: dict[str, Any]) -> str:
        out = []
        for is_name, text in pieces:
            if not is_name:
                out.append(text)
            elif text in context:
                out.append(str(context[text]))
            elif text in global_vars:
                out.append(str(global_vars[text]))
            else:
                raise jinja2.UndefinedError(f"'{text}' is undefined")
        return "".join(out)

    return render


def compile_value(source: str, *, field: str, file: str | None = None, line: int | None = None) -> Compiled:
    """Compile a field mapping: a lone `{{ expr }}` keeps the native value (lists stay lists), else renders text."""
    match = _SINGLE_EXPR.match(source)
    if match is None:
        return compile_template(source, field=field, file=file, line=line)
    expr = match.group("expr")
    bare = _BARE_NAME.match(expr)
    if bare:
        name = bare.group(1)

        def lookup(context: dict[str, Any]) -> Any:
            try:
                return context[name]
            except KeyError:
                raise jinja2.UndefinedError(f"'{name}' is undefined") from None

        return Compiled(source, f"{file}:{line}", lookup, field, file, line)
    try:
        expression = ENV.compile_expression(expr, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as err:
        raise FlanmixError(f"Jinja syntax error: {err.message}", file=file, line=line, field=field,
                           expected="a valid Jinja expression") from None

    def evaluate(context: dict[str, Any]) -> Any:
        value = expression(**context)
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()  # raises UndefinedError
        return value

    return Compiled(source, f"{file}:{line}", evaluate, field, file, line)


# ---------------------------------------------------------------------------------------------- answer options

OPTIONS_STARTS = (
    "OPTIONS:", "Options:", "Choose your answer from:", "Pick your answer from:", "Select from the following.",
    "Available choices:", "Choices:", "Possible answers:", "Choose from:", "Select from:",
)
# (marker format, kind): kind 'bullet' keeps the target; 'letter'/'number' rewrite the target to the marker.
OPTION_MARKERS = (
    ("- {}", "bullet"), ("* {}", "bullet"), ("+ {}", "bullet"),
    ("({L}) {}", "letter"), ("{L}. {}", "letter"), ("{L}) {}", "letter"), ("({l}) {}", "letter"),
    ("({N}) {}", "number"), ("{N}. {}", "number"), ("{N}) {}", "number"),
)
OPTIONS_ENDS = ("", "\n")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class OptionsStyle:
    """How an options block looks: start string, item marker ('- {}', '({L}) {}', ...) and end string."""

    start: str = "OPTIONS:"
    marker: str = "- {}"
    kind: str = "bullet"  # 'bullet' keeps the target; 'letter'/'number' rewrite the target to the marker
    end: str = ""

    def label(self, index: int) -> str:
        """The marker of option `index` without the item text, e.g. '(B)' or '2.'."""
        return self._mark(index, "").strip()

    def _mark(self, index: int, item: str) -> str:
        letter = _LETTERS[index % 26]
        return (self.marker.replace("{L}", letter).replace("{l}", letter.lower())
                .replace("{N}", str(index + 1)).replace("{}", item))


DEFAULT_OPTIONS_STYLE = OptionsStyle()


def random_options_style(rng: random.Random) -> OptionsStyle:
    """A seeded random options style (Flan 2022 varies the start string, the item markers and the end string)."""
    marker, kind = OPTION_MARKERS[rng.randrange(len(OPTION_MARKERS))]
    return OptionsStyle(OPTIONS_STARTS[rng.randrange(len(OPTIONS_STARTS))], marker, kind,
                        OPTIONS_ENDS[rng.randrange(len(OPTIONS_ENDS))])


@dataclass(frozen=True)
class OptionsBlock:
    """Rendered answer options and, for letter/number markers, the labels that replace the answers."""

    text: str
    labels: tuple[str, ...] | None


def format_options(options: Sequence[Any], style: OptionsStyle = DEFAULT_OPTIONS_STYLE) -> OptionsBlock:
    """Render answer options: by default `OPTIONS:` then `- a` lines."""
    items = [str(o) for o in options]
    lines = "\n".join(style._mark(i, item) for i, item in enumerate(items))
    labels = None if style.kind == "bullet" else tuple(style.label(i) for i in range(len(items)))
    return OptionsBlock(f"{style.start}\n{lines}{style.end}", labels)


def split_choices(value: Any) -> list[str]:
    """Options given as a list, or promptsource-style as one '|||'-separated string."""
    if isinstance(value, str):
        return [part.strip() for part in value.split("|||")]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise FlanmixError(f"answer options must be a list or a '|||'-separated string, got {type(value).__name__}")
