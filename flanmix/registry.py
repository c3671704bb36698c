"""Task discovery: the bundled `task_registry/`, extra folders (`--registry DIR`, `FLANMIX_REGISTRY`) and tasks
registered from Python.

A registry folder holds one task spec per YAML file (any depth) and may hold a `templates/` folder of its own.
A spec's `templates: a/b` is looked up in that registry's `templates/`, then next to the spec, then in the other
registry folders' `templates/`, then in the bundled `templates/`; `templates:` may also be written inline.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from flanmix.core.errors import FlanmixError
from flanmix.core.paths import real_path
from flanmix.core.resources import bundled_dir
from flanmix.core.yamlio import YamlDoc
from flanmix.prompts import LIST_NAMES
from flanmix.spec import TaskSpec, TemplateSet
from flanmix.task import Task

ENV_VAR = "FLANMIX_REGISTRY"
_PYTHON_TASKS: dict[str, Task] = {}


def template_part_lines(doc: YamlDoc, prefix: tuple = ()) -> dict[tuple, int]:
    """The line of every template part (input, target, options, input_pattern) of the set at `prefix` in `doc`."""
    lines: dict[tuple, int] = {}
    data = doc.data
    for key in prefix:
        data = data[key] if isinstance(data, dict) else None
    if not isinstance(data, dict):
        return lines
    for kind in LIST_NAMES:
        for i, item in enumerate(data.get(kind) or []):
            for part in ("input", "target", "options", "input_pattern"):
                if isinstance(item, dict) and part in item:
                    line = doc.line_of([*prefix, kind, i, part])
                    if line:
                        lines[(kind, i, part)] = line
    return lines


def _find_template_file(ref: str, spec_file: Path, registry_root: Path | None,
                        other_roots: Iterable[Path] = (), field: str = "templates") -> Path:
    if Path(ref).is_absolute() or ".." in Path(ref).parts:  # a shared spec must not read any YAML file it likes
        raise FlanmixError(f"template set {ref!r} is not a name inside a templates/ folder", file=spec_file,
                           field=field, expected="a reference such as flan/rte (no absolute path, no '..')")
    candidates = []
    names = [ref] if ref.endswith((".yaml", ".yml")) else [ref + ".yaml", ref + ".yml"]
    for name in names:
        if registry_root is not None:
            candidates.append(registry_root / "templates" / name)
        candidates.append(spec_file.parent / name)
        candidates.extend(root / "templates" / name for root in other_roots if root != registry_root)
        candidates.append(bundled_dir("templates") / name)
    for candidate in candidates:
        if candidate.is_file() and candidate.resolve() != spec_file.resolve():
            return candidate
    raise FlanmixError(f"template set {ref!r} not found", file=spec_file, field=field,
                       expected=f"a file such as {candidates[0]} or templates/{names[0]}")


def read_template_set(path: Path, text: str | None = None) -> tuple[TemplateSet, dict[tuple, int]]:
    """Parse and validate one template-set file (or `text` as if it were that file's content); also the line of
    every template part (for errors)."""
    doc = YamlDoc.read(path) if text is None else YamlDoc(path, text)
    doc.require_mapping("a template set", "keys zero_shot, cot, few_shot")
    return doc.validate(TemplateSet), template_part_lines(doc)


def find_template_set(ref: str, extra_dirs: Iterable[Path | str] = (), *, env: bool = True) -> Path:
    """The file of a template-set reference such as `flan/rte`: `templates/<ref>.yaml` under a registry folder
    (`extra_dirs`, then `FLANMIX_REGISTRY`), then the bundled `templates/`."""
    names = [ref] if ref.endswith((".yaml", ".yml")) else [ref + ".yaml", ref + ".yml"]
    roots = [Path(p) for p in extra_dirs]
    if env and os.environ.get(ENV_VAR):
        roots.extend(Path(p) for p in os.environ[ENV_VAR].split(os.pathsep) if p)
    folders = [root / "templates" for root in roots] + [bundled_dir("templates")]
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    raise FlanmixError(f"template set {ref!r} not found", field="templates",
                       expected=f"a file {names[0]} under one of {', '.join(map(str, folders))}")


def load_task_file(path: Path | str, registry_root: Path | None = None, other_roots: Iterable[Path] = (), *,
                   compile_templates: bool = True, template_cache: dict[Path, tuple] | None = None) -> Task:
    """Parse, validate and compile one task spec file (and its template set).

    `templates: REF` is looked up in `registry_root/templates/`, next to the spec, in the `templates/` of
    `other_roots` (the other registry folders of a discovery, e.g. a `flanmix import flan` output), then bundled."""
    path = Path(path)
    doc = YamlDoc.read(path).require_mapping("a task spec", "keys name, cluster, source, templates, ...")
    spec = doc.validate(TaskSpec)
    spec_lines = {name: doc.line_of(["fields", name]) for name in spec.fields}
    if isinstance(spec.templates, TemplateSet):
        templates, template_file = spec.templates, path
        template_lines = template_part_lines(doc, ("templates",))
    else:
        template_file = _find_template_file(spec.templates, path, registry_root, other_roots)
        cache = {} if template_cache is None else template_cache  # one read per file in a discovery
        if template_file not in cache:
            cache[template_file] = read_template_set(template_file)
        templates, template_lines = cache[template_file]
    mix_set = None
    if spec.template_mix_templates is not None:  # a second set, looked up like `templates`
        mix_file = _find_template_file(spec.template_mix_templates, path, registry_root, other_roots,
                                       field="template_mix_templates")
        cache = {} if template_cache is None else template_cache
        if mix_file not in cache:
            cache[mix_file] = read_template_set(mix_file)
        mix_set = cache[mix_file][0]
    return Task(spec, templates, spec_file=path, template_file=template_file, template_lines=template_lines,
                spec_lines=spec_lines, data_root=registry_root, compile_templates=compile_templates,
                template_mix_set=mix_set)


def spec_files(root: Path) -> Iterator[Path]:
    """YAML task specs under a registry folder (its `templates/` folder and hidden folders are skipped)."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not (here == root and d in ("templates", "mixtures")))
        for name in sorted(filenames):
            if name.endswith((".yaml", ".yml")):
                yield here / name


def register_task(spec: TaskSpec | dict[str, Any], templates: TemplateSet | dict[str, Any] | None = None,
                  *, replace: bool = False) -> Task:
    """Register a task from Python. `templates` may be omitted when the spec names or inlines them."""
    spec = spec if isinstance(spec, TaskSpec) else TaskSpec.model_validate(spec)
    if templates is None:
        if isinstance(spec.templates, TemplateSet):
            templates = spec.templates
        else:
            templates, _ = read_template_set(_find_template_file(spec.templates, Path.cwd() / "<python>", None))
    templates = templates if isinstance(templates, TemplateSet) else TemplateSet.model_validate(templates)
    if spec.name in _PYTHON_TASKS and not replace:
        raise FlanmixError(f"task {spec.name!r} is already registered from Python", field="name")
    mix_set = None
    if spec.template_mix_templates is not None:
        mix_set, _ = read_template_set(_find_template_file(spec.template_mix_templates, Path.cwd() / "<python>", None,
                                                           field="template_mix_templates"))
    task = Task(spec, templates, template_mix_set=mix_set)
    _PYTHON_TASKS[spec.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a task registered from Python (mainly for tests)."""
    _PYTHON_TASKS.pop(name, None)


class Registry:
    """All known tasks by name, with selection by name, glob or cluster."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        self._tasks: dict[str, Task] = {}
        # The folders `discover` read besides the bundled registry (None: built by hand), so that another process
        # (a Ray worker) can discover the same registry again.
        self.folders: tuple[Path, ...] | None = None
        for task in tasks:
            self.add(task)

    def add(self, task: Task) -> None:
        """Add a task; two tasks with one name is an error naming both files."""
        if task.name in self._tasks:
            other = self._tasks[task.name]
            raise FlanmixError(f"duplicate task name {task.name!r}: defined in {other.spec_file or '<python>'} "
                               f"and in {task.spec_file or '<python>'}", file=task.spec_file, field="name",
                               expected="unique task names")
        self._tasks[task.name] = task

    @classmethod
    def discover(cls, extra_dirs: Iterable[Path | str] = (), *, bundled: bool = True, env: bool = True,
                 python: bool = True) -> Registry:
        """Load the bundled registry, `FLANMIX_REGISTRY` folders, `extra_dirs` and Python-registered tasks."""
        roots: list[Path] = []
        if bundled:
            roots.append(bundled_dir("task_registry"))
        if env and os.environ.get(ENV_VAR):
            roots.extend(Path(p) for p in os.environ[ENV_VAR].split(os.pathsep) if p)
        roots.extend(Path(p) for p in extra_dirs)
        registry = cls([])
        seen: set[Path] = set()
        template_cache: dict[Path, tuple] = {}  # many bundled FLAN tasks share one template set
        for root in roots:
            if not root.is_dir():
                raise FlanmixError("registry folder not found", file=root, expected="an existing folder")
            for path in spec_files(root):
                real = real_path(path)
                if real in seen:
                    continue
                seen.add(real)
                # Bundled tasks compile their templates on first use (tests compile every one of them).
                registry.add(load_task_file(path, registry_root=root, other_roots=roots,
                                            compile_templates=root != roots[0] or not bundled,
                                            template_cache=template_cache))
        if python:
            for task in _PYTHON_TASKS.values():
                registry.add(task)
        if bundled:
            registry.folders = tuple(roots[1:])
        return registry

    def __contains__(self, name: str) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks[name] for name in sorted(self._tasks))

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def clusters(self) -> dict[str, list[str]]:
        """Cluster name -> sorted task names."""
        out: dict[str, list[str]] = {}
        for task in self:
            out.setdefault(task.cluster, []).append(task.name)
        return out

    def get(self, name: str) -> Task:
        """The task called `name`; an unknown name suggests the closest ones."""
        try:
            return self._tasks[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._tasks, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise FlanmixError(f"unknown task {name!r}{hint}", field="task",
                               expected="a registered task name (see `flanmix tasks list`)") from None

    def select(self, pattern: str) -> list[Task]:
        """Tasks matching a name, a glob (`strings.*`), `cluster:NAME` or `collection:NAME`."""
        if pattern.startswith("cluster:"):
            cluster = pattern.split(":", 1)[1]
            found = [t for t in self if t.cluster == cluster]
            if not found:
                close = difflib.get_close_matches(cluster, self.clusters(), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise FlanmixError(f"unknown cluster {cluster!r}{hint}", field="cluster",
                                   expected="a cluster of registered tasks")
            return found
        if pattern.startswith("collection:"):
            collection = pattern.split(":", 1)[1]
            return [t for t in self if t.spec.collection == collection]
        if any(ch in pattern for ch in "*?["):
            found = [t for t in self if fnmatch.fnmatchcase(t.name, pattern)]
            if not found:
                raise FlanmixError(f"no task matches {pattern!r}", field="tasks", expected="a matching glob")
            return found
        return [self.get(pattern)]


def in_flan_catalog(task: Task) -> bool:
    """Whether a task is one of the bundled FLAN collection specs (`task_registry/flan/`). They read hub data or
    large shared files, so ablation pools and the tokenizer corpus take them only when named."""
    if task.spec_file is None:
        return False
    catalog = (bundled_dir("task_registry") / "flan").resolve()
    return Path(task.spec_file).resolve().is_relative_to(catalog)


def load_registry(extra_dirs: Iterable[Path | str] = ()) -> Registry:
    """Convenience: `Registry.discover(extra_dirs)`."""
    return Registry.discover(extra_dirs)
