"""A closed evaluator for FLAN's template files: the few Python constructs that build its tables, nothing else.

FLAN's `templates.py` is Python, but it holds data: literal tables, aliases (`PATTERNS["a"] = PATTERNS["b"]`),
list comprehensions over `range`/`chr`/`ord`, two `copy.deepcopy` + `str.replace` loops, a `@dataclass` and its
constructor calls. This module walks the file's AST and evaluates exactly those constructs with Python's own
semantics (object identity, in-place mutation, deepcopy's memo), so aliases behave as they do in FLAN.

Nothing in the file is imported, `exec`'d or `eval`'d. Any other statement, call, attribute, name or operator is
refused with a one-line `FlanmixError` naming the file, the line and the construct, at the point it would run.
Sizes are capped (file, strings, ranges, nesting, total work and total characters produced), so a hostile file
cannot allocate or loop without bound.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flanmix.core.errors import FlanmixError

MAX_STR = 1 << 20  # characters in one string
MAX_RANGE = 10_000  # items in one range()
MAX_STEPS = 2_000_000  # evaluations, loop iterations and deep-copied objects, over all files of one read
MAX_CHARS = 64 << 20  # characters produced by string operations, over all files of one read
MAX_INT = 10**12

EXPECTED = "only the literal tables, aliases, comprehensions, deepcopy/replace loops and FewShotPattern(...) calls " \
           "FLAN's template files use; the file is read as data and never run"
_ATOMS = (str, int, bool, type(None))


@dataclass(frozen=True)
class Origin:
    """Where a list was written: its file, the line of the literal and the line of each item."""

    file: str
    line: int
    item_lines: tuple[int, ...] = ()


@dataclass(eq=False)
class Budget:
    """Work and size counters shared by every file of one read, and the origin of every list literal."""

    steps: int = 0
    chars: int = 0
    origins: dict[int, tuple[list, Origin]] = field(default_factory=dict)

    def origin_of(self, value: list) -> Origin | None:
        entry = self.origins.get(id(value))
        return entry[1] if entry is not None and entry[0] is value else None


@dataclass(frozen=True, eq=False)
class Module:
    """A module the file may import: `copy`, `dataclasses`, or a sibling table file (its top-level names)."""

    name: str
    attrs: dict[str, Any]


@dataclass(frozen=True, eq=False)
class Function:
    """An allowed callable; `call(interpreter, node, args)` checks its arguments."""

    name: str
    call: Callable[[Interpreter, ast.AST, list], Any]


_MISSING = object()


@dataclass(frozen=True, eq=False)
class DataclassDef:
    """A `@dataclasses.dataclass` class of the file: its name and its fields with their declared defaults."""

    name: str
    fields: dict[str, Any]  # field -> default (`_MISSING` when required), in declaration order
    line: int

    def defaults(self) -> dict[str, Any]:
        return {k: v for k, v in self.fields.items() if v is not _MISSING}


class Instance:
    """An instance of a file's dataclass: mutable field values, copied by `copy.deepcopy` like the real thing."""

    __slots__ = ("cls", "values")

    def __init__(self, cls: DataclassDef, values: dict[str, Any]) -> None:
        self.cls = cls
        self.values = values

    def __deepcopy__(self, memo: dict) -> Instance:
        new = Instance(self.cls, {})
        memo[id(self)] = new
        new.values = copy.deepcopy(self.values, memo)
        return new


def _snippet(node: ast.AST) -> str:
    try:
        text = " ".join(ast.unparse(node).split())
    except Exception:  # noqa: BLE001 - a description for an error message; never fatal
        return type(node).__name__
    return text if len(text) <= 60 else text[:57] + "..."


