"""What every importer shares: task naming, clusters of known datasets, and writing a registry folder atomically."""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import yaml

from flanmix.core.atomic import temp_path
from flanmix.core.errors import FlanmixError
from flanmix.core.yamlio import read_yaml
from flanmix.spec import NAME_PATTERN, TaskSpec, TemplateSet

Imported = tuple[TaskSpec, TemplateSet]

# T0's task clusters (Sanh et al. 2022, fig. 2) for the datasets promptsource ships templates for; a dataset not
# listed falls back to `promptsource` unless the caller passes a cluster. Keys are `dataset` or `dataset/subset`.
T0_CLUSTERS: dict[str, str] = {
    "anli": "nli", "super_glue/cb": "nli", "super_glue/rte": "nli", "glue/mnli": "nli", "glue/rte": "nli",
    "super_glue/copa": "sentence_completion", "hellaswag": "sentence_completion", "story_cloze": "sentence_completion",
    "winogrande": "coreference", "super_glue/wsc.fixed": "coreference",
    "super_glue/wic": "word_sense",
    "ag_news": "topic_classification", "dbpedia_14": "topic_classification", "trec": "topic_classification",
    "imdb": "sentiment", "rotten_tomatoes": "sentiment", "app_reviews": "sentiment", "glue/sst2": "sentiment",
    "amazon_polarity": "sentiment", "yelp_review_full": "sentiment",
    "glue/mrpc": "paraphrase", "glue/qqp": "paraphrase", "paws": "paraphrase",
    "samsum": "summarization", "xsum": "summarization", "cnn_dailymail": "summarization", "gigaword": "summarization",
    "multi_news": "summarization",
    "common_gen": "structure_to_text", "wiki_bio": "structure_to_text",
    "cosmos_qa": "multiple_choice_qa", "social_i_qa": "multiple_choice_qa", "piqa": "multiple_choice_qa",
    "commonsense_qa": "multiple_choice_qa", "qasc": "multiple_choice_qa", "ai2_arc": "multiple_choice_qa",
    "quail": "multiple_choice_qa", "quartz": "multiple_choice_qa", "sciq": "multiple_choice_qa",
    "wiqa": "multiple_choice_qa", "dream": "multiple_choice_qa", "quarel": "multiple_choice_qa",
    "super_glue/boolq": "extractive_qa", "adversarial_qa": "extractive_qa", "quoref": "extractive_qa",
    "ropes": "extractive_qa", "duorc": "extractive_qa",
    "kilt_tasks/hotpotqa": "closed_book_qa", "wiki_qa": "closed_book_qa", "trivia_qa": "closed_book_qa",
    "web_questions": "closed_book_qa",
}


def cluster_of(dataset: str, subset: str | None = None, default: str = "promptsource") -> str:
    """The T0 cluster of a promptsource dataset (`dataset/subset` first, then `dataset`)."""
    if subset and f"{dataset}/{subset}" in T0_CLUSTERS:
        return T0_CLUSTERS[f"{dataset}/{subset}"]
    return T0_CLUSTERS.get(dataset, default)


def slug(text: str) -> str:
    """A task-name-safe rendering of free text: `Textual Entailment` -> `textual_entailment`."""
    out = re.sub(r"[^A-Za-z0-9]+", "_", text.strip()).strip("_").lower()
    return out or "unnamed"


def check_name(name: str, *, file: str | Path | None = None) -> str:
    """Fail early (with the importer's input file) when a derived task name is not a valid task name."""
    if not re.match(NAME_PATTERN, name):
        raise FlanmixError(f"cannot derive a valid task name from {name!r}", file=file, field="name",
                           expected="letters, digits, '_', '.', '-' (pass --name)")
    return name


def file_glob(path: Path) -> str:
    """A `source.files` value that matches exactly this file (absolute, glob characters escaped)."""
    return glob.escape(str(Path(path).resolve()))


# ---------------------------------------------------------------------------------------------------- writing

class _Dumper(yaml.SafeDumper):
    """Readable YAML: multi-line strings as `|` blocks where YAML allows it (PyYAML falls back to quotes)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(data: object) -> str:
    """YAML text for a spec or template set (key order kept, unicode as is)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def template_ref(spec: TaskSpec) -> str:
    """Where a task's template set is written, relative to `DIR/templates/` (no suffix)."""
    if isinstance(spec.templates, str):
        return spec.templates
    return f"imported/{spec.name}"


def _portable_files(files: str | list[str], out_dir: Path, absolute: bool) -> str | list[str]:
    """Rewrite absolute data paths relative to the registry folder, so the folder and the data can move together."""
    if absolute:
        return files

    def one(pattern: str) -> str:
        if not Path(pattern).is_absolute():
            return pattern
        matches = glob.glob(pattern)
        if len(matches) == 1 and glob.escape(matches[0]) == pattern:
            return glob.escape(os.path.relpath(matches[0], out_dir))
        return pattern  # a real glob: leave it absolute rather than guess

    return one(files) if isinstance(files, str) else [one(f) for f in files]


