"""Import a local data file (json, jsonl, csv, tsv, parquet; read through `datasets`) as a simple task."""

from __future__ import annotations

from pathlib import Path

from flanmix.core.errors import FlanmixError
from flanmix.importers._common import Imported, check_name, file_glob
from flanmix.spec import FILE_FORMATS, SourceSpec, TaskSpec, TemplateSet, TemplateSpec

TEMPLATES = TemplateSet(zero_shot=[
    TemplateSpec(name="plain", input="{{ input_text }}", target="{{ target_text }}"),
    TemplateSpec(name="input_output", input="Input: {{ input_text }}\nOutput:", target="{{ target_text }}"),
    TemplateSpec(name="respond", input="Respond to the following.\n\n{{ input_text }}", target="{{ target_text }}"),
    TemplateSpec(name="question_answer", input="{{ input_text }}\n\nAnswer:", target="{{ target_text }}"),
])


def _field(name: str, flag: str) -> str:
    if not name.isidentifier():
        raise FlanmixError(f"column name {name!r} cannot be used in a template", field=flag,
                           expected="a column whose name is a Python identifier")
    return name


def import_file(path: Path | str, *, name: str, input_field: str, target_field: str, cluster: str | None = None,
                format: str | None = None, collection: str = "local", check: bool = True,
                notes: list[str] | None = None) -> list[Imported]:
    """A task over a local file: `input_text`/`target_text` fields mapped from the given columns, 4 templates.

    With `check`, the file is read once (through `datasets`) to make sure it parses and has both columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FlanmixError("file not found", file=path, expected="a json, jsonl, csv, tsv or parquet file")
    if format is not None and format not in FILE_FORMATS:
        raise FlanmixError(f"unknown format {format!r}", field="--format", expected=", ".join(FILE_FORMATS))
    check_name(name)
    x, y = _field(input_field, "--input-field"), _field(target_field, "--target-field")
    # Fields are computed in order, each seeing the ones before: never overwrite a column a later field reads.
    fields = {"input_text": "{{ " + x + " }}", "target_text": "{{ " + y + " }}"}
    if y == "input_text":
        fields = {"target_text": fields["target_text"], "input_text": fields["input_text"]}
    if x == "target_text" and y == "input_text":
        fields = {"swap_input": "{{ target_text }}", "target_text": "{{ input_text }}",
                  "input_text": "{{ swap_input }}"}
    spec = TaskSpec(
        name=name, cluster=cluster or "local", collection=collection,
        description=f"{path.name}: {input_field} -> {target_field}",
        source=SourceSpec(files=file_glob(path), format=format), fields=fields, answer_field="target_text",
        templates=f"files/{name}", metrics=["exact_match"])
    if check:
        from flanmix.task import Task

        task = Task(spec, TEMPLATES)
        rows = task.examples("train") or task.examples("validation")
        missing = [c for c in (x, y) if c not in rows[0].raw]
        if missing:
            raise FlanmixError(f"column {missing[0]!r} not in the data", file=path,
                               field="--input-field" if missing[0] == x else "--target-field",
                               expected=f"one of {sorted(rows[0].raw)[:12]}")
    return [(spec, TEMPLATES)]