class Interpreter:
    """Evaluates one FLAN file's module body into its top-level names (see the module docstring)."""

    def __init__(self, file: Path | str, budget: Budget, importable: dict[str, Module]) -> None:
        self.file = str(file)
        self.budget = budget
        self.importable = importable  # dotted module name -> Module, for `import x` / `from a import b`
        self.globals: dict[str, Any] = {}
        self.scopes: list[dict[str, Any]] = []  # comprehension scopes, innermost last

    # ------------------------------------------------------------------------------------------------ errors

    def refuse(self, node: ast.AST, what: str) -> FlanmixError:
        return FlanmixError(f"{what} is not allowed in a FLAN template file: {_snippet(node)}", file=self.file,
                            line=getattr(node, "lineno", None), expected=EXPECTED)

    def fail(self, node: ast.AST, message: str) -> FlanmixError:
        return FlanmixError(f"{message}: {_snippet(node)}", file=self.file, line=getattr(node, "lineno", None))

    def step(self, node: ast.AST, n: int = 1) -> None:
        self.budget.steps += n
        if self.budget.steps > MAX_STEPS:
            raise self.fail(node, f"more than {MAX_STEPS:,} evaluation steps (refused as unbounded work)")

    def produced(self, node: ast.AST, n: int) -> None:
        """Account for `n` characters about to be built; refuse over-long strings before they exist."""
        if n > MAX_STR:
            raise self.fail(node, f"a string of {n:,} characters, over the {MAX_STR:,} limit")
        self.budget.chars += n
        if self.budget.chars > MAX_CHARS:
            raise self.fail(node, f"more than {MAX_CHARS:,} characters built in all (refused as unbounded work)")

    # ------------------------------------------------------------------------------------------------ statements

    def run(self, tree: ast.Module) -> dict[str, Any]:
        for stmt in tree.body:
            self.run_stmt(stmt)
        return self.globals

    def run_stmt(self, stmt: ast.stmt) -> None:
        self.step(stmt)
        try:
            self._run_stmt(stmt)
        except FlanmixError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, RuntimeError, ArithmeticError, MemoryError) as err:
            raise self.fail(stmt, f"{type(err).__name__} {err}") from None

    def _run_stmt(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Assign):
            value = self.eval(stmt.value)
            for target in stmt.targets:
                self.assign(target, value)
        elif isinstance(stmt, ast.For):
            self.run_for(stmt)
        elif isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                return  # a docstring
            if not isinstance(stmt.value, ast.Call):
                raise self.refuse(stmt, "expression statement")
            self.eval(stmt.value)
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.name not in ("copy", "dataclasses"):
                    raise self.refuse(stmt, f"import of {alias.name!r}")
                self.globals[alias.asname or alias.name] = _STDLIB[alias.name]
        elif isinstance(stmt, ast.ImportFrom):
            self.import_from(stmt)
        elif isinstance(stmt, ast.ClassDef):
            self.globals[stmt.name] = self.define_class(stmt)
        else:
            raise self.refuse(stmt, f"{type(stmt).__name__} statement")

    def import_from(self, stmt: ast.ImportFrom) -> None:
        for alias in stmt.names:
            dotted = f"{stmt.module}.{alias.name}"
            if stmt.level or alias.name == "*" or dotted not in _SIBLING_MODULES:
                raise self.refuse(stmt, f"import of {dotted!r}")
            if dotted not in self.importable:
                raise FlanmixError(f"imports {dotted}, whose file was not given", file=self.file, line=stmt.lineno,
                                   expected=f"{_SIBLING_MODULES[dotted]} next to this file")
            self.globals[alias.asname or alias.name] = self.importable[dotted]

    def run_for(self, stmt: ast.For) -> None:
        if stmt.orelse or getattr(stmt, "type_comment", None):
            raise self.refuse(stmt, "for-else")
        for item in self.iterable(stmt.iter, self.eval(stmt.iter)):
            self.step(stmt)
            self.assign(stmt.target, item)
            for inner in stmt.body:
                self.run_stmt(inner)

    def define_class(self, stmt: ast.ClassDef) -> DataclassDef:
        """`@dataclasses.dataclass class X:` with a docstring, annotated fields and `@property` methods (never run)."""
        decorators = [self.eval(d) for d in stmt.decorator_list]
        if decorators != [_DATACLASS] or stmt.bases or stmt.keywords or getattr(stmt, "type_params", None):
            raise self.refuse(stmt, "a class other than a plain @dataclasses.dataclass")
        fields: dict[str, Any] = {}
        for item in stmt.body:
            if isinstance(item, ast.Expr) and isinstance(item.value, ast.Constant) and isinstance(item.value.value,
                                                                                                  str):
                continue
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.simple:
                default = _MISSING if item.value is None else self.eval(item.value)
                if default is not _MISSING and not isinstance(default, _ATOMS):
                    raise self.refuse(item.value, "a field default other than a constant")
                fields[item.target.id] = default
            elif isinstance(item, ast.FunctionDef) and _is_plain_property(item):
                continue  # a derived property: never called, so never evaluated
            else:
                raise self.refuse(item, f"{type(item).__name__} in a dataclass body")
        return DataclassDef(stmt.name, fields, stmt.lineno)

    def assign(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            (self.scopes[-1] if self.scopes else self.globals)[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            if not isinstance(value, (tuple, list)) or len(value) != len(target.elts):
                raise self.fail(target, f"cannot unpack {type(value).__name__} into {len(target.elts)} names")
            for elt, item in zip(target.elts, value, strict=True):
                self.assign(elt, item)
        elif isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Slice):
            container, key = self.eval(target.value), self.eval(target.slice)
            if isinstance(container, dict) and isinstance(key, _ATOMS):
                container[key] = value
            elif isinstance(container, list) and type(key) is int and -len(container) <= key < len(container):
                container[key] = value
            else:
                raise self.fail(target, f"cannot assign an item of {type(container).__name__}")
        elif isinstance(target, ast.Attribute) and not target.attr.startswith("_"):
            owner = self.eval(target.value)
            if not isinstance(owner, Instance) or target.attr not in owner.cls.fields:
                raise self.refuse(target, "attribute assignment other than a dataclass field")
            owner.values[target.attr] = value
        else:
            raise self.refuse(target, "assignment target")

    # ------------------------------------------------------------------------------------------------ expressions

    def eval(self, node: ast.AST) -> Any:
        self.step(node)
        handler = _EXPR.get(type(node))
        if handler is None:
            raise self.refuse(node, type(node).__name__)
        try:
            return handler(self, node)
        except FlanmixError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, RuntimeError, ArithmeticError, MemoryError) as err:
            raise self.fail(node, f"{type(err).__name__} {err}") from None

    def iterable(self, node: ast.AST, value: Any) -> Any:
        if isinstance(value, (list, tuple, range, dict, enumerate, type({}.items()))):
            return value
        raise self.refuse(node, f"iterating over {type(value).__name__}")

    def find(self, name: str) -> Any:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return self.globals.get(name, _BUILTINS.get(name, _MISSING))

    def lookup(self, node: ast.Name) -> Any:
        value = self.find(node.id)
        if value is _MISSING:
            raise self.refuse(node, f"name {node.id!r}")
        return value

    def constant(self, node: ast.Constant) -> Any:
        if not isinstance(node.value, _ATOMS):
            raise self.refuse(node, f"{type(node.value).__name__} constant")
        return node.value

    def binop(self, node: ast.BinOp) -> Any:
        left, right = self.eval(node.left), self.eval(node.right)
        if isinstance(node.op, ast.Add) and type(left) is str and type(right) is str:
            self.produced(node, len(left) + len(right))
            return left + right
        if type(left) is int and type(right) is int and isinstance(node.op, (ast.Add, ast.Sub, ast.Mod)):
            result = left + right if isinstance(node.op, ast.Add) else left - right if isinstance(
                node.op, ast.Sub) else left % right
            if abs(result) > MAX_INT:
                raise self.fail(node, "an integer over 10**12")
            return result
        raise self.refuse(node, f"operator {type(node.op).__name__} on {type(left).__name__}, {type(right).__name__}")

    def compare(self, node: ast.Compare) -> bool:
        if len(node.ops) != 1 or not isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            raise self.refuse(node, "comparison other than == / !=")
        left, right = self.eval(node.left), self.eval(node.comparators[0])
        if not isinstance(left, _ATOMS) or not isinstance(right, _ATOMS):
            raise self.refuse(node, "comparing values other than strings and numbers")
        return (left == right) == isinstance(node.ops[0], ast.Eq)

    def ifexp(self, node: ast.IfExp) -> Any:
        test = self.eval(node.test)
        if type(test) is not bool:
            raise self.refuse(node.test, "a condition that is not a comparison")
        return self.eval(node.body if test else node.orelse)

    def sequence(self, node: ast.List | ast.Tuple) -> list | tuple:
        items = [self.eval(elt) for elt in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(items)
        self.budget.origins[id(items)] = (items, Origin(self.file, node.lineno, tuple(e.lineno for e in node.elts)))
        return items

    def dict_(self, node: ast.Dict) -> dict:
        out = {}
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:
                raise self.refuse(value_node, "** in a dict literal")
            key = self.eval(key_node)
            if not isinstance(key, _ATOMS):
                raise self.refuse(key_node, "a dict key other than a constant")
            out[key] = self.eval(value_node)
        return out

    def subscript(self, node: ast.Subscript) -> Any:
        if isinstance(node.slice, ast.Slice):
            raise self.refuse(node, "slicing")
        container, key = self.eval(node.value), self.eval(node.slice)
        if isinstance(container, dict) and isinstance(key, _ATOMS):
            if key not in container:
                raise self.fail(node, f"no key {key!r}")
            return container[key]
        if isinstance(container, (list, tuple, str)) and type(key) is int:
            if not -len(container) <= key < len(container):
                raise self.fail(node, f"index {key} out of range")
            return container[key]
        raise self.refuse(node, f"subscript of {type(container).__name__}")

    def attribute(self, node: ast.Attribute) -> Any:
        if node.attr.startswith("_"):
            raise self.refuse(node, f"attribute {node.attr!r}")
        owner = self.eval(node.value)
        if isinstance(owner, Module) and node.attr in owner.attrs:
            return owner.attrs[node.attr]
        if isinstance(owner, Instance) and node.attr in owner.values:
            return owner.values[node.attr]
        raise self.refuse(node, f"attribute {node.attr!r} of {type(owner).__name__}")

    def call(self, node: ast.Call) -> Any:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise self.refuse(node, "*args / **kwargs")
        if isinstance(node.func, ast.Attribute):
            if node.func.attr.startswith("_"):
                raise self.refuse(node.func, f"attribute {node.func.attr!r}")
            owner = self.eval(node.func.value)
            method = _METHODS.get((type(owner), node.func.attr))
            if method is not None:
                if node.keywords:
                    raise self.refuse(node, "keyword arguments to a method")
                return method(self, node, owner, [self.eval(a) for a in node.args])
            if not isinstance(owner, Module) or node.func.attr not in owner.attrs:
                raise self.refuse(node, f"call of .{node.func.attr}()")
            callee = owner.attrs[node.func.attr]
        elif isinstance(node.func, ast.Name):
            callee = self.find(node.func.id)
            if callee is _MISSING:
                raise self.refuse(node, f"call of {node.func.id}()")
        else:
            raise self.refuse(node, f"call of {type(node.func).__name__}")
        if isinstance(callee, DataclassDef):
            return self.instantiate(node, callee)
        if not isinstance(callee, Function):
            raise self.refuse(node, f"call of {type(callee).__name__}")
        if node.keywords:
            raise self.refuse(node, f"keyword arguments to {callee.name}()")
        return callee.call(self, node, [self.eval(a) for a in node.args])

    def instantiate(self, node: ast.Call, cls: DataclassDef) -> Instance:
        if node.args:
            raise self.refuse(node, f"positional arguments to {cls.name}()")
        values = dict(cls.fields)
        for kw in node.keywords:
            if kw.arg not in cls.fields:
                raise self.fail(node, f"{cls.name}() has no field {kw.arg!r}")
            value = self.eval(kw.value)
            if not isinstance(value, _ATOMS):
                raise self.refuse(kw.value, f"a {cls.name}() argument other than a constant")
            values[kw.arg] = value
        missing = [k for k, v in values.items() if v is _MISSING]
        if missing:
            raise self.fail(node, f"{cls.name}() misses field {missing[0]!r}")
        return Instance(cls, values)

    def listcomp(self, node: ast.ListComp) -> list:
        gens = node.generators
        if any(g.ifs or g.is_async for g in gens):
            raise self.refuse(node, "a comprehension with conditions")
        first = self.iterable(gens[0].iter, self.eval(gens[0].iter))  # evaluated in the enclosing scope, as Python
        out: list = []
        self.scopes.append({})
        try:
            self._comprehend(node, gens, 0, first, out)
        finally:
            self.scopes.pop()
        self.budget.origins[id(out)] = (out, Origin(self.file, node.lineno))
        return out

    def _comprehend(self, node: ast.ListComp, gens: list[ast.comprehension], i: int, items: Any, out: list) -> None:
        for item in items:
            self.step(node)
            self.assign(gens[i].target, item)
            if i + 1 < len(gens):
                inner = self.iterable(gens[i + 1].iter, self.eval(gens[i + 1].iter))
                self._comprehend(node, gens, i + 1, inner, out)
            else:
                out.append(self.eval(node.elt))

    # ------------------------------------------------------------------------------------------------ deepcopy

    def deepcopy(self, node: ast.AST, value: Any) -> Any:
        """`copy.deepcopy` of plain data (aliases kept, as deepcopy's memo does); list origins follow the copies."""
        seen: dict[int, Any] = {}
        stack = [value]
        while stack:
            item = stack.pop()
            if id(item) in seen or isinstance(item, _ATOMS):
                continue
            seen[id(item)] = item
            self.step(node)
            if isinstance(item, (list, tuple)):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, Instance):
                stack.extend(item.values.values())
            else:
                raise self.refuse(node, f"deepcopy of {type(item).__name__}")
        memo: dict[int, Any] = {}
        result = copy.deepcopy(value, memo)
        for key, original in seen.items():
            origin = self.budget.origin_of(original) if isinstance(original, list) else None
            if origin is not None:
                self.budget.origins[id(memo[key])] = (memo[key], origin)
        return result


