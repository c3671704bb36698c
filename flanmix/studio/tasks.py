"""Tasks in the studio: the table of the registry, a task's rows and every template rendered in every variant, and
the template editor's preview and save.

Rendering goes through `Task.render_full`, the sandbox and code path of `flanmix render` and of a build; an edited
set is compiled with `Task.with_templates`, which keeps the rows already loaded. Errors are the `FlanmixError`
lines `flanmix tasks validate` prints (file:line: field: message), each with its line for the editor's gutter.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flanmix.core.atomic import write_text
from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.core.resources import bundled_dir
from flanmix.core.yamlio import YamlDoc
from flanmix.fewshot import FewShotDropped
from flanmix.registry import Registry, read_template_set, template_part_lines
from flanmix.spec import TaskSpec, TemplateSet
from flanmix.task import Example, Task

MAX_ROWS = 20  # rows one page renders every template on
DATA_ROWS = 20  # rows the data table shows
CELL_CHARS = 300  # characters of a field shown in the data table


# ------------------------------------------------------------------------------------------------ the table

def variant_counts(templates: TemplateSet) -> dict[str, int]:
    """Templates each variant draws from, counted from the set itself (no compiling): the lists and fallbacks of
    `flanmix.prompts.PromptSet.items`."""
    zs = templates.zero_shot
    fs, fs_no = templates.few_shot_patterns, templates.few_shot_patterns_no_options
    return {"zs_opt": len(zs),
            "zs_noopt": len(templates.zero_shot_no_options if templates.zero_shot_no_options is not None else zs),
            "fs_opt": len(fs if fs is not None else zs),
            "fs_noopt": len(fs_no if fs_no is not None else fs if fs is not None else zs)}


def task_variants(task: Task) -> list[str]:
    """`Task.variants()` without compiling the templates (the table lists hundreds of tasks)."""
    counts = variant_counts(task.templates)
    kinds = list(TEMPLATE_TYPES) if task.has_opt_variants else ["zs_noopt", "fs_noopt"]
    return [k for k in kinds if k.startswith("zs") or counts[k] > 0]


def origin(task: Task) -> str:
    """Where a task comes from: `bundled`, its registry folder, or `python`."""
    if task.spec_file is None:
        return "python"
    if Path(task.spec_file).resolve().is_relative_to(bundled_dir("task_registry").resolve()):
        return "bundled"
    return str(task.data_root or Path(task.spec_file).parent)


def table_rows(registry: Registry) -> list[dict[str, Any]]:
    """One row per task for the Tasks table."""
    rows = []
    for task in registry:
        spec = task.spec
        counts = variant_counts(task.templates)
        rows.append({"name": task.name, "description": spec.description, "cluster": task.cluster,
                     "collection": spec.collection, "source": spec.source.describe(), "kind": spec.source.kind,
                     "templates": counts["zs_opt"], "cot": len(task.templates.cot),
                     "fewshot": counts["fs_opt"] if task.templates.few_shot_patterns is not None else None,
                     "variants": task_variants(task), "license": spec.license or "", "origin": origin(task),
                     "inverted": sum(t.inverted for t in task.templates.zero_shot)})
    return rows


# ------------------------------------------------------------------------------------------------ renders

@dataclass
class Cell:
    """One template rendered on one row (or why it could not be)."""

    example_id: str
    inputs: str = ""
    targets: str = ""
    error: str | None = None
    dropped: bool = False


@dataclass
class TemplateRenders:
    """One template of a variant, with its renders on the chosen rows."""

    index: int
    cot: bool
    list_name: str
    inverted: bool
    name: str | None
    source: str | None
    input: str
    target: str
    cells: list[Cell] = field(default_factory=list)


@dataclass
class VariantRenders:
    """Every template of one variant (non-CoT first, then CoT), or a note saying why the task does not use it."""

    variant: str
    used: bool
    note: str = ""
    templates: list[TemplateRenders] = field(default_factory=list)


@dataclass
class Grid:
    """Every variant's renders, the problems found (as `flanmix tasks validate` words them) and the time taken."""

    variants: list[VariantRenders]
    errors: list[dict[str, Any]]
    renders: int
    seconds: float


def error_entry(err: FlanmixError) -> dict[str, Any]:
    """An error for the page: its line (for the gutter) and its one-line message."""
    return {"line": err.line, "message": str(err), "field": err.field}


def _unused_note(task: Task, variant: str) -> str:
    if variant.endswith("_opt") and not task.has_opt_variants:
        return f"This task has no answer options: a mixture renders its {variant} rows as {variant[:2]}_noopt."
    return f"This task has no few-shot templates: a mixture renders its {variant} rows as zero-shot."


def render_grid(task: Task, examples: list[Example], *, seed: int = 0, randomize: bool = False) -> Grid:
    """Every template of every variant (and CoT) rendered on `examples`."""
    start = time.perf_counter()
    errors: dict[str, dict[str, Any]] = {}
    variants, renders = [], 0
    used = task_variants(task)
    few_rows = len(task.examples("train")) < 2
    for variant in TEMPLATE_TYPES:
        out = VariantRenders(variant, variant in used)
        if not out.used:
            out.note = _unused_note(task, variant)
        elif variant.startswith("fs") and few_rows:
            out.note = "Fewer than 2 training rows: a mixture renders few-shot rows as zero-shot."
        for cot in ([False, True] if task.has_cot else [False]):
            items = task.prompts.items(variant, cot)
            list_name = task.prompts.list_name(variant, cot)
            for idx, tmpl in enumerate(items):
                entry = TemplateRenders(idx, cot, list_name, tmpl.spec.inverted, tmpl.spec.name, tmpl.spec.source,
                                        tmpl.spec.input, tmpl.spec.target)
                for example in examples:
                    entry.cells.append(_render_cell(task, example, variant, idx, cot, seed, randomize, errors))
                    renders += 1
                out.templates.append(entry)
        variants.append(out)
    return Grid(variants, list(errors.values()), renders, time.perf_counter() - start)