def render_files(items: Sequence[Imported], out_dir: Path, *, absolute_paths: bool = False) -> dict[Path, str]:
    """The files of a registry folder (relative path -> YAML text) for imported tasks."""
    out_dir = Path(out_dir).resolve()
    files: dict[Path, str] = {}
    names: set[str] = set()
    for spec, templates in items:
        if spec.name in names:
            raise FlanmixError(f"two imported tasks are both called {spec.name!r}", field="name",
                               expected="unique task names (pass distinct --name values)")
        names.add(spec.name)
        ref = template_ref(spec)
        data = spec.model_dump(mode="json", exclude_defaults=True, exclude={"templates"})
        if spec.source.files is not None:
            data["source"]["files"] = _portable_files(spec.source.files, out_dir, absolute_paths)
        if spec.source.hub is not None:
            data["source"]["split"] = spec.source.split  # say which split, even when it is the default
        # `templates` after the source, as a user would write it.
        ordered = {}
        for key, value in data.items():
            ordered[key] = value
            if key == "source":
                ordered["templates"] = ref
        ordered.setdefault("templates", ref)
        files[Path(f"{spec.name}.yaml")] = dump_yaml(ordered)
        tpath = Path("templates") / f"{ref}.yaml"
        if tpath in files:
            raise FlanmixError(f"two imported tasks share the template file {tpath}", field="templates")
        files[tpath] = dump_yaml(templates.model_dump(mode="json", exclude_defaults=True))
    return files


def write_registry(items: Sequence[Imported], out_dir: Path | str, *, overwrite: bool = False,
                   absolute_paths: bool = False, validate: bool = True) -> list[Path]:
    """Write imported tasks into a registry folder (`DIR/<task>.yaml` + `DIR/templates/...`), atomically.

    Everything is written to `DIR.tmp-<pid>` first and checked there (each spec and template set is read back,
    compared and compiled); only then are the files moved in. Existing task or template files are refused unless
    `overwrite`. Returns the written spec files.
    """
    out_dir = Path(out_dir)
    files = render_files(items, out_dir, absolute_paths=absolute_paths)
    write_files(files, out_dir, overwrite=overwrite,
                check=(lambda stage: _validate_written(items, stage)) if validate else None)
    return [out_dir / rel for rel in files if rel.parent == Path(".")]


def write_files(files: dict[Path, str], out_dir: Path | str, *, overwrite: bool = False,
                check: Callable[[Path], None] | None = None) -> None:
    """Write text files (relative path -> text) into a folder atomically: first into `DIR.tmp-<pid>`, where
    `check(stage)` may read them back, then moved in. Existing files are refused unless `overwrite`; on any error
    `DIR` is left as it was."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FlanmixError("output path exists and is not a folder", file=out_dir, field="--out")
    if not overwrite:
        clashes = [rel for rel in files if (out_dir / rel).exists()]
        if clashes:
            more = f" (+{len(clashes) - 1} more)" if len(clashes) > 1 else ""
            raise FlanmixError(f"{clashes[0]} already exists{more}", file=out_dir / clashes[0], field="--out",
                               expected="a new folder, or --overwrite to replace imported files")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Same parent, same depth: relative data paths resolve identically from the staging folder.
    stage = temp_path(out_dir)
    shutil.rmtree(stage, ignore_errors=True)
    try:
        for rel, text in files.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            (stage / rel).write_text(text, encoding="utf-8")
        if check is not None:
            check(stage)
        if not out_dir.exists():
            os.replace(stage, out_dir)
        else:
            for rel in files:
                (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / rel, out_dir / rel)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _validate_written(items: Sequence[Imported], stage: Path) -> None:
    """Read every written file back: the spec must validate and compile, the template set must come back equal."""
    from flanmix.task import Task

    for spec, templates in items:
        spec_file = stage / f"{spec.name}.yaml"
        template_file = stage / "templates" / f"{template_ref(spec)}.yaml"
        written = TaskSpec.model_validate(read_yaml(spec_file))
        back = TemplateSet.model_validate(read_yaml(template_file))
        if back != templates or written.model_dump(exclude={"source", "templates"}) != spec.model_dump(
                exclude={"source", "templates"}):
            raise FlanmixError("written files do not read back unchanged (please report this)", file=spec_file)
        Task(written, back, spec_file=spec_file, template_file=template_file)


def register(items: Iterable[Imported], *, replace: bool = False) -> list:
    """Register imported tasks from Python (in place, nothing written); returns the `Task` objects."""
    from flanmix.registry import register_task

    return [register_task(spec, templates, replace=replace) for spec, templates in items]


def discover_files(src: Path | str, patterns: Sequence[str], *, what: str) -> list[Path]:
    """`src` itself when it is a file, else the files under it matching `patterns` (sorted); none is an error."""
    src = Path(src)
    if src.is_file():
        return [src]
    if not src.exists():
        raise FlanmixError("file not found", file=src, expected=what)
    found = sorted({p for pattern in patterns for p in src.rglob(pattern) if p.is_file()})
    if not found:
        raise FlanmixError(f"no {what} found in folder", file=src, expected=" or ".join(patterns))
    return found