def _is_plain_property(fn: ast.FunctionDef) -> bool:
    """`@property def name(self): ...` with no defaults or annotations on its arguments."""
    args = fn.args
    return ([ast.unparse(d) for d in fn.decorator_list] == ["property"] and not args.defaults
            and not args.kw_defaults and not args.posonlyargs and not args.kwonlyargs and not args.vararg
            and not args.kwarg and [a.arg for a in args.args] == ["self"])


# -------------------------------------------------------------------------------------------- allowed callables

def _need(interp: Interpreter, node: ast.AST, args: list, *types: type) -> None:
    if len(args) != len(types) or not all(type(a) is t for a, t in zip(args, types, strict=True)):
        raise interp.fail(node, "wrong arguments (expected " + ", ".join(t.__name__ for t in types) + ")")


def _fixed(name: str, fn: Callable, *types: type) -> Function:
    """A builtin taking exactly these positional argument types (`chr(int)`, `ord(str)`, `str(int)`, ...)."""
    def call(interp: Interpreter, node: ast.AST, args: list) -> Any:
        _need(interp, node, args, *types)
        return fn(*args)
    return Function(name, call)


def _range(interp: Interpreter, node: ast.AST, args: list) -> range:
    if not 1 <= len(args) <= 3 or any(type(a) is not int for a in args):
        raise interp.fail(node, "range() takes 1 to 3 integers")
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise interp.fail(node, f"range() of {len(result):,} items, over the {MAX_RANGE:,} limit")
    return result


