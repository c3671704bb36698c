"""A compiled task: its spec, compiled field mappings and templates, its rows, and Flan-style rendering.

Rendering produces the columns of the public Flan collection releases plus provenance:
`inputs, targets, task_name, task_source, template_type, template_idx, example_id, cot`.
Every random choice (options style, few-shot exemplars, `choice` filter) is drawn from an RNG seeded by
(seed, task, example id, template type, template index, cot), so a render is reproducible and independent of
the order rows are rendered in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flanmix.core.constants import TemplateType
from flanmix.core.errors import FlanmixError
from flanmix.fewshot import MODES, draw_template_mix, draw_x_shot, flan_prompt, glue_prompt, template_mix_separator
from flanmix.prompts import CompiledTemplate, PromptSet, Rendered, RowFields, variant_specs
from flanmix.sources import is_validation, iter_source, stable_seed
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
                 compile_templates: bool = True) -> None:
        """`compile_templates=False` defers compiling the templates to their first use (the bundled FLAN catalog's
        thousands of templates would otherwise cost every command seconds; tests compile each of them)."""
        self.spec = spec
        self.templates = templates
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
        if templates.cot and not spec.rationale_field:
            # CoT templates need a rationale to exist; say so at registration rather than at render time.
            raise FlanmixError("task has cot templates but no rationale_field", file=sfile, field="rationale_field",
                               expected="the name of the field holding the chain-of-thought rationale")

    def with_templates(self, templates: TemplateSet, *, template_file: Path | None = None,
                       template_lines: dict[tuple, int] | None = None) -> Task:
        """This task with another template set (compiled now), sharing the rows this task has loaded: the studio
        re-renders an edited set on every keystroke without reading the data again."""
        task = Task(self.spec, templates, spec_file=self.spec_file, template_file=template_file or self.template_file,
                    template_lines=template_lines, spec_lines=self._spec_lines, data_root=self.data_root)
        task._splits = self._splits
        return task

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
                split = "validation" if is_validation(raw, fraction) else "train"
                splits[split].append(Example(example_id, raw))
            if not splits["train"] and not splits["validation"]:
                raise FlanmixError(f"task {self.name!r}: source produced no rows", file=self.spec_file,
                                   field="source", expected="at least one row")
            self._splits = splits
        return self._splits

    def _check_columns(self, raw: dict) -> None:
        """Every column the filter and the field mappings read exists in the data (else one line naming the task,
        its source and the field), so a dataset whose schema changed fails before anything renders."""
        known = set(raw) | set(ENV.globals) | {RNG_VARIABLE}
        checks = ([("filter", self.spec.filter)] if self.spec.filter else []) + [
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
            rng = _LazyRandom((self.spec.source.seed, self.name, example.example_id, "fields"))
            for name, compiled in self._compiled_mappings()[0]:
                context[name] = compiled(context, rng)
            example.context = context
        return example.context

    # ------------------------------------------------------------------------------------------ rendering
    def _exemplars(self, target: Example, rng: random.Random) -> list[Example]:
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
        rng = _LazyRandom((seed, self.name, example.example_id, template_type, template_idx, cot))
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
        pool = self._load()["train"]
        if not pool:
            raise FlanmixError(f"task {self.name!r} has no training rows for few-shot prompts",
                               file=self.spec_file, field="source")
        rng = rng.materialize()  # a few-shot prompt always draws, many times
        if mode is None:
            draw = template_type == "fs_opt" and rng.random() < self.templates.template_mix
            mode = "template_mix" if draw else "x_shot"
        elif mode not in MODES:
            raise FlanmixError(f"unknown few-shot mode {mode!r}", field="fewshot_mode", expected=" | ".join(MODES))
        separator = None
        if mode == "template_mix" and items[idx].spec.in_template_mix:
            if seed not in self._separators:  # one separator per task (and seed), as FLAN draws one per task
                self._separators[seed] = template_mix_separator(random.Random(stable_seed(seed, self.name,
                                                                                          "template_mix")))
            separator = self._separators[seed]
            exemplars = [(self.context(pool[row]), pattern)
                         for row, pattern in draw_template_mix(rng, len(pool), self.prompts.in_mix(template_type))]
        else:  # x_shot (a pattern outside the template mix always assembles this way)
            exemplars = [(self.context(pool[row]), idx) for row in draw_x_shot(rng, len(pool), len(items))]
        count, budget = self._budget(count_tokens)
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
