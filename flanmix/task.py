"""A compiled task: its spec, compiled field mappings and templates, its rows, and Flan-style rendering.

Rendering produces the columns of the public Flan collection releases plus provenance:
`inputs, targets, task_name, task_source, template_type, template_idx, example_id, cot`.
Every random choice (options style, few-shot exemplars, `choice` filter) is drawn from an RNG seeded by
(seed, task, example id, template type, template index, cot), so a render is reproducible and independent of
the order rows are rendered in.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flanmix.core.constants import TemplateType
from flanmix.core.errors import FlanmixError
from flanmix.fewshot import (
    MODES,
    FewShotDropped,
    draw_fixed,
    draw_template_mix,
    draw_x_shot,
    flan_prompt,
    glue_prompt,
    template_mix_separator,
)
from flanmix.prompts import CompiledTemplate, PromptSet, Rendered, RowFields, variant_specs
from flanmix.sources import NIV2_TASK_FIELD, is_validation, iter_source, stable_seed
from flanmix.spec import FewShotFormat, TaskSpec, TemplateSet
from flanmix.templates import ENV, RNG_VARIABLE, Compiled, compile_value, referenced_names

Split = Literal["train", "validation"]
Counter = Callable[[str], int]


def compile_filter(source: str, *, file: str | None = None, line: int | None = None) -> Compiled:
    """Compile a spec's `filter`: one Jinja expression (bare, or in `{{ }}`) evaluated on a raw row."""
    text = source.strip()
    if not text.startswith("{{"):
        text = "{{ " + text + " }}"
    if text.count("{{") != 1 or not text.endswith("}}"):
        raise FlanmixError("a filter is one Jinja expression", file=file, line=line, field="filter",
                           expected="e.g. `label != -1` or `{{ label != -1 }}`")
    return compile_value(text, field="filter", file=file, line=line)


@dataclass
class Example:
    """One source row; `context` (raw fields plus mapped task fields) is computed once, on first use."""

    example_id: str
    raw: dict
    context: dict | None = field(default=None, repr=False)


class _LazyRandom:
    """A `random.Random` seeded by `stable_seed(*parts)`, created on first use: most zero-shot renders draw
    nothing, and hashing the seed parts is a large share of their cost. The draws are those of the seeded RNG."""

    __slots__ = ("_parts", "_rng")

    def __init__(self, parts: tuple) -> None:
        self._parts = parts
        self._rng: random.Random | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.materialize(), name)

    def materialize(self) -> random.Random:
        """The seeded `random.Random` itself (for code about to draw many times)."""
        if self._rng is None:
            self._rng = random.Random(stable_seed(*self._parts))
        return self._rng