def _deepcopy(interp: Interpreter, node: ast.AST, args: list) -> Any:
    if len(args) != 1:
        raise interp.fail(node, "copy.deepcopy() takes one value")
    return interp.deepcopy(node, args[0])


def _dataclass_called(interp: Interpreter, node: ast.AST, args: list) -> Any:
    raise interp.refuse(node, "calling dataclasses.dataclass (only a bare decorator is)")


def _replace(interp: Interpreter, node: ast.AST, text: str, args: list) -> str:
    _need(interp, node, args, str, str)
    old, new = args
    count = text.count(old) if old else len(text) + 1
    interp.produced(node, len(text) + count * (len(new) - len(old)))
    return text.replace(old, new)


def _case(upper: bool) -> Callable:
    def method(interp: Interpreter, node: ast.AST, text: str, args: list) -> str:
        _need(interp, node, args)
        interp.produced(node, len(text))
        return text.upper() if upper else text.lower()
    return method


def _items(interp: Interpreter, node: ast.AST, mapping: dict, args: list) -> Any:
    _need(interp, node, args)
    return mapping.items()


def _update(interp: Interpreter, node: ast.AST, mapping: dict, args: list) -> None:
    _need(interp, node, args, dict)
    interp.step(node, len(args[0]))
    mapping.update(args[0])


