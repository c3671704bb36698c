"""`flanmix render --batch`: render requests given one per JSONL line, for golden-testing templates.

A request is `{"templates": REF, "variant": "zs_opt"|"zs_noopt"|"fs_opt"|"fs_noopt", "template": K, "row": {...},
"cot": false}`. REF is a task name (the row is a raw source row; the task's field mappings apply) or a template
set reference such as `flan/rte` (the row holds the template's fields directly: `options` as a list, `answer`,
`dialog` as a list of turns). The options block is the deterministic `OPTIONS:\\n- a\\n- b` unless the request
sets `"random_options": true` (drawn from `random.Random(seed)`, `"seed"` default 0).

Few-shot requests give their exemplars as `"exemplars": [row, ...]` (a task without them uses its own training
rows). Optional: `"fewshot_mode"` (`x_shot`, the default, or `template_mix`), `"exemplar_templates"` (a pattern
index per exemplar in template_mix mode; drawn when absent), `"separator"` (template_mix; drawn when absent),
`"budget"` (characters; none by default), `"fewshot_format"` (the glue format of a set without few-shot
patterns; 0 by default).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import open_text
from flanmix.fewshot import MODES, FewShotDropped, flan_prompt, glue_prompt, template_mix_separator
from flanmix.prompts import PromptSet, Rendered, RowFields
from flanmix.task import Example, Task

REQUEST_KEYS = {"templates", "variant", "template", "row", "cot", "random_options", "seed", "exemplars",
                "fewshot_mode", "exemplar_templates", "separator", "budget", "fewshot_format"}
NO_BUDGET = 10**12
TEMPLATE_SET_FIELDS = RowFields(answer="answer", options="options", options_required=False, dialog="dialog")


class Resolver:
    """Finds what a REF names (a task, else a template set) and keeps each one compiled for the next lines."""

    def __init__(self, registry_dirs: Iterable[Path | str] = ()) -> None:
        self.registry_dirs = list(registry_dirs)
        self._registry = None
        self._sets: dict[str, PromptSet] = {}

    def resolve(self, ref: str) -> Task | PromptSet:
        """A task (names never contain '/') or a compiled template set."""
        from flanmix.registry import Registry, find_template_set, read_template_set

        if ref in self._sets:
            return self._sets[ref]
        if "/" not in ref:
            if self._registry is None:
                self._registry = Registry.discover(self.registry_dirs)
            if ref in self._registry:
                return self._registry.get(ref)
        path = find_template_set(ref, self.registry_dirs)
        templates, lines = read_template_set(path)
        self._sets[ref] = PromptSet(templates, fields=TEMPLATE_SET_FIELDS, file=str(path), lines=lines)
        return self._sets[ref]


def _get(request: dict, key: str, kind: type | tuple, default: Any = None) -> Any:
    value = request.get(key, default)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise FlanmixError(f"{key!r} must be {names}, got {type(value).__name__}", field=key)
    return value


def render_request(request: Any, resolver: Resolver) -> Rendered:
    """Render one request (see the module docstring)."""
    if not isinstance(request, dict):
        raise FlanmixError("a request must be a JSON object", expected="{templates, variant, template, row}")
    unknown = sorted(set(request) - REQUEST_KEYS)
    if unknown:
        raise FlanmixError(f"unknown key {unknown[0]!r}", field=unknown[0], expected=", ".join(sorted(REQUEST_KEYS)))
    ref = _get(request, "templates", str)
    if ref is None:
        raise FlanmixError("missing 'templates'", field="templates", expected="a task name or a set like flan/rte")
    variant = _get(request, "variant", str, "zs_opt")
    if variant not in TEMPLATE_TYPES:
        raise FlanmixError(f"unknown variant {variant!r}", field="variant", expected=" | ".join(TEMPLATE_TYPES))
    row = _get(request, "row", dict, {})
    exemplars = _get(request, "exemplars", list, [])
    if not all(isinstance(e, dict) for e in exemplars):
        raise FlanmixError("every exemplar must be a JSON object", field="exemplars")
    target = resolver.resolve(ref)
    options = dict(template_idx=_get(request, "template", int, 0), cot=_get(request, "cot", bool, False),
                   seed=_get(request, "seed", int, 0), randomize=_get(request, "random_options", bool, False))
    if isinstance(target, Task):
        if variant.startswith("fs") and not exemplars:  # the task's own training rows
            return target.render_full(Example("batch", row), template_type=variant,
                                      template_idx=options["template_idx"], cot=options["cot"],
                                      seed=options["seed"], randomize_options=options["randomize"],
                                      fewshot_mode=_get(request, "fewshot_mode", str))
        prompts = target.prompts
        context = target.context(Example("batch", row))
        shots = [target.context(Example(f"batch.exemplar{i}", e)) for i, e in enumerate(exemplars)]
    else:
        prompts, context, shots = target, dict(row), [dict(e) for e in exemplars]
    return _render(prompts, variant, context, shots, request, **options)


def _render(prompts: PromptSet, variant: str, context: dict, shots: list[dict], request: dict, *,
            template_idx: int, cot: bool, seed: int, randomize: bool) -> Rendered:
    items = prompts.items(variant, cot)
    if not 0 <= template_idx < len(items):
        raise FlanmixError(f"template {template_idx} out of range for {variant}", field="template",
                           expected=f"0..{len(items) - 1}" if items else f"a set with {variant} templates")
    rng = random.Random(seed)
    make_block = prompts.block_maker(variant, randomize, rng)
    tmpl = items[template_idx]
    if variant.startswith("zs"):
        return prompts.render_one(context, tmpl, make_block, rng, dialog_rng=rng if randomize else None,
                                  where="row")
    if not shots:
        raise FlanmixError("few-shot variants of a template set need 'exemplars'", field="exemplars",
                           expected="a list of rows")
    budget = _get(request, "budget", int)
    if tmpl.is_pattern:
        mode = _get(request, "fewshot_mode", str, "x_shot")
        if mode not in MODES:
            raise FlanmixError(f"unknown few-shot mode {mode!r}", field="fewshot_mode", expected=" | ".join(MODES))
        separator = None
        pattern_of = [template_idx] * len(shots)
        if mode == "template_mix":
            pattern_of = _get(request, "exemplar_templates", list) or _draw_in_mix(items, len(shots), rng)
            if len(pattern_of) != len(shots) or not all(isinstance(i, int) and 0 <= i < len(items)
                                                       for i in pattern_of):
                raise FlanmixError("'exemplar_templates' needs one valid pattern index per exemplar",
                                   field="exemplar_templates", expected=f"integers in 0..{len(items) - 1}")
            separator = _get(request, "separator", str) or template_mix_separator(rng)
        return flan_prompt(prompts, items, template_idx, context, list(zip(shots, pattern_of)),
                           make_block=make_block, rng=rng, separator=separator, budget=budget, where="row")
    formats = prompts.templates.few_shot
    fmt_index = _get(request, "fewshot_format", int, 0)
    if not 0 <= fmt_index < len(formats):
        raise FlanmixError(f"few-shot format {fmt_index} out of range", field="fewshot_format",
                           expected=f"0..{len(formats) - 1}")
    row = prompts.render_one(dict(context), tmpl, make_block, rng, where="row")
    rendered = (prompts.render_one(dict(shot), tmpl, make_block, rng, where=f"exemplar {i}")
                for i, shot in enumerate(shots))
    inputs = glue_prompt(formats[fmt_index], row, rendered, NO_BUDGET if budget is None else budget)
    return Rendered(inputs, row.targets, row.options, row.answer)


def _draw_in_mix(items: list, count: int, rng: random.Random) -> list[int]:
    in_mix = [i for i, t in enumerate(items) if t.spec.in_template_mix]
    if not in_mix:
        raise FlanmixError("no pattern is in_template_mix", field="fewshot_mode", expected="x_shot")
    return [in_mix[rng.randrange(len(in_mix))] for _ in range(count)]


def render_batch(path: Path | str, registry_dirs: Iterable[Path | str] = ()) -> Iterator[tuple[int, dict]]:
    """Render every request of a JSONL file: (line number, `{"inputs", "targets"}` or `{"line", "error"}`).

    A bad line yields an error line naming the file and line; the others still render. Blank lines are skipped.
    """
    resolver = Resolver(registry_dirs)
    with open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                try:
                    request = json.loads(line)
                except json.JSONDecodeError as err:
                    raise FlanmixError(f"invalid JSON: {err.msg}", expected="one JSON object per line") from None
                out = render_request(request, resolver)
                yield number, {"inputs": out.inputs, "targets": out.targets}
            except FewShotDropped:
                yield number, {"line": number, "error": f"{path}:{number}: no exemplar fits the budget "
                                                        "(FLAN drops this row)"}
            except FlanmixError as err:
                yield number, {"line": number, "error": f"{path}:{number}: {err}"}
