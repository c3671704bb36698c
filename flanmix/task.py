"""A compiled task: its spec, compiled field mappings and templates, its rows, and Flan-style rendering.

Rendering produces the columns of the public Flan collection releases plus provenance:
`inputs, targets, task_name, task_source, template_type, template_idx, example_id, cot`.
Every random choice (options style, few-shot exemplars, `choice` filter) is drawn from an RNG seeded by
(seed, task, example id, template type, template index, cot), so a render is reproducible and independent of
the order rows are rendered in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from flanmix.core.constants import TEMPLATE_TYPES, TemplateType
from flanmix.core.errors import FlanmixError
from flanmix.sources import is_validation, iter_source, stable_seed
from flanmix.spec import FewShotFormat, TaskSpec, TemplateSet, TemplateSpec
from flanmix.templates import (DEFAULT_OPTIONS_STYLE, Compiled, OptionsStyle, compile_template, compile_value,
                               format_options, random_options_style, referenced_names,
                               split_choices)

Split = Literal["train", "validation"]


@dataclass
class Example:
    """One source row; `context` (raw fields plus mapped task fields) is computed once, on first use."""

    example_id: str
    raw: dict
    context: dict | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _CompiledTemplate:
    spec: TemplateSpec
    input: Compiled
    target: Compiled
    options: Compiled | None
    shows_options: bool  # the input shows `options_`, so a letter/number marker may stand for the answer
    draws: bool  # the input or target uses the `choice` filter


class _LazyRandom:
    """A `random.Random` seeded by `stable_seed(*parts)`, created on first use: most zero-shot renders draw
    nothing, and hashing the seed parts is a large share of their cost. The draws are those of the seeded RNG."""

    __slots__ = ("_parts", "_rng")

    def __init__(self, parts: tuple) -> None:
        self._parts = parts
        self._rng: random.Random | None = None

    def __getattr__(self, name: str) -> Any:
        if self._rng is None:
            self._rng = random.Random(stable_seed(*self._parts))
        return getattr(self._rng, name)


@dataclass(frozen=True)
class Rendered:
    """A rendered input/target pair and, for evaluation, the options shown and the expected answer."""

    inputs: str
    targets: str
    options: list[str] | None
    answer: str


class Task:
    """A registered task, ready to render."""

    def __init__(self, spec: TaskSpec, templates: TemplateSet, *, spec_file: Path | None = None,
                 template_file: Path | None = None, template_lines: dict[tuple, int] | None = None,
                 spec_lines: dict[str, int] | None = None) -> None:
        self.spec = spec
        self.templates = templates
        self.spec_file = spec_file
        self.template_file = template_file or spec_file
        self._splits: dict[str, list[Example]] | None = None
        tfile = str(self.template_file) if self.template_file else f"<task {spec.name}>"
        sfile = str(spec_file) if spec_file else f"<task {spec.name}>"
        spec_lines = spec_lines or {}
        template_lines = template_lines or {}
        self._fields = [(name, compile_value(src, field=f"fields.{name}", file=sfile,
                                             line=spec_lines.get(name)))
                        for name, src in spec.fields.items()]

        def compile_set(kind: str, items: list[TemplateSpec]) -> list[_CompiledTemplate]:
            out = []
            for i, tmpl in enumerate(items):
                def where(part: str) -> dict:
                    return {"field": f"{kind}[{i}].{part}", "file": tfile,
                            "line": template_lines.get((kind, i, part))}
                out.append(_CompiledTemplate(
                    tmpl, compile_template(tmpl.input, **where("input")),
                    compile_template(tmpl.target, **where("target")),
                    compile_value(tmpl.options, **where("options")) if tmpl.options else None,
                    not tmpl.inverted and "options_" in referenced_names(tmpl.input),
                    "choice" in tmpl.input or "choice" in tmpl.target))
            return out

        self._zero_shot = compile_set("zero_shot", templates.zero_shot)
        self._cot = compile_set("cot", templates.cot)
        if self._cot and not spec.rationale_field:
            # CoT templates need a rationale to exist; say so at registration rather than at render time.
            raise FlanmixError("task has cot templates but no rationale_field", file=sfile, field="rationale_field",
                               expected="the name of the field holding the chain-of-thought rationale")

    # ------------------------------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cluster(self) -> str:
        return self.spec.cluster

    @property
    def has_cot(self) -> bool:
        return bool(self._cot)

    @property
    def has_options(self) -> bool:
        return bool(self.spec.options_field) or any(t.options for t in self._zero_shot + self._cot)

    def num_templates(self, cot: bool = False) -> int:
        return len(self._cot if cot else self._zero_shot)

    def template_indices(self, *, cot: bool = False, inverted: bool | None = None) -> list[int]:
        """Indices of the zero-shot (or CoT) templates, optionally only (non-)inverted ones."""
        items = self._cot if cot else self._zero_shot
        return [i for i, t in enumerate(items) if inverted is None or t.spec.inverted == inverted]

    def variants(self) -> list[str]:
        """The template types this task renders meaningfully (opt variants need answer options)."""
        kinds = ["zs_opt", "zs_noopt", "fs_opt", "fs_noopt"] if self.has_options else ["zs_noopt", "fs_noopt"]
        return kinds

    # ------------------------------------------------------------------------------------------ rows
    def _load(self) -> dict[str, list[Example]]:
        if self._splits is None:
            base = self.spec_file.parent if self.spec_file else Path.cwd()
            splits: dict[str, list[Example]] = {"train": [], "validation": []}
            fraction = self.spec.validation_fraction
            for example_id, raw in iter_source(self.spec.source, task_name=self.name, base_dir=base,
                                               file=str(self.spec_file) if self.spec_file else None):
                split = "validation" if is_validation(raw, fraction) else "train"
                splits[split].append(Example(example_id, raw))
            if not splits["train"] and not splits["validation"]:
                raise FlanmixError(f"task {self.name!r}: source produced no rows", file=self.spec_file,
                                   field="source", expected="at least one row")
            self._splits = splits
        return self._splits

    def examples(self, split: Split = "train") -> list[Example]:
        """The task's examples of one split (train, or the held-out validation rows)."""
        if split not in ("train", "validation"):
            raise FlanmixError(f"unknown split {split!r}", expected="train or validation")
        return self._load()[split]

    def context(self, example: Example) -> dict:
        """Raw fields plus mapped task fields for one example (cached on the example)."""
        if example.context is None:
            context = dict(example.raw)
            # A `choice` in a field mapping draws per example, seeded by (source seed, task, example id).
            rng = _LazyRandom((self.spec.source.seed, self.name, example.example_id, "fields"))
            for name, compiled in self._fields:
                context[name] = compiled(context, rng)
            example.context = context
        return example.context

    # ------------------------------------------------------------------------------------------ rendering
    def _render_one(self, example: Example, tmpl: _CompiledTemplate, with_options: bool, style: OptionsStyle,
                    rng: random.Random) -> Rendered:
        context = dict(self.context(example))
        answer_field = self.spec.answer_field
        options: list[str] | None = None
        if tmpl.options is not None:
            options = split_choices(tmpl.options(context, rng))
            context["answer_choices"] = options
        elif self.spec.options_field:
            if self.spec.options_field not in context:
                raise FlanmixError(f"options field {self.spec.options_field!r} missing from row {example.example_id}",
                                   file=self.spec_file, field="options_field")
            options = split_choices(context[self.spec.options_field])
        context["options_"] = ""
        if with_options and options:
            block = format_options(options, style)
            context["options_"] = block.text
            answer = str(context.get(answer_field, ""))
            # Only a template that shows the markers may answer with one; inverted and option-less templates keep
            # the answer text (else a CoT target could end in "So the answer is (B).").
            if block.labels and tmpl.shows_options and answer in options:
                context[answer_field] = block.labels[options.index(answer)]
        # Input and target draw from the same random state, as if rendered in one pass: a `choice` made in the
        # input is made identically when the target repeats it (promptsource templates rely on this).
        state = rng.getstate() if tmpl.draws else None
        inputs = str(tmpl.input(context, rng)).strip()
        if state is not None:
            rng.setstate(state)
        targets = str(tmpl.target(context, rng)).strip()
        answer = str(context[answer_field]) if answer_field in context else targets
        return Rendered(inputs, targets, options, answer)

    def _exemplars(self, target: Example, rng: random.Random, split: Split) -> list[Example]:
        pool = self.examples("train")
        k = self.spec.few_shot_k
        candidates: list[Example] = []
        for index in rng.sample(range(len(pool)), min(len(pool), k + 2)):
            candidate = pool[index]
            # Never show the target (or an identical copy of it) as its own exemplar.
            if candidate.example_id == target.example_id or candidate.raw == target.raw:
                continue
            candidates.append(candidate)
            if len(candidates) == k:
                break
        if not candidates:
            raise FlanmixError(f"task {self.name!r} has too few training rows for few-shot prompts",
                               file=self.spec_file, field="source", expected="at least 2 distinct rows")
        return candidates

    def render(self, example: Example, *, template_type: TemplateType = "zs_noopt", template_idx: int = 0,
               cot: bool = False, seed: int = 0, split: Split = "train", randomize_options: bool = False,
               fewshot_format: int | None = None) -> dict[str, Any]:
        """Render one example as a mixture row (the Flan columns plus provenance)."""
        rendered = self.render_full(example, template_type=template_type, template_idx=template_idx, cot=cot,
                                    seed=seed, split=split, randomize_options=randomize_options,
                                    fewshot_format=fewshot_format)
        return {"inputs": rendered.inputs, "targets": rendered.targets, "task_name": self.name,
                "task_source": self.spec.collection, "template_type": template_type, "template_idx": template_idx,
                "example_id": example.example_id, "cot": cot}

    def render_full(self, example: Example, *, template_type: TemplateType = "zs_noopt", template_idx: int = 0,
                    cot: bool = False, seed: int = 0, split: Split = "train", randomize_options: bool = False,
                    fewshot_format: int | None = None) -> Rendered:
        """Render one example and keep the options and expected answer (used by evaluation)."""
        if template_type not in TEMPLATE_TYPES:
            raise FlanmixError(f"unknown template type {template_type!r}", field="template_type",
                               expected=" | ".join(TEMPLATE_TYPES))
        items = self._cot if cot else self._zero_shot
        if not items:
            raise FlanmixError(f"task {self.name!r} has no {'cot' if cot else 'zero_shot'} templates",
                               file=self.template_file, field="cot" if cot else "zero_shot")
        if not 0 <= template_idx < len(items):
            raise FlanmixError(f"template index {template_idx} out of range for task {self.name!r}",
                               field="template_idx", expected=f"0..{len(items) - 1}")
        rng = _LazyRandom((seed, self.name, example.example_id, template_type, template_idx, cot))
        with_options = template_type in ("zs_opt", "fs_opt")
        style = random_options_style(rng) if (randomize_options and with_options) else DEFAULT_OPTIONS_STYLE
        tmpl = items[template_idx]
        target = self._render_one(example, tmpl, with_options, style, rng)
        if template_type.startswith("zs"):
            return target
        formats = self.templates.few_shot
        fmt: FewShotFormat = formats[fewshot_format if fewshot_format is not None else rng.randrange(len(formats))]
        shots: list[str] = []
        budget = self.spec.few_shot_max_chars - len(target.inputs)
        for exemplar in self._exemplars(example, rng, split):
            shot = self._render_one(exemplar, tmpl, with_options, style, rng)
            text = f"{fmt.inputs_prefix}{shot.inputs}{fmt.x_y_delimiter}{fmt.targets_prefix}{shot.targets}"
            if shots and len(text) + len(fmt.example_separator) > budget:
                break
            budget -= len(text) + len(fmt.example_separator)
            shots.append(text)
        final = f"{fmt.inputs_prefix}{target.inputs}{fmt.x_y_delimiter}{fmt.targets_prefix.rstrip()}"
        inputs = fmt.example_separator.join([*shots, final]) + fmt.final_suffix
        return Rendered(inputs, target.targets, target.options, target.answer)

    def iter_renders(self, *, split: Split = "train", template_type: TemplateType = "zs_noopt", cot: bool = False,
                     seed: int = 0, limit: int | None = None) -> Iterable[dict[str, Any]]:
        """Render examples of a split, cycling over the templates (a quick preview helper)."""
        indices = self.template_indices(cot=cot)
        for n, example in enumerate(self.examples(split)[:limit]):
            yield self.render(example, template_type=template_type, template_idx=indices[n % len(indices)],
                              cot=cot, seed=seed, split=split)

    def __repr__(self) -> str:
        return f"Task({self.name!r}, cluster={self.cluster!r}, source={self.spec.source.describe()!r})"
