"""Task specs and template sets: the YAML a user writes to register a task, validated with pydantic.

A task spec names a source of raw rows, maps raw fields to task fields with Jinja expressions, and points at a
template set. Unknown keys are errors everywhere, so a typo never silently does nothing.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
FILE_FORMATS = ("json", "jsonl", "csv", "tsv", "parquet", "flan_cot_tsv", "niv2")
METRICS = ("exact_match", "rank_classification", "cot_exact_match", "contains")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    """Where raw rows come from: exactly one of `builtin`, `files` or `hub`."""

    builtin: Optional[str] = Field(None, description="a bundled generator ('arithmetic.add') or 'module:function'")
    examples: int = Field(1000, gt=0, description="rows a builtin generator produces")
    seed: int = Field(0, description="generator seed (the mixture seed is separate)")
    files: Optional[Union[str, list[str]]] = Field(None, description="glob(s), relative to the spec file")
    format: Optional[Literal[FILE_FORMATS]] = Field(None, description="file format; inferred from the suffix")
    columns: Optional[list[str]] = Field(None, description="column names for header-less csv/tsv")
    hub: Optional[str] = Field(None, description="a Hugging Face dataset id")
    config: Optional[str] = None
    split: str = "train"
    revision: Optional[str] = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "SourceSpec":
        given = [k for k in ("builtin", "files", "hub") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of builtin, files, hub (got {given or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return "builtin" if self.builtin else "files" if self.files is not None else "hub"

    def describe(self) -> str:
        """A short human-readable name of the source."""
        if self.builtin:
            return f"builtin:{self.builtin}"
        if self.hub:
            return f"hub:{self.hub}" + (f"/{self.config}" if self.config else "") + f":{self.split}"
        files = self.files if isinstance(self.files, str) else ",".join(self.files or [])
        return f"files:{files}"


class TemplateSpec(_Strict):
    """One prompt template: Jinja for the input and for the target."""

    input: str
    target: str
    inverted: bool = Field(False, description="input inversion: the template asks for the input given the output")
    options: Optional[str] = Field(
        None, description="Jinja giving this template's answer options (a list, or a '|||'-separated string)")
    name: Optional[str] = None


class FewShotFormat(_Strict):
    """How few-shot exemplars are glued together (Flan 2022's few-shot patterns)."""

    inputs_prefix: str = ""
    targets_prefix: str = ""
    x_y_delimiter: str = "\n"
    example_separator: str = "\n\n"
    final_suffix: str = ""


class TemplateSet(_Strict):
    """The templates of one task: zero-shot (non-CoT), CoT and few-shot glue formats."""

    zero_shot: list[TemplateSpec] = Field(default_factory=list)
    cot: list[TemplateSpec] = Field(default_factory=list)
    few_shot: list[FewShotFormat] = Field(default_factory=lambda: [FewShotFormat(
        inputs_prefix="Q: ", targets_prefix="A: ", x_y_delimiter="\n", example_separator="\n\n")])

    @model_validator(mode="after")
    def _not_empty(self) -> "TemplateSet":
        if not self.zero_shot and not self.cot:
            raise ValueError("a template set needs at least one zero_shot or cot template")
        if not self.few_shot:
            raise ValueError("few_shot needs at least one format (omit it for the default)")
        return self


class TaskSpec(_Strict):
    """A registered task."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    cluster: str = Field(description="task cluster, used for held-out evaluation")
    category: Optional[str] = None
    collection: str = Field("flanmix", description="origin collection, written to the task_source column")
    source: SourceSpec
    fields: dict[str, str] = Field(default_factory=dict, description="task field -> Jinja over raw fields")
    answer_field: str = "answer"
    options_field: Optional[str] = None
    rationale_field: Optional[str] = None
    templates: Union[str, TemplateSet]
    metrics: list[Literal[METRICS]] = Field(default_factory=lambda: ["exact_match"])
    license: Optional[str] = None
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    few_shot_k: int = Field(3, ge=1, le=32, description="exemplars per few-shot prompt (upper bound)")
    few_shot_max_chars: int = Field(2048, gt=0, description="length budget of a few-shot input, in characters")

    @field_validator("fields")
    @classmethod
    def _field_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key.isidentifier():
                raise ValueError(f"field name {key!r} is not an identifier")
        return value
