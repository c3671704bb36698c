"""Import T0-rendered prompt/completion JSONL files (`<dataset>_<template>.jsonl`) as offline flanmix tasks.

These files are promptsource templates already applied to the first rows of a dataset (self-instruct's
`t0_train_50k/data_per_template`). Each becomes a task `t0.<file stem>` in collection T0 whose one template passes
the prompt through and strips the `<|endoftext|>` the completions end with. They give an offline T0 submix where
the `ps.*` tasks (hub sources) cannot load.
"""

from __future__ import annotations

import json
from pathlib import Path

from flanmix.core.errors import FlanmixError
from flanmix.importers._common import T0_CLUSTERS, Imported, check_name, discover_files, file_glob
from flanmix.spec import SourceSpec, TaskSpec, TemplateSet, TemplateSpec

EOS = "<|endoftext|>"
TEMPLATES = TemplateSet(zero_shot=[TemplateSpec(name="passthrough", input="{{ prompt }}", target="{{ answer }}")])


def dataset_of(stem: str) -> str | None:
    """The promptsource dataset key a file stem starts with (`glue_mrpc_equivalent` -> `glue/mrpc`), if known."""
    best = None
    for key in T0_CLUSTERS:
        prefix = key.replace("/", "_") + "_"
        if stem.startswith(prefix) and (best is None or len(prefix) > len(best.replace("/", "_")) + 1):
            best = key
    return best


def _check(path: Path) -> None:
    try:
        with open(path, encoding="utf-8") as handle:
            line = handle.readline()
    except FileNotFoundError:
        raise FlanmixError("file not found", file=path, expected="a JSONL file of {prompt, completion}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FlanmixError(f"cannot read file: {err}", file=path) from None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise FlanmixError(f"invalid JSON line: {err.msg}", file=path, line=1,
                           expected="a JSON object per line") from None
    if not isinstance(row, dict) or not {"prompt", "completion"} <= set(row):
        raise FlanmixError("row lacks prompt/completion", file=path, line=1, expected="keys prompt and completion")


def import_file(path: Path | str, *, cluster: str | None = None, notes: list[str] | None = None) -> list[Imported]:
    """Import one T0-rendered JSONL file as one task (source `{files: <path>, format: jsonl}`)."""
    path = Path(path)
    _check(path)
    dataset = dataset_of(path.stem)
    template = path.stem[len(dataset) + 1:] if dataset else path.stem
    name = check_name(f"t0.{path.stem}", file=path)
    spec = TaskSpec(
        name=name, cluster=cluster or (T0_CLUSTERS[dataset] if dataset else "t0"), category=dataset,
        collection="T0",
        description=(f"T0-rendered {dataset or 'promptsource'} examples, template {template!r} "
                     f"(prompt -> completion)"),
        source=SourceSpec(files=file_glob(path), format="jsonl"),
        fields={"answer": "{{ completion | replace('" + EOS + "', '') | trim }}"},
        templates=f"t0/{name}", metrics=["exact_match"])
    return [(spec, TEMPLATES)]


def import_path(src: Path | str, *, cluster: str | None = None, notes: list[str] | None = None) -> list[Imported]:
    """Import a JSONL file, or every `*.jsonl` under a folder."""
    out: list[Imported] = []
    for path in discover_files(src, ["*.jsonl"], what="T0-rendered .jsonl files"):
        out.extend(import_file(path, cluster=cluster, notes=notes))
    return out
