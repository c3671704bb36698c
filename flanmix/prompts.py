"""A compiled template set: every variant's templates compiled once, and the rendering of one template on one row.

`PromptSet` is what a `Task` renders with; `flanmix render --batch` uses it directly for template sets without a
task (the row then holds the template's fields, `options` as a list and `answer`). Few-shot assembly is in
`flanmix.fewshot`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.options import (
    DEFAULT_OPTIONS_STYLE,
    OptionsBlock,
    flan_dialog_block,
    flan_options_block,
    format_options,
    random_options_style,
    split_choices,
)
from flanmix.spec import FewShotPattern, TemplateSet, TemplateSpec
from flanmix.templates import Compiled, compile_template, compile_value, referenced_names

AnySpec = TemplateSpec | FewShotPattern
BlockMaker = Callable[[list], OptionsBlock]
DEFAULT_INPUT_PATTERN = "{{ inputs }}{{ final_suffix }}"

# Template list of each variant: (list used when given, list to fall back to). CoT rows always use `cot`.
_VARIANT_LISTS = {
    "zs_opt": ("zero_shot", None),
    "zs_noopt": ("zero_shot_no_options", "zero_shot"),
    "fs_opt": ("few_shot_patterns", "zero_shot"),
    "fs_noopt": ("few_shot_patterns_no_options", "few_shot_patterns"),
}
LIST_NAMES = ("zero_shot", "zero_shot_no_options", "cot", "few_shot_patterns", "few_shot_patterns_no_options")


def variant_specs(templates: TemplateSet, template_type: str, cot: bool = False) -> list[AnySpec]:
    """The templates a variant draws from, uncompiled: what `PromptSet.items` compiles (planning needs only their
    number and inversion flags, so a mixture of hundreds of FLAN tasks plans without compiling them)."""
    if template_type not in TEMPLATE_TYPES:
        raise FlanmixError(f"unknown template type {template_type!r}", field="template_type",
                           expected=" | ".join(TEMPLATE_TYPES))
    if cot:
        return list(templates.cot)
    first, fallback = _VARIANT_LISTS[template_type]
    found = getattr(templates, first)
    if found is None and fallback is not None:
        found = getattr(templates, fallback)
    if found is None:  # fs_noopt without any few-shot patterns: glue around the zero-shot templates
        found = templates.zero_shot
    return list(found or [])


class Rendered(NamedTuple):
    """A rendered input/target pair and, for evaluation, the options shown and the expected answer."""

    inputs: str
    targets: str
    options: list[str] | None
    answer: str


@dataclass(frozen=True)
class RowFields:
    """Which row fields hold the answer, the answer options and the dialog turns."""

    answer: str = "answer"
    options: str | None = "options"
    options_required: bool = True  # False: a row without the options field simply has no options
    dialog: str = "dialog"


@dataclass(frozen=True)
class CompiledTemplate:
    """One template (zero-shot, CoT or few-shot pattern), compiled."""

    spec: AnySpec
    input: Compiled
    target: Compiled
    options: Compiled | None
    shows_options: bool  # the input shows `options_`, so a letter/number marker may stand for the answer
    draws: bool  # the input or target uses the `choice` filter
    uses_dialog: bool  # the input or target shows `dialog_`
    input_pattern: Compiled | None  # a few-shot pattern's non-default input_pattern

    @property
    def is_pattern(self) -> bool:
        return isinstance(self.spec, FewShotPattern)


class PromptSet:
    """A template set compiled for rendering: the template list of each variant and the row-level rules."""

    def __init__(self, templates: TemplateSet, *, fields: RowFields = RowFields(), file: str = "<templates>",
                 lines: dict[tuple, int] | None = None, fields_file: str | None = None) -> None:
        self.templates = templates
        self.fields = fields
        self.file = file
        self.fields_file = fields_file or file  # where the row fields are declared (the task spec), for errors
        self.flan_style = templates.options_style == "flan"
        lines = lines or {}
        self._in_mix: dict[str, list[int]] = {}
        self._items: dict[tuple[str, bool], list[CompiledTemplate]] = {}
        self.lists: dict[str, list[CompiledTemplate] | None] = {}
        for kind in LIST_NAMES:
            items = getattr(templates, kind)
            self.lists[kind] = None if items is None else [
                self._compile(kind, i, tmpl, lines) for i, tmpl in enumerate(items)]

    def _compile(self, kind: str, i: int, tmpl: AnySpec, lines: dict[tuple, int]) -> CompiledTemplate:
        def where(part: str) -> dict:
            return {"field": f"{kind}[{i}].{part}", "file": self.file, "line": lines.get((kind, i, part))}

        options = getattr(tmpl, "options", None)
        pattern = getattr(tmpl, "input_pattern", DEFAULT_INPUT_PATTERN)
        names = referenced_names(tmpl.input) | referenced_names(tmpl.target)
        return CompiledTemplate(
            tmpl, compile_template(tmpl.input, **where("input")), compile_template(tmpl.target, **where("target")),
            compile_value(options, **where("options")) if options else None,
            not tmpl.inverted and "options_" in referenced_names(tmpl.input),
            "choice" in tmpl.input or "choice" in tmpl.target, "dialog_" in names,
            None if pattern == DEFAULT_INPUT_PATTERN else compile_template(pattern, **where("input_pattern")))

    # ----------------------------------------------------------------------------------------- lookup
    def items(self, template_type: str = "zs_opt", cot: bool = False) -> list[CompiledTemplate]:
        """The templates a variant draws from (template index K is `items(...)[K]`)."""
        found = self._items.get((template_type, cot))
        if found is None:
            found = self._items[template_type, cot] = self._lookup(template_type, cot)
        return found

    def _lookup(self, template_type: str, cot: bool) -> list[CompiledTemplate]:
        if template_type not in TEMPLATE_TYPES:
            raise FlanmixError(f"unknown template type {template_type!r}", field="template_type",
                               expected=" | ".join(TEMPLATE_TYPES))
        if cot:
            return self.lists["cot"] or []
        first, fallback = _VARIANT_LISTS[template_type]
        found = self.lists[first]
        if found is None and fallback is not None:
            found = self.lists[fallback]
        if found is None:  # fs_noopt without any few-shot patterns: glue around the zero-shot templates
            found = self.lists["zero_shot"]
        return found or []

    def in_mix(self, template_type: str) -> list[int]:
        """Indices of a variant's few-shot patterns that may be drawn for template_mix prompts (cached)."""
        if template_type not in self._in_mix:
            self._in_mix[template_type] = [i for i, t in enumerate(self.items(template_type))
                                           if t.is_pattern and t.spec.in_template_mix]
        return self._in_mix[template_type]

    def list_name(self, template_type: str, cot: bool = False) -> str:
        """The name of the template list a variant uses (for messages and provenance)."""
        if cot:
            return "cot"
        first, fallback = _VARIANT_LISTS[template_type]
        if self.lists[first] is not None:
            return first
        if fallback is not None and self.lists[fallback] is not None:
            return fallback
        return "zero_shot"

    # ----------------------------------------------------------------------------------------- options
    def block_maker(self, template_type: str, randomize: bool, rng: random.Random) -> BlockMaker | None:
        """How this render's options blocks look (None: the variant shows no options).

        flanmix style: one style for the whole prompt (random when `randomize`; drawn here, first).
        flan style: FLAN's random tables only in zs_opt rows; the deterministic block everywhere else.
        """
        if template_type not in ("zs_opt", "fs_opt"):
            return None
        if self.flan_style:
            block_rng = rng if randomize and template_type == "zs_opt" else None
            return lambda options: flan_options_block(options, block_rng)
        style = random_options_style(rng) if randomize else DEFAULT_OPTIONS_STYLE
        return lambda options: format_options(options, style)

    # ----------------------------------------------------------------------------------------- rendering
    def render_one(self, context: dict[str, Any], tmpl: CompiledTemplate, make_block: BlockMaker | None,
                   rng: Any, *, dialog_rng: random.Random | None = None, strip: bool | None = None,
                   where: str = "") -> Rendered:
        """Render one template on one row context (the context is modified: pass a copy)."""
        fields = self.fields
        options: list[str] | None = None
        if tmpl.options is not None:
            options = split_choices(tmpl.options(context, rng))
            context["answer_choices"] = options
        elif fields.options:
            if fields.options in context:
                options = split_choices(context[fields.options])
            elif fields.options_required:
                raise FlanmixError(f"options field {fields.options!r} missing from row {where}",
                                   file=self.fields_file, field="options_field")
        context["options_"] = ""
        if make_block is not None and options:
            block = make_block(options)
            context["options_"] = block.text
            # flanmix style: only a template that shows the markers may answer with one (else an inverted or CoT
            # target could end in "(B)."). FLAN rewrites the row itself, so every template sees the label.
            if tmpl.shows_options or self.flan_style:
                label = block.label_for(str(context.get(fields.answer, "")), options)
                if label is not None:
                    context[fields.answer] = label
        if tmpl.uses_dialog:
            context["dialog_"] = self._dialog(context, dialog_rng, where)
        # Input and target draw from the same random state, as if rendered in one pass: a `choice` made in the
        # input is made identically when the target repeats it (promptsource templates rely on this).
        state = rng.getstate() if tmpl.draws else None
        inputs = str(tmpl.input(context, rng))
        if state is not None:
            rng.setstate(state)
        targets = str(tmpl.target(context, rng))
        if self.templates.strip if strip is None else strip:
            inputs, targets = inputs.strip(), targets.strip()
        answer = str(context[fields.answer]) if fields.answer in context else targets
        return Rendered(inputs, targets, options, answer)

    def _dialog(self, context: dict[str, Any], rng: random.Random | None, where: str) -> str:
        turns = context.get(self.fields.dialog)
        if turns is None:
            if "dialog_" in context:
                return str(context["dialog_"])
            raise FlanmixError(f"row {where} has no {self.fields.dialog!r} field for the dialog block",
                               file=self.fields_file, field="dialog_field", expected="a list of dialog turns")
        if not isinstance(turns, (list, tuple)):
            raise FlanmixError(f"dialog field {self.fields.dialog!r} of row {where} is not a list",
                               file=self.fields_file, field="dialog_field", expected="a list of dialog turns")
        return flan_dialog_block(turns, rng)

    def provenance(self) -> dict[str, list[str | None]]:
        """Each list's template sources (`source:`), for lists where any template has one."""
        out = {}
        for kind, items in self.lists.items():
            if items and any(t.spec.source for t in items):
                out[kind] = [t.spec.source for t in items]
        return out