class Task:
    """A registered task, ready to render."""

    def __init__(self, spec: TaskSpec, templates: TemplateSet, *, spec_file: Path | None = None,
                 template_file: Path | None = None, template_lines: dict[tuple, int] | None = None,
                 spec_lines: dict[str, int] | None = None, data_root: Path | None = None,
                 compile_templates: bool = True, template_mix_set: TemplateSet | None = None) -> None:
        """`compile_templates=False` defers compiling the templates to their first use (the bundled FLAN catalog's
        thousands of templates would otherwise cost every command seconds; tests compile each of them).
        `template_mix_set` is the set the spec's `template_mix_templates` names (the registry loads it)."""
        self.spec = spec
        self.templates = templates
        self.template_mix_set = template_mix_set
        self.seed_name = spec.name  # what every draw is seeded by (a group view keeps its task's)
        self._groups: dict[str, array] | None = None  # few-shot group -> indices of its training rows
        self._group_expr: Compiled | None = None
        self._validation_groups: dict[str, list[Example]] | None = None
        self._mix_prompts: PromptSet | None = None
        self.spec_file = spec_file
        # The folder a spec file's data files must stay in (its registry folder; docs/security.md).
        self.data_root = data_root or (spec_file.parent if spec_file else None)
        self.template_file = template_file or spec_file
        self._splits: dict[str, list[Example]] | None = None
        self._separators: dict[int, str] = {}  # template_mix separator per render seed
        tfile = str(self.template_file) if self.template_file else f"<task {spec.name}>"
        sfile = str(spec_file) if spec_file else f"<task {spec.name}>"
        self._spec_lines = spec_lines or {}
        self._mappings: tuple[list[tuple[str, Compiled]], Compiled | None] | None = None
        fields = RowFields(answer=spec.answer_field, options=spec.options_field, dialog=spec.dialog_field)
        self._prompt_args = (fields, tfile, template_lines, sfile)
        self._prompts: PromptSet | None = None
        if compile_templates:
            self._prompts = self.prompts
            self._compiled_mappings()
        if template_mix_set is not None and len(template_mix_set.zero_shot) != self.num_templates(
                template_type="fs_opt"):
            raise FlanmixError(f"task {spec.name!r}: template_mix_templates has {len(template_mix_set.zero_shot)} "
                               f"zero_shot templates, the task {self.num_templates(template_type='fs_opt')} fs_opt "
                               "templates", file=sfile, field="template_mix_templates",
                               expected="one template per fs_opt template (template K pairs with pattern K)")
        if templates.cot and not spec.rationale_field:
            # CoT templates need a rationale to exist; say so at registration rather than at render time.
            raise FlanmixError("task has cot templates but no rationale_field", file=sfile, field="rationale_field",
                               expected="the name of the field holding the chain-of-thought rationale")

    def with_templates(self, templates: TemplateSet, *, template_file: Path | None = None,
                       template_lines: dict[tuple, int] | None = None) -> Task:
        """This task with another template set (compiled now), sharing the rows this task has loaded: the studio
        re-renders an edited set on every keystroke without reading the data again."""
        task = Task(self.spec, templates, spec_file=self.spec_file, template_file=template_file or self.template_file,
                    template_lines=template_lines, spec_lines=self._spec_lines, data_root=self.data_root,
                    template_mix_set=self.template_mix_set)
        task._splits = self._splits
        return task

    def group_view(self, group: str) -> Task:
        """The rows of one few-shot group as a task named `group` (a mixture's `split_by_group`): it shares this
        task's templates, compiled mappings and loaded rows, and seeds its draws by this task's name, so a row
        renders the same in both."""
        indices = self.groups()[group]
        train = self.examples("train")
        view = Task(self.spec.model_copy(update={"name": group}), self.templates, spec_file=self.spec_file,
                    template_file=self.template_file, spec_lines=self._spec_lines, data_root=self.data_root,
                    compile_templates=False, template_mix_set=self.template_mix_set)
        # Compiled once, here, for all the views (NIv2 has 1,556 of them).
        view._prompts, view._mappings = self.prompts, self._compiled_mappings()
        view._mix_prompts = self.mix_prompts if self.template_mix_set is not None else None
        view._prompt_args, view.seed_name = self._prompt_args, self.seed_name
        if self._validation_groups is None:  # grouped once for all the views
            self._validation_groups = {}
            for example in self.examples("validation"):
                self._validation_groups.setdefault(self.group_of(example), []).append(example)
        view._splits = {"train": [train[i] for i in indices], "validation": self._validation_groups.get(group, [])}
        view._groups = {group: array("q", range(len(indices)))}
        return view

    # ------------------------------------------------------------------------------------------ properties
    @property
    def prompts(self) -> PromptSet:
        """The compiled template set (compiled on first use when the task was created with
        `compile_templates=False`)."""
        if self._prompts is None:
            fields, tfile, lines, sfile = self._prompt_args
            self._prompts = PromptSet(self.templates, fields=fields, file=tfile, lines=lines, fields_file=sfile)
        return self._prompts

    def _compiled_mappings(self) -> tuple[list[tuple[str, Compiled]], Compiled | None]:
        """The compiled field mappings and filter (compiled on first use, like the templates)."""
        if self._mappings is None:
            sfile, lines = self._prompt_args[3], self._spec_lines
            fields = [(name, compile_value(src, field=f"fields.{name}", file=sfile, line=lines.get(name)))
                      for name, src in self.spec.fields.items()]
            where = {"file": sfile, "line": lines.get("filter")}
            self._mappings = fields, compile_filter(self.spec.filter, **where) if self.spec.filter else None
        return self._mappings

    @property
    def mix_prompts(self) -> PromptSet:
        """The compiled `template_mix_templates` set (compiled on first use)."""
        if self.template_mix_set is None:
            raise FlanmixError(f"task {self.name!r} names template_mix_templates but was built without that set",
                               file=self._prompt_args[3], field="template_mix_templates",
                               expected="a task loaded by the registry (it loads the set)")
        if self._mix_prompts is None:
            fields, _, _, sfile = self._prompt_args
            self._mix_prompts = PromptSet(self.template_mix_set, fields=fields, fields_file=sfile,
                                          file=f"<template_mix_templates {self.spec.template_mix_templates}>")
        return self._mix_prompts

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cluster(self) -> str:
        return self.spec.cluster

    @property
    def has_cot(self) -> bool:
        return bool(self.templates.cot)

    @property
    def has_options(self) -> bool:
        return bool(self.spec.options_field) or any(
            t.options for kind in ("zero_shot", "cot") for t in getattr(self.templates, kind))

    @property
    def has_opt_variants(self) -> bool:
        """Whether zs_opt/fs_opt rows differ from the no-options ones: the task shows answer options, or its set
        words the two variants differently (FLAN renders a summarization task in both wordings)."""
        return self.has_options or self.templates.zero_shot_no_options is not None

    def num_templates(self, cot: bool = False, template_type: TemplateType = "zs_opt") -> int:
        """How many templates a variant draws from (zero-shot by default; read without compiling them)."""
        return len(variant_specs(self.templates, template_type, cot))

    def template_indices(self, *, cot: bool = False, inverted: bool | None = None,
                         template_type: TemplateType = "zs_opt") -> list[int]:
        """Indices of a variant's templates (zero-shot by default), optionally only (non-)inverted ones."""
        items = variant_specs(self.templates, template_type, cot)
        return [i for i, t in enumerate(items) if inverted is None or t.inverted == inverted]

    def same_templates_in_every_variant(self, cot: bool = False) -> bool:
        """True when every variant draws from one list of the same length (template K means the same K)."""
        return len({self.num_templates(cot, t) for t in ("zs_opt", "zs_noopt", "fs_opt", "fs_noopt")}) == 1

    def variants(self) -> list[str]:
        """The template types this task renders meaningfully (opt variants need answer options; few-shot variants
        need few-shot patterns when the set lists them)."""
        kinds = ["zs_opt", "zs_noopt", "fs_opt", "fs_noopt"] if self.has_opt_variants else ["zs_noopt", "fs_noopt"]
        return [k for k in kinds if k.startswith("zs") or self.num_templates(template_type=k) > 0]

    def provenance(self) -> dict[str, list[str | None]]:
        """Template sources per template list (e.g. FLAN key and index), for lists that record them."""
        return self.prompts.provenance()

    # ------------------------------------------------------------------------------------------ rows
    def _load(self) -> dict[str, list[Example]]:
        if self._splits is None:
            base = self.spec_file.parent if self.spec_file else Path.cwd()
            splits: dict[str, list[Example]] = {"train": [], "validation": []}
            fraction = self.spec.validation_fraction
            for example_id, raw in iter_source(self.spec.source, task_name=self.name, base_dir=base,
                                               file=str(self.spec_file) if self.spec_file else None,
                                               root=self.data_root):
                if not splits["train"] and not splits["validation"] and self.spec.source.kind in ("hub", "repo"):
                    self._check_columns(raw)  # a catalog mapping names the dataset's columns: check them once
                if self.spec.filter is not None and not self._keep(example_id, raw):
                    continue
                split = "validation" if is_validation(self._split_content(raw), fraction) else "train"
                splits[split].append(Example(example_id, raw))
            if not splits["train"] and not splits["validation"]:
                raise FlanmixError(f"task {self.name!r}: source produced no rows", file=self.spec_file,
                                   field="source", expected="at least one row")
            self._splits = splits
        return self._splits

    def _split_content(self, raw: dict) -> dict:
        """What the content-based split hashes: the row without its NIv2 task name (provenance, added after the
        split was defined: leaving it out keeps every row on its side)."""
        if self.spec.source.format == "niv2" and NIV2_TASK_FIELD in raw:
            return {k: v for k, v in raw.items() if k != NIV2_TASK_FIELD}
        return raw

    def _check_columns(self, raw: dict) -> None:
        """Every column the filter and the field mappings read exists in the data (else one line naming the task,
        its source and the field), so a dataset whose schema changed fails before anything renders."""
        known = set(raw) | set(ENV.globals) | {RNG_VARIABLE}
        group = self.spec.few_shot_group
        checks = ([("filter", self.spec.filter)] if self.spec.filter else []) + (
            [("few_shot_group", "{{ " + group.strip().strip("{}") + " }}")] if group else []) + [
            (f"fields.{name}", src) for name, src in self.spec.fields.items()]
        for field_name, source in checks:
            missing = sorted(referenced_names(source) - known)
            if missing:
                raise FlanmixError(f"task {self.name!r} (source {self.spec.source.describe()}): column "
                                   f"{missing[0]!r} is not in the data", file=self.spec_file, field=field_name,
                                   expected=f"one of the columns {sorted(raw)[:20]}")
            if field_name.startswith("fields."):
                known.add(field_name[len("fields."):])  # later mappings may read earlier ones

    def _keep(self, example_id: str, raw: dict) -> bool:
        """The spec's `filter` on one raw row; an error names the task, its source and the row."""
        try:
            return bool(self._compiled_mappings()[1](raw))
        except FlanmixError as err:
            raise FlanmixError(f"task {self.name!r} (source {self.spec.source.describe()}): filter failed on row "
                               f"{example_id}: {err.message}", file=err.file, line=err.line, field="filter",
                               expected=err.expected) from None

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
            rng = _LazyRandom((self.spec.source.seed, self.seed_name, example.example_id, "fields"))
            for name, compiled in self._compiled_mappings()[0]:
                context[name] = compiled(context, rng)
            example.context = context
        return example.context

    def group_of(self, example: Example) -> str:
        """The example's few-shot group (the spec's `few_shot_group` over its raw row): a non-empty string."""
        if self._group_expr is None:
            where = {"file": self._prompt_args[3], "line": self._spec_lines.get("few_shot_group")}
            if self.spec.few_shot_group is None:
                raise FlanmixError(f"task {self.name!r} has no few_shot_group", field="few_shot_group", **where,
                                   expected="a Jinja expression over the raw row naming its group")
            try:
                self._group_expr = compile_filter(self.spec.few_shot_group, **where)
            except FlanmixError as err:
                raise FlanmixError(f"task {self.name!r}: few_shot_group: {err.message}", **where,
                                   field="few_shot_group", expected="one Jinja expression, e.g. task_name") from None
        try:
            value = self._group_expr(example.raw)
        except FlanmixError as err:
            raise FlanmixError(f"task {self.name!r} (source {self.spec.source.describe()}): few_shot_group failed "
                               f"on row {example.example_id}: {err.message}", file=err.file, line=err.line,
                               field="few_shot_group", expected=err.expected) from None
        group = "" if value is None else str(value)
        if not group.strip():
            raise FlanmixError(f"task {self.name!r}: few_shot_group is empty for row {example.example_id}",
                               file=self._prompt_args[3], line=self._spec_lines.get("few_shot_group"),
                               field="few_shot_group", expected="a non-empty group name for every row")
        return group

    def groups(self) -> dict[str, array]:
        """Few-shot group -> indices of its training rows, in order of first appearance (computed once; compact
        arrays, as NIv2 has millions of rows and forked build workers share them)."""
        if self._groups is None:
            groups: dict[str, array] = {}
            for i, example in enumerate(self.examples("train")):
                group = self.group_of(example)
                if group not in groups:
                    groups[group] = array("q")
                groups[group].append(i)
            self._groups = groups
        return self._groups

    def _pool(self, example: Example) -> tuple[int, Callable[[int], Example]]:
        """The few-shot pool of a row: its group's training rows (`few_shot_group`), else every training row;
        as (size, position -> example)."""
        train = self._load()["train"]
        if self.spec.few_shot_group is None:
            return len(train), train.__getitem__
        group = self.groups().get(self.group_of(example), [])
        return len(group), lambda p: train[group[p]]

    # ------------------------------------------------------------------------------------------ rendering
    def _exemplars(self, target: Example, rng: random.Random) -> list[Example]:
        size, at = self._pool(target)
        k = self.spec.few_shot_k
        candidates: list[Example] = []
        for index in rng.sample(range(size), min(size, k + 2)):
            candidate = at(index)
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
               fewshot_format: int | None = None, count_tokens: Counter | None = None) -> dict[str, Any]:
        """Render one example as a mixture row (the Flan columns plus provenance)."""
        rendered = self.render_full(example, template_type=template_type, template_idx=template_idx, cot=cot,
                                    seed=seed, split=split, randomize_options=randomize_options,
                                    fewshot_format=fewshot_format, count_tokens=count_tokens)
        return {"inputs": rendered.inputs, "targets": rendered.targets, "task_name": self.name,
                "task_source": self.spec.collection, "template_type": template_type, "template_idx": template_idx,
                "example_id": example.example_id, "cot": cot}

    def render_full(self, example: Example, *, template_type: TemplateType = "zs_noopt", template_idx: int = 0,
                    cot: bool = False, seed: int = 0, split: Split = "train", randomize_options: bool = False,
                    fewshot_format: int | None = None, count_tokens: Counter | None = None,
                    fewshot_mode: str | None = None) -> Rendered:
        """Render one example and keep the options and expected answer (used by evaluation).

        `count_tokens` measures the few-shot budget in tokens (`few_shot_max_tokens`) instead of characters.
        `fewshot_mode` forces FLAN's x_shot or template_mix assembly (default: drawn, see `template_mix`).
        FLAN few-shot rows with no exemplar left raise `flanmix.fewshot.FewShotDropped`.
        """
        items = self.prompts.items(template_type, cot)
        if not items:
            kind = self.prompts.list_name(template_type, cot)
            raise FlanmixError(f"task {self.name!r} has no {kind} templates", file=self.template_file, field=kind)
        if not 0 <= template_idx < len(items):
            raise FlanmixError(f"template index {template_idx} out of range for task {self.name!r}",
                               field="template_idx", expected=f"0..{len(items) - 1}")
        rng = _LazyRandom((seed, self.seed_name, example.example_id, template_type, template_idx, cot))
        make_block = self.prompts.block_maker(template_type, randomize_options, rng)
        tmpl = items[template_idx]
        if tmpl.is_pattern:
            return self._render_pattern(example, items, template_idx, template_type, make_block, rng, seed,
                                        count_tokens, fewshot_mode)
        dialog_rng = rng if randomize_options and template_type.startswith("zs") else None
        target = self.prompts.render_one(dict(self.context(example)), tmpl, make_block, rng, dialog_rng=dialog_rng,
                                         where=example.example_id)
        if template_type.startswith("zs"):
            return target
        formats = self.templates.few_shot
        fmt: FewShotFormat = formats[fewshot_format if fewshot_format is not None else rng.randrange(len(formats))]
        shots = (self.prompts.render_one(dict(self.context(exemplar)), tmpl, make_block, rng,
                                         where=exemplar.example_id)
                 for exemplar in self._exemplars(example, rng))
        count, budget = self._budget(count_tokens)
        inputs = glue_prompt(fmt, target, shots, budget, count)
        return Rendered(inputs, target.targets, target.options, target.answer)

    def _budget(self, count_tokens: Counter | None) -> tuple[Counter, int]:
        if count_tokens is None:
            return len, self.spec.few_shot_max_chars
        return count_tokens, self.spec.few_shot_max_tokens

    def _render_pattern(self, example: Example, items: list[CompiledTemplate], idx: int, template_type: str,
                        make_block, rng: _LazyRandom, seed: int, count_tokens: Counter | None,
                        mode: str | None) -> Rendered:
        """A FLAN few-shot prompt (x_shot or template_mix) for one row."""
        if not self._load()["train"]:
            raise FlanmixError(f"task {self.name!r} has no training rows for few-shot prompts",
                               file=self.spec_file, field="source")
        rng = rng.materialize()  # a few-shot prompt always draws, many times
        if mode is None:
            draw = template_type == "fs_opt" and rng.random() < self.templates.template_mix
            mode = "template_mix" if draw else "x_shot"
        elif mode not in MODES:
            raise FlanmixError(f"unknown few-shot mode {mode!r}", field="fewshot_mode", expected=" | ".join(MODES))
        if mode == "template_mix" and self.spec.template_mix_templates is not None:
            # FLAN's NIv2 template_mix_five_shot: a zero-shot template with the exemplar inline, no drawn exemplars.
            mix = self.mix_prompts
            return mix.render_one(dict(self.context(example)), mix.items("zs_opt")[idx],
                                  mix.block_maker(template_type, False, rng), rng, where=example.example_id)
        size, at = self._pool(example)
        if size == 0:  # a row whose group has no training rows (e.g. a held-out row of a small group)
            raise FewShotDropped(f"no training row in the few-shot group of row {example.example_id}")
        separator = None
        count, budget = self._budget(count_tokens)
        if mode == "template_mix" and items[idx].spec.in_template_mix:
            if seed not in self._separators:  # one separator per task (and seed), as FLAN draws one per task
                self._separators[seed] = template_mix_separator(random.Random(stable_seed(seed, self.seed_name,
                                                                                          "template_mix")))
            separator = self._separators[seed]
            exemplars = [(self.context(at(row)), pattern)
                         for row, pattern in draw_template_mix(rng, size, self.prompts.in_mix(template_type))]
        elif self.spec.x_shot_exemplars is not None:  # exactly k rows, no budget (FLAN's NIv2 x_shot)
            rows = draw_fixed(rng, size, self.spec.x_shot_exemplars, lambda p: at(p).example_id == example.example_id)
            exemplars, budget = [(self.context(at(row)), idx) for row in rows], None
        else:  # x_shot (a pattern outside the template mix always assembles this way)
            exemplars = [(self.context(at(row)), idx) for row in draw_x_shot(rng, size, len(items))]
        return flan_prompt(self.prompts, items, idx, self.context(example), exemplars, make_block=make_block,
                           rng=rng, separator=separator, budget=budget, count=count, where=example.example_id)

    def iter_renders(self, *, split: Split = "train", template_type: TemplateType = "zs_noopt", cot: bool = False,
                     seed: int = 0, limit: int | None = None) -> Iterable[dict[str, Any]]:
        """Render examples of a split, cycling over the templates (a quick preview helper)."""
        indices = self.template_indices(cot=cot, template_type=template_type)
        for n, example in enumerate(self.examples(split)[:limit]):
            yield self.render(example, template_type=template_type, template_idx=indices[n % len(indices)],
                              cot=cot, seed=seed, split=split)

    def __repr__(self) -> str:
        return f"Task({self.name!r}, cluster={self.cluster!r}, source={self.spec.source.describe()!r})"
