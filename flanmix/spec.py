"""Task specs and template sets: the YAML a user writes to register a task, validated with pydantic.

A task spec names a source of raw rows, maps raw fields to task fields with Jinja expressions, and points at a
template set. Unknown keys are errors everywhere, so a typo never silently does nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from flanmix.core.strict import Strict
from flanmix.slicing import SplitSlice, parse_split

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"
FILE_FORMATS = ("json", "jsonl", "csv", "tsv", "parquet", "flan_cot_tsv", "simple_cot_tsv", "niv2")
METRICS = ("exact_match", "rank_classification", "cot_exact_match", "contains")


class SourceSpec(Strict):
    """Where raw rows come from: exactly one of `builtin`, `files` or `hub`; `repo` + `files` names files of a
    public repository (FLAN's CoT TSVs, natural-instructions task JSONs), read from a mirror (`flanmix.hub`)."""

    builtin: str | None = Field(None, description="a bundled generator ('arithmetic.add') or 'module:function'")
    examples: int = Field(1000, gt=0, description="rows a builtin generator produces")
    seed: int = Field(0, description="generator seed (the mixture seed is separate)")
    files: str | list[str] | None = Field(None, description="glob(s), relative to the spec file")
    format: Literal[FILE_FORMATS] | None = Field(None, description="file format; inferred from the suffix")
    columns: list[str] | None = Field(None, description="column names for header-less csv/tsv")
    hub: str | None = Field(None, description="a Hugging Face dataset id")
    config: str | None = None
    split: str = Field("train", description=(
        "hub split, optionally sliced as in `datasets`: train, train[:30000], train[30200:60200], train[:-200], "
        "train[:10%]; a mirror stores the whole split once and slices it on read"))
    revision: str | None = Field(None, description="hub or repo revision (a commit, tag or branch)")
    repo: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+$", description=(
        "a GitHub repository (owner/name) whose `files` (paths or globs from its root) hold the rows"))
    explode: list[str] | None = Field(None, min_length=1, description=(
        "list columns (dotted paths into nested columns, e.g. orig_answers.texts) of equal length: each source row "
        "becomes one row per item, holding item k of each (example id `<row id>-<k>`); before any split slice"))

    @field_validator("split")
    @classmethod
    def _split_syntax(cls, value: str) -> str:
        parse_split(value)  # a ValueError names the accepted syntax
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        given = [k for k in ("builtin", "files", "hub") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of builtin, files, hub (got {given or 'none'})")
        if self.repo is not None and self.files is None:
            raise ValueError("repo needs files (paths or globs inside the repository)")
        if self.hub is None and not self.split_slice.whole:
            raise ValueError(f"split {self.split!r}: slices apply to hub sources only")
        return self

    @property
    def split_slice(self) -> SplitSlice:
        """The split name and its slice (`train[:30000]` -> train, 0..30000)."""
        return parse_split(self.split)

    @property
    def split_name(self) -> str:
        """The split without its slice: what `datasets` loads and what a mirror stores."""
        return self.split_slice.name

    @property
    def kind(self) -> str:
        if self.builtin:
            return "builtin"
        if self.files is not None:
            return "repo" if self.repo else "files"
        return "hub"

    def describe(self) -> str:
        """A short human-readable name of the source."""
        if self.builtin:
            return f"builtin:{self.builtin}"
        if self.hub:
            return f"hub:{self.hub}" + (f"/{self.config}" if self.config else "") + f":{self.split}"
        files = self.files if isinstance(self.files, str) else ",".join(self.files or [])
        return f"repo:{self.repo}:{files}" if self.repo else f"files:{files}"


class TemplateSpec(Strict):
    """One prompt template: Jinja for the input and for the target."""

    input: str
    target: str
    inverted: bool = Field(False, description="annotation: an input inversion (asks for the input given the "
                                              "output); reported in stats, drawn like any other template")
    options: str | None = Field(
        None, description="Jinja giving this template's answer options (a list, or a '|||'-separated string)")
    name: str | None = None
    source: str | None = Field(None, description="provenance, e.g. 'flan:PATTERNS[rte][3]'")


class FewShotFormat(Strict):
    """Glue around the zero-shot template for few-shot prompts (used when a set has no `few_shot_patterns`)."""

    inputs_prefix: str = ""
    targets_prefix: str = ""
    x_y_delimiter: str = "\n"
    example_separator: str = "\n\n"
    final_suffix: str = ""


class FewShotPattern(Strict):
    """A few-shot pattern with its own texts and glue (FLAN's `FewShotPattern`).

    A prompt is `Σ_k [inputs_prefix + x_k + x_y_delimiter + targets_prefix + y_k + example_separator]` +
    `inputs_prefix + x + x_y_delimiter + targets_prefix`, placed into `input_pattern`; then trailing spaces (not
    newlines) are removed from the input and the target is stripped. `x`/`y` are `input`/`target` rendered.
    """

    input: str
    target: str
    inputs_prefix: str = ""
    targets_prefix: str = ""
    x_y_delimiter: str = "\n\n"
    example_separator: str = "\n\n\n"
    final_suffix: str = ""
    input_pattern: str = Field("{{ inputs }}{{ final_suffix }}", description=(
        "Jinja around the assembled prompt: `inputs` is the assembled text, `final_suffix` the suffix; other "
        "names are the row's fields (FLAN's natinst patterns put `{{ Definition }}` first)"))
    in_template_mix: bool = Field(True, description="may be drawn for template_mix prompts")
    inverted: bool = False
    name: str | None = None
    source: str | None = None


class TemplateSet(Strict):
    """The templates of one task, per variant.

    zs_opt uses `zero_shot`; zs_noopt uses `zero_shot_no_options` when given, else `zero_shot` with an empty
    options block. fs_opt uses `few_shot_patterns` when given, else `zero_shot` glued by a `few_shot` format;
    fs_noopt uses `few_shot_patterns_no_options`, else the same as fs_opt with an empty options block.
    CoT rows use `cot` in every variant.
    """

    zero_shot: list[TemplateSpec] = Field(default_factory=list)
    zero_shot_no_options: list[TemplateSpec] | None = None
    cot: list[TemplateSpec] = Field(default_factory=list)
    few_shot: list[FewShotFormat] = Field(default_factory=lambda: [FewShotFormat(
        inputs_prefix="Q: ", targets_prefix="A: ", x_y_delimiter="\n", example_separator="\n\n")])
    few_shot_patterns: list[FewShotPattern] | None = None
    few_shot_patterns_no_options: list[FewShotPattern] | None = None
    template_mix: float = Field(0.5, ge=0.0, le=1.0, description=(
        "share of fs_opt prompts assembled in template_mix mode (exemplars in their own patterns) rather than "
        "x_shot (exemplars in the row's pattern); only with few_shot_patterns"))
    strip: bool = Field(True, description="strip rendered inputs and targets (false keeps FLAN's whitespace)")
    options_style: Literal["flanmix", "flan"] = Field("flanmix", description=(
        "flanmix: today's styles; flan: FLAN's tables, randomized only in zs_opt, answer rewritten everywhere"))
    source: str | None = Field(None, description="provenance of the whole set")

    @model_validator(mode="after")
    def _not_empty(self) -> TemplateSet:
        if not self.zero_shot and not self.cot:
            raise ValueError("a template set needs at least one zero_shot or cot template")
        if not self.few_shot:
            raise ValueError("few_shot needs at least one format (omit it for the default)")
        # Template K of a no-options list is template K of its options list in other words (FLAN derives them so).
        if self.zero_shot_no_options is not None and len(self.zero_shot_no_options) != len(self.zero_shot):
            raise ValueError(f"zero_shot_no_options has {len(self.zero_shot_no_options)} templates, zero_shot "
                             f"{len(self.zero_shot)} (omit it to blank the options of zero_shot)")
        if self.few_shot_patterns_no_options is not None and (
                len(self.few_shot_patterns_no_options) != len(self.few_shot_patterns or [])):
            raise ValueError("few_shot_patterns_no_options needs as many patterns as few_shot_patterns")
        return self


class TaskSpec(Strict):
    """A registered task."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    cluster: str = Field(description="task cluster, used for held-out evaluation")
    category: str | None = None
    collection: str = Field("flanmix", description="origin collection, written to the task_source column")
    source: SourceSpec
    fields: dict[str, str] = Field(default_factory=dict, description="task field -> Jinja over raw fields")
    answer_field: str = "answer"
    options_field: str | None = None
    rationale_field: str | None = None
    templates: str | TemplateSet
    metrics: list[Literal[METRICS]] = Field(default_factory=lambda: ["exact_match"])
    license: str | None = None
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    few_shot_k: int = Field(3, ge=1, le=32, description="exemplars per few-shot prompt (upper bound)")
    few_shot_max_chars: int = Field(2048, gt=0, description="length budget of a few-shot input, in characters")
    few_shot_max_tokens: int = Field(1920, gt=0, description=(
        "length budget of a few-shot input in tokens, used instead of characters when the mixture names a "
        "tokenizer (FLAN: 1,920)"))
    dialog_field: str = Field("dialog", description="row field with the dialog turns a `{{ dialog_ }}` block shows")
    verified: bool | None = Field(None, description=(
        "hub and repo sources: true when the dataset's name, config and columns were confirmed from its card or "
        "docs, false when they are a best guess (listed by `flanmix catalog`); None for other sources"))
    filter: str | None = Field(None, description=(
        "a Jinja boolean expression over the raw row (`label != -1` or `{{ label != -1 }}`); rows where it is "
        "false are dropped before the split"))
    inversion_of: str | None = Field(None, pattern=NAME_PATTERN, description=(
        "the task this one inverts (FLAN's CoT and dialog input-inversion tasks); a mixture's `inversion_tasks` "
        "ratio then sets its rate relative to that task's"))
    few_shot_group: str | None = Field(None, description=(
        "a Jinja expression over the raw row naming its group (NIv2: `task_name`, the row's NIv2 task): few-shot "
        "exemplars come from training rows of the row's own group, and a mixture component with "
        "`split_by_group: true` mixes each group as a task of that name"))
    x_shot_exemplars: int | None = Field(None, ge=1, le=32, description=(
        "x_shot prompts of FLAN few-shot patterns hold exactly this many exemplars (drawn without replacement, "
        "no length budget; FLAN's NIv2: 2) instead of FLAN's Binomial(25, 1/N) draws within the budget"))
    template_mix_templates: str | None = Field(None, description=(
        "a template set whose zero_shot templates stand for the template_mix half of fs_opt: rendered zero-shot, "
        "their exemplar inline (FLAN's NIv2 `template_mix_five_shot`: flan/natinst_v2_inline_fs); template K "
        "pairs with few-shot pattern K, so the set needs as many templates as the task has fs_opt patterns"))

    @model_validator(mode="after")
    def _verified_only_for_hub(self) -> TaskSpec:
        if self.verified is not None and self.source.kind not in ("hub", "repo"):
            raise ValueError("verified applies to hub and repo sources only (omit it for builtin and files sources)")
        return self

    @field_validator("fields")
    @classmethod
    def _field_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key.isidentifier():
                raise ValueError(f"field name {key!r} is not an identifier")
        return value
