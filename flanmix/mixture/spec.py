"""The mixture file: components with weights, rate rules, template-type ratios, size, seed and filtering.

A mixture is a list of components (a task, a glob or list of task selectors, a cluster, a collection, or a nested
mixture), each with a weight. `MixtureBody` is the part that nests; `MixtureSpec` adds what only the top level
decides (size, seed, sampling, dedup, decontamination).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from flanmix.core.constants import TemplateType
from flanmix.core.errors import FlanmixError
from flanmix.core.resources import bundled_dir
from flanmix.core.strict import Strict
from flanmix.core.yamlio import YamlDoc, validate_mapping


class RateSpec(Strict):
    """How a component's share is split among its tasks: rate = min(n·scale, cap)^(1/temperature)."""

    by: Literal["equal", "examples", "temperature"] = Field(
        "equal", description="equal: every task the same; examples/temperature: by training-set size")
    cap: float | None = Field(None, gt=0, description="per-task cap on n·scale (Flan's example cap)")
    scale: float = Field(1.0, gt=0)
    temperature: float = Field(1.0, gt=0)


class SizeSpec(Strict):
    """How many rows: a number of examples, a number of tokens (with a tokenizer), or one epoch."""

    examples: int | None = Field(None, gt=0)
    tokens: int | None = Field(None, gt=0)
    tokenizer: str | None = Field(None, description="tokenizer folder or tokenizer.json (for tokens)")
    epoch: bool = Field(False, description="stop when the first component runs out (no replacement)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return {"examples": value}
        if value == "epoch":
            return {"epoch": True}
        return value

    @model_validator(mode="after")
    def _one(self) -> SizeSpec:
        given = [k for k in ("examples", "tokens") if getattr(self, k) is not None] + (["epoch"] if self.epoch
                                                                                       else [])
        if len(given) != 1:
            raise ValueError(f"give exactly one of examples, tokens, epoch (got {given or 'none'})")
        if self.tokens is not None and not self.tokenizer:
            raise ValueError("size.tokens needs size.tokenizer (a tokenizer folder or tokenizer.json)")
        return self


class DecontamSpec(Strict):
    """Drop training rows sharing a word n-gram with evaluation data (tasks' validation rows and/or files)."""

    tasks: list[str] = Field(default_factory=list, description="tasks whose validation rows are evaluation data")
    files: list[str] = Field(default_factory=list, description="json/jsonl/csv/tsv globs, relative to the spec")
    ngram: int = Field(13, ge=1, le=64)

    @model_validator(mode="after")
    def _something(self) -> DecontamSpec:
        if not self.tasks and not self.files:
            raise ValueError("decontaminate needs tasks and/or files")
        return self


class Component(Strict):
    """One mixture component: exactly one selector, and a weight (its share of the enclosing mixture)."""

    task: str | None = None
    tasks: str | list[str] | None = Field(
        None, description="a glob, or a list of names/globs/'cluster:X'/'collection:X'")
    cluster: str | None = None
    collection: str | None = None
    mixture: str | MixtureBody | None = Field(None, description="a nested mixture (inline or a file)")
    weight: float = Field(1.0, ge=0)
    name: str | None = Field(None, description="label used in the manifest and stats")
    split_by_group: bool = Field(False, description=(
        "mix each few-shot group of the selected tasks (their `few_shot_group`, e.g. NIv2's task names) as a task "
        "of its own, named by the group, with its own rate (min(cap, rows) under an examples rule)"))

    @model_validator(mode="after")
    def _exactly_one(self) -> Component:
        given = [k for k in ("task", "tasks", "cluster", "collection", "mixture") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of task, tasks, cluster, collection, mixture (got {given or 'none'})")
        if self.split_by_group and self.mixture is not None:
            raise ValueError("split_by_group applies to task selections, not to a nested mixture")
        return self

    def label(self) -> str:
        """The component's name in the manifest and stats: `name`, or its selector (`cluster:alpha`, ...)."""
        if self.name:
            return self.name
        if self.mixture is not None:
            return f"mixture:{self.mixture}" if isinstance(self.mixture, str) else (self.mixture.name or "mixture")
        for key in ("task", "cluster", "collection"):
            if getattr(self, key) is not None:
                return f"{key}:{getattr(self, key)}"
        return "tasks:" + (self.tasks if isinstance(self.tasks, str) else ",".join(self.tasks or []))


class MixtureBody(Strict):
    """The part of a mixture that nests: components and the settings its tasks inherit (unset = parent's)."""

    name: str | None = None
    description: str = ""
    components: list[Component] = Field(min_length=1)
    rate: RateSpec | None = None
    template_types: dict[TemplateType, float] | None = Field(
        None, description="ratios of zs_opt/zs_noopt/fs_opt/fs_noopt (normalized)")
    cot: float | None = Field(None, ge=0, le=1, description="share of CoT rows among tasks with CoT templates")
    inversion: float | None = Field(
        None, ge=0, description="inverted:normal template ratio (Flan: 0.3); unset = uniform over templates")
    randomize_options: bool | None = None
    inversion_tasks: float | None = Field(
        None, ge=0, description="rate of an inversion task (`inversion_of: P`) relative to P's when both are in "
                                "one component (FLAN mixes its CoT and dialog inversions at 0.3)")

    @model_validator(mode="after")
    def _check(self) -> MixtureBody:
        if sum(c.weight for c in self.components) <= 0:
            raise ValueError("all component weights are zero")
        if self.template_types is not None:
            if any(v < 0 for v in self.template_types.values()):
                raise ValueError("template type ratios must be >= 0")
            if sum(self.template_types.values()) <= 0:
                raise ValueError("template type ratios are all zero")
        return self


class MixtureSpec(MixtureBody):
    """A mixture file: a body plus size, seed, sampling and filtering (those apply at the top level only)."""

    seed: int = 0
    tokenizer: str | None = Field(None, description=(
        "tokenizer folder or tokenizer.json measuring few-shot budgets in tokens (tasks' few_shot_max_tokens; "
        "FLAN: 1,920); unset = characters (few_shot_max_chars)"))
    size: SizeSpec | None = None
    replacement: bool = Field(False, description="sample examples with replacement")
    dedup: bool = Field(True, description="drop exact duplicates (normalized input+target)")
    decontaminate: DecontamSpec | None = None


Component.model_rebuild()


def mixture_names() -> list[str]:
    """Names of the bundled mixtures (`mixtures/*.yaml`)."""
    folder = bundled_dir("mixtures")
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def find_mixture(ref: str, base_dir: Path | None = None) -> Path:
    """A mixture file from a path (relative to `base_dir` or cwd) or a bundled name like `demo`."""
    candidates = [Path(ref)]
    if base_dir is not None and not Path(ref).is_absolute():
        candidates.insert(0, base_dir / ref)
    stem = ref[:-5] if ref.endswith(".yaml") else ref
    candidates.append(bundled_dir("mixtures") / f"{stem}.yaml")
    for path in candidates:
        if path.is_file():
            return path
    close = difflib.get_close_matches(stem, mixture_names(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise FlanmixError(f"unknown mixture {ref!r}{hint}", field="mixture",
                       expected=f"a mixture file or a bundled name ({', '.join(mixture_names()) or 'none'})")


def load_spec(path: Path | str) -> tuple[MixtureSpec, YamlDoc]:
    """Read and validate a mixture file (errors name file:line)."""
    doc = YamlDoc.read(path).require_mapping("a mixture", "keys seed, size, rate, template_types, components, ...")
    return doc.validate(MixtureSpec), doc


def as_spec(spec: MixtureSpec | dict | str | Path) -> tuple[MixtureSpec, YamlDoc | None]:
    """A validated spec from a mixture file, a bundled mixture name, a dict or a spec; plus its YAML document
    (for file:line errors) when it came from a file."""
    if isinstance(spec, (str, Path)):
        return load_spec(find_mixture(str(spec)))
    if isinstance(spec, dict):
        return validate_mapping(spec, MixtureSpec, source="<mixture>"), None
    return spec, None


def where(doc: YamlDoc | None, loc: list) -> dict:
    """`file=` and `line=` of the value at `loc` in `doc`, as keyword arguments for a FlanmixError."""
    if doc is None:
        return {}
    return {"file": str(doc.path), "line": doc.line_of(loc)}