# Only what FLAN's files call: chr/ord/str/range in the option tables, enumerate in the replace loops.
_BUILTINS = {f.name: f for f in (_fixed("chr", chr, int), _fixed("ord", ord, str), _fixed("str", str, int),
                                 _fixed("enumerate", enumerate, list), Function("range", _range))}
_DATACLASS = Function("dataclasses.dataclass", _dataclass_called)
_STDLIB = {"copy": Module("copy", {"deepcopy": Function("copy.deepcopy", _deepcopy)}),
           "dataclasses": Module("dataclasses", {"dataclass": _DATACLASS})}
# `from flan.v2 import flan_templates_branched`: the sibling file, read separately and passed in `importable`.
_SIBLING_MODULES = {"flan.v2.flan_templates_branched": "flan_templates_branched.py"}
_METHODS: dict[tuple[type, str], Callable] = {
    (str, "replace"): _replace, (str, "upper"): _case(True), (str, "lower"): _case(False),
    (dict, "items"): _items, (dict, "update"): _update,
}
_EXPR: dict[type, Callable[[Interpreter, Any], Any]] = {
    ast.Constant: Interpreter.constant, ast.Name: Interpreter.lookup, ast.BinOp: Interpreter.binop,
    ast.Compare: Interpreter.compare, ast.IfExp: Interpreter.ifexp, ast.List: Interpreter.sequence,
    ast.Tuple: Interpreter.sequence, ast.Dict: Interpreter.dict_, ast.Subscript: Interpreter.subscript,
    ast.Attribute: Interpreter.attribute, ast.Call: Interpreter.call, ast.ListComp: Interpreter.listcomp,
}


def evaluate(tree: ast.Module, file: Path | str, budget: Budget,
             importable: dict[str, Module] | None = None) -> dict[str, Any]:
    """The top-level names of a parsed FLAN template file, evaluated by the closed evaluator (never run).

    `tree` must come from a depth-checked parse (`flan_source.parse_file`): evaluation recurses along the AST."""
    return Interpreter(file, budget, importable or {}).run(tree)
