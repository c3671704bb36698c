"""Sandboxed Jinja: compiling templates and field expressions.

Templates come from files users download, so they run in `jinja2.sandbox.SandboxedEnvironment` with
`StrictUndefined`: a template cannot reach the filesystem or private attributes, and a missing field is an error
rather than an empty string. The random state a render draws from (promptsource's `choice` filter) is passed to
every call and travels inside the render context; nothing is kept between renders.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from flanmix.core.errors import FlanmixError
from flanmix.sandbox import LimitedSandbox

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{|\{%).)*)\}\}\s*$", re.S)
_BARE_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")

#: The context variable holding a render's random state (read by the `choice` filter).
RNG_VARIABLE = "_flanmix_rng"

RenderFn = Callable[[dict[str, Any], Any], Any]


@jinja2.pass_context  # also keeps Jinja from constant-folding `[...] | choice` at compile time
def _seeded_choice(context: Any, values: Sequence[Any]) -> Any:
    values = list(values)
    if not values:
        raise FlanmixError("choice filter got an empty list")
    rng = context.get(RNG_VARIABLE)
    if rng is None:
        rng = random.Random(0)
    return values[rng.randrange(len(values))]


def _most_frequent(values: Sequence[Any]) -> list[Any]:
    """promptsource's `most_frequent` filter: the items occurring most often, in order of first occurrence."""
    counts: dict[Any, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    top = max(counts.values(), default=0)
    return [value for value, n in counts.items() if n == top]


def make_environment() -> SandboxedEnvironment:
    """The one Jinja environment flanmix renders with (the sandbox with size and time limits, `flanmix.sandbox`);
    promptsource's `choice` filter draws from the seeded RNG."""
    env = LimitedSandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["choice"] = _seeded_choice
    env.filters["most_frequent"] = _most_frequent  # promptsource's other filter (squadshifts uses it)
    env.globals["zip"] = zip  # promptsource templates use it; it only pairs values, so it is safe in the sandbox
    return env


ENV = make_environment()


@dataclass(frozen=True)
class Compiled:
    """A compiled template string or expression, with where it came from (for errors).

    Call it with the render context and the random state (`random.Random`-like, or None) to draw from.
    """

    source: str
    fn: RenderFn
    field: str
    file: str | None
    line: int | None

    def __call__(self, context: dict[str, Any], rng: Any = None) -> Any:
        try:
            return self.fn(context, rng)
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
    return Compiled(source, render, field, file, line)


def _direct_render(template: jinja2.Template) -> RenderFn:
    """`template.render` without its per-call costs (copying the ChainMap of globals, re-deriving their keys);
    the context and output are the same as `Template.render`'s, plus the random state."""
    env = template.environment
    global_vars = dict(template.globals)
    blocks, name, root = template.blocks, template.name, template.root_render_func

    def render(context: dict[str, Any], rng: Any) -> str:
        ctx = env.context_class(env, {**global_vars, **context, RNG_VARIABLE: rng}, name, blocks,
                                globals=global_vars)
        try:
            return env.concat(root(ctx))
        except Exception:
            env.handle_exception()

    return render


def _fast_render(tree: jinja2.nodes.Template) -> RenderFn | None:
    """For the most common templates — literal text, string constants and bare `{{ name }}` substitutions —
    render by joining strings directly (no Jinja compile needed). Same output as Jinja (`str(value)`,
    StrictUndefined's error); None for anything else."""
    parts: list[tuple[bool, str]] = []  # (is_name, text-or-name)
    for node in tree.body:
        if not isinstance(node, jinja2.nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, jinja2.nodes.TemplateData):
                parts.append((False, child.data))
            elif isinstance(child, jinja2.nodes.Const) and isinstance(child.value, str):
                parts.append((False, child.value))
            elif isinstance(child, jinja2.nodes.Name) and child.ctx == "load":
                parts.append((True, child.name))
            else:
                return None
    global_vars = dict(ENV.globals)
    max_chars = ENV.limits.max_chars
    pieces = tuple(parts)
    template = [text if not is_name else "" for is_name, text in pieces]
    slots = tuple((i, text) for i, (is_name, text) in enumerate(pieces) if is_name)

    def render(context: dict[str, Any], rng: Any) -> str:
        out = template.copy()
        for i, name in slots:
            if name in context:
                value = context[name]
            elif name in global_vars:
                value = global_vars[name]
            else:
                raise jinja2.UndefinedError(f"'{name}' is undefined")
            out[i] = value if type(value) is str else str(value)
        text = "".join(out)
        if len(text) > max_chars:  # only data this large gets here: a substitution builds nothing itself
            ENV.concat([text])  # raises the limit's error
        return text

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

        def lookup(context: dict[str, Any], rng: Any) -> Any:
            try:
                return context[name]
            except KeyError:
                raise jinja2.UndefinedError(f"'{name}' is undefined") from None

        return Compiled(source, lookup, field, file, line)
    try:
        expression = ENV.compile_expression(expr, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as err:
        raise FlanmixError(f"Jinja syntax error: {err.message}", file=file, line=line, field=field,
                           expected="a valid Jinja expression") from None

    def evaluate(context: dict[str, Any], rng: Any) -> Any:
        value = expression(**context, **{RNG_VARIABLE: rng})
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()  # raises UndefinedError
        return value

    return Compiled(source, evaluate, field, file, line)


# ---------------------------------------------------------------------------------------------- literals

def jinja_string(text: str) -> str:
    """A Jinja string literal whose value is exactly `text` (Jinja decodes backslash escapes in literals)."""
    escaped = text.encode("unicode-escape").decode("ascii").replace("'", "\\'")
    return "'" + escaped + "'"