def _render_cell(task: Task, example: Example, variant: str, idx: int, cot: bool, seed: int, randomize: bool,
                 errors: dict[str, dict[str, Any]]) -> Cell:
    cell = Cell(example.example_id)
    try:
        out = task.render_full(example, template_type=variant, template_idx=idx, cot=cot, seed=seed,
                               randomize_options=randomize)
        cell.inputs, cell.targets = out.inputs, out.targets
    except FewShotDropped:
        cell.dropped = True
    except FlanmixError as err:
        cell.error = str(err)
        errors.setdefault(cell.error, error_entry(err))
    return cell


def rows_of(task: Task, start: int, count: int) -> list[Example]:
    """`count` training rows from `start` (validation rows for a task with no training rows)."""
    pool = task.examples("train") or task.examples("validation")
    start = max(0, min(start, len(pool) - 1))
    return pool[start:start + max(1, min(count, MAX_ROWS))]


def data_table(task: Task, start: int = 0) -> dict[str, Any]:
    """The first DATA_ROWS rows from `start`: raw fields and mapped task fields, shortened for the page."""
    pool = task.examples("train") or task.examples("validation")
    rows = pool[start:start + DATA_ROWS]
    columns: list[str] = []
    shown = []
    for example in rows:
        context = task.context(example)
        for key in context:
            if key not in columns:
                columns.append(key)
        shown.append((example.example_id, context))
    mapped = set(task.spec.fields)
    out_rows = []
    for example_id, context in shown:
        cells = []
        for key in columns:
            text = "" if key not in context else str(context[key])
            cells.append(text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "…")
        out_rows.append({"id": example_id, "cells": cells})
    return {"columns": [{"name": c, "mapped": c in mapped} for c in columns], "rows": out_rows,
            "train": len(task.examples("train")), "validation": len(task.examples("validation")), "start": start}


# ------------------------------------------------------------------------------------------------ the editor

def is_inline(task: Task) -> bool:
    """Whether the task's templates are written inside its spec file (the editor then edits the spec file)."""
    return task.template_file is not None and task.template_file == task.spec_file


def edited_task(task: Task, text: str) -> Task:
    """`task` with the template set parsed from `text` (the editor's content of its template file); a problem is a
    FlanmixError naming the file and line, as when the file itself is loaded."""
    path = Path(task.template_file) if task.template_file else Path(f"<task {task.name}>")
    if is_inline(task):
        doc = YamlDoc(path, text).require_mapping("a task spec", "keys name, cluster, source, templates, ...")
        spec = doc.validate(TaskSpec)
        if not isinstance(spec.templates, TemplateSet):
            raise FlanmixError("the editor edits templates written in the spec", file=path,
                               line=doc.line_of(["templates"]), field="templates", expected="an inline template set")
        templates, lines = spec.templates, template_part_lines(doc, ("templates",))
    else:
        templates, lines = read_template_set(path, text)
    return task.with_templates(templates, template_file=path, template_lines=lines)


def preview(task: Task, text: str, *, start: int = 0, count: int = 3, seed: int = 0,
            randomize: bool = False) -> tuple[Grid | None, list[dict[str, Any]]]:
    """The edited set rendered on `count` rows, and every problem (a parse or compile error stops at the first)."""
    examples = rows_of(task, start, count)
    try:
        candidate = edited_task(task, text)
    except FlanmixError as err:
        return None, [error_entry(err)]
    grid = render_grid(candidate, examples, seed=seed, randomize=randomize)
    return grid, grid.errors


def text_hash(text: str) -> str:
    """The hash the editor keeps of the text it loaded, to notice a file changed on disk meanwhile."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save(task: Task, text: str, writable: bool, base: str | None = None) -> dict[str, str]:
    """Write `text` to the task's template file atomically, keeping the previous file as `NAME.bak`; refused for a
    file outside the writable folders, for text with problems, or when the file changed on disk since the editor
    loaded it (`base`: the hash of what it loaded)."""
    path = Path(task.template_file) if task.template_file else None
    if path is None or not writable:
        raise FlanmixError("this file is not in a writable registry folder", file=path, field="save",
                           expected="a file under a folder given with `flanmix studio --writable DIR`")
    if base is not None and path.is_file() and text_hash(path.read_text(encoding="utf-8")) != base:
        raise FlanmixError("not saved: the file changed on disk since the editor loaded it", file=path, field="save",
                           expected="a reload of the page (copy your text first)")
    _, errors = preview(task, text, count=2)
    if errors:
        raise FlanmixError(f"not saved: {errors[0]['message']}", field="save", expected="a set without problems")
    backup = path.with_name(path.name + ".bak")
    if path.is_file():
        write_text(backup, path.read_text(encoding="utf-8"))
    write_text(path, text)
    return {"saved": str(path), "backup": str(backup), "base": text_hash(text)}
