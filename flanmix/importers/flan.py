"""Import FLAN's own templates (`flanmix import flan SRC --out DIR`): one template set per FLAN pattern key.

`read_flan_tables` (flan_source) reads FLAN's files as data; this module turns each key into a template set at
`DIR/templates/flan/<slug>.yaml`, in FLAN's key order, with FLAN's list order in every variant:

- zs_opt template K = `PATTERNS[key][K]` (`zero_shot`),
- zs_noopt template K = `PATTERNS_NO_OPTIONS[key][K]` as FLAN derives it (`zero_shot_no_options`),
- few-shot pattern K = `FEWSHOT_PATTERNS[key][K]` and its no-options form (`few_shot_patterns[_no_options]`;
  an empty list for the one key FLAN gives no few-shot patterns).

`{name}` becomes `{{ name }}`; every other character stays literal (runs with braces become Jinja string
constants), so a value is never read as template syntax. Each template records its FLAN table, key and index in
`source`. The sets use `strip: false` (FLAN's whitespace) and `options_style: flan`. Keys named
`*_input_inversion` are annotated `inverted: true`; FLAN flags no other template. FLAN's inline few-shot patterns
for NIv2 become `flan/natinst_v2_inline_fs`, and the Flan 2021 file (when present) `flan2021/<slug>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flanmix.core.errors import FlanmixError
from flanmix.importers._common import dump_yaml, write_files
from flanmix.importers.flan_source import FewShotPatternData, FlanTables, flan_key_slug, read_flan_tables
from flanmix.spec import FewShotPattern, TemplateSet, TemplateSpec
from flanmix.templates import jinja_string

_PLACEHOLDER = re.compile(r"({\w*})")
_PATTERN_PLACEHOLDER = re.compile(r"({{\w+}}|{\w*})")  # input_pattern: `{{inputs}}`, `{{Definition}}`, `{final_suffix}`
# Names Jinja reads as constants or operators, not as variables.
_JINJA_WORDS = frozenset({"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False",
                          "None"})
INLINE_FS_SET = "natinst_v2_inline_fs"


def flan_to_jinja(text: str, *, pattern: bool = False) -> str:
    """FLAN's `{name}` placeholders as Jinja `{{ name }}`, everything else literal.

    FLAN substitutes by splitting on `({\\w*})`; every other character is literal. Literal runs with a brace
    (which Jinja could read as syntax next to a placeholder) or a carriage return (which Jinja would normalize)
    become string constants. With `pattern`, FLAN's few-shot `input_pattern` is converted: there `{{inputs}}` and
    `{{Definition}}` are placeholders too.
    """
    out = []
    for part in (_PATTERN_PLACEHOLDER if pattern else _PLACEHOLDER).split(text):
        if not part:
            continue
        if (_PATTERN_PLACEHOLDER if pattern else _PLACEHOLDER).fullmatch(part):
            name = part.strip("{}")
            if not name.isidentifier() or name in _JINJA_WORDS:
                raise FlanmixError(f"placeholder {part!r} is not a name flanmix can render",
                                   expected="{identifier}")
            out.append("{{ " + name + " }}")
        elif "{" in part or "}" in part or "\r" in part:
            out.append("{{ " + jinja_string(part) + " }}")
        else:
            out.append(part)
    return "".join(out)


@dataclass(frozen=True)
class FlanImport:
    """The template sets of one FLAN import, by reference (`flan/rte`), and the counts for the summary."""

    sets: dict[str, TemplateSet]
    counts: dict[str, int]


def _zero_shot(pairs: tuple, table: str, key: str, *, inverted: bool, where: str) -> list[TemplateSpec]:
    out = []
    for k, (inputs, targets) in enumerate(pairs):
        try:
            out.append(TemplateSpec(input=flan_to_jinja(inputs), target=flan_to_jinja(targets), inverted=inverted,
                                    source=f"flan:{table}[{key}][{k}]"))
        except FlanmixError as err:
            raise err.with_context(file=where, field=f"{table}[{key!r}][{k}]") from None
    return out


def _few_shot(patterns: tuple[FewShotPatternData, ...], table: str, key: str, *, inverted: bool,
              where: str) -> list[FewShotPattern]:
    out = []
    for k, p in enumerate(patterns):
        try:
            out.append(FewShotPattern(
                input=flan_to_jinja(p.inputs), target=flan_to_jinja(p.targets), inputs_prefix=p.inputs_prefix,
                targets_prefix=p.targets_prefix, x_y_delimiter=p.x_y_delimiter,
                example_separator=p.example_separator, final_suffix=p.final_suffix,
                input_pattern=flan_to_jinja(p.input_pattern, pattern=True), in_template_mix=p.in_template_mix,
                inverted=inverted, source=f"flan:{table}[{key}][{k}]"))
        except FlanmixError as err:
            raise err.with_context(file=where, field=f"{table}[{key!r}][{k}]") from None
    return out


def key_template_set(tables: FlanTables, key: str) -> TemplateSet:
    """The template set of one FLAN pattern key."""
    where = tables.files.get("templates")
    inverted = key.endswith("_input_inversion")
    alias = tables.sources["patterns"][key].alias_of
    few = tables.fewshot_patterns.get(key, ())
    few_noopt = tables.fewshot_patterns_no_options.get(key, ())
    return TemplateSet(
        zero_shot=_zero_shot(tables.patterns[key], "PATTERNS", key, inverted=inverted, where=where),
        zero_shot_no_options=_zero_shot(tables.patterns_no_options[key], "PATTERNS_NO_OPTIONS", key,
                                        inverted=inverted, where=where),
        few_shot_patterns=_few_shot(few, "FEWSHOT_PATTERNS", key, inverted=inverted, where=where),
        few_shot_patterns_no_options=_few_shot(few_noopt, "FEWSHOT_PATTERNS_NO_OPTIONS", key, inverted=inverted,
                                               where=where),
        strip=False, options_style="flan",
        source=f"flan:{key}" + (f" (the same lists as {alias})" if alias else ""))


def _plain_set(pairs: tuple, table: str, key: str, where: str | None) -> TemplateSet:
    return TemplateSet(zero_shot=_zero_shot(pairs, table, key, inverted=False, where=where), strip=False,
                       options_style="flan", source=f"flan:{table}[{key}]")


def convert(tables: FlanTables) -> FlanImport:
    """Every FLAN key as a template set (`flan/<slug>`), plus the inline few-shot and Flan 2021 sets."""
    sets: dict[str, TemplateSet] = {}
    owner: dict[str, str] = {}

    def add(ref: str, key: str, make: Any) -> None:
        if ref in sets:
            raise FlanmixError(f"FLAN keys {owner[ref]!r} and {key!r} both become {ref!r}",
                               file=tables.files.get("templates"), expected="keys with distinct slugs")
        owner[ref] = key
        sets[ref] = make()

    for key in tables.patterns:
        add(f"flan/{flan_key_slug(key)}", key, lambda key=key: key_template_set(tables, key))
    for key, pairs in tables.inline_fs_patterns.items():
        slug = INLINE_FS_SET if key == "natinst_v2" else f"{flan_key_slug(key)}_inline_fs"
        add(f"flan/{slug}", key, lambda key=key, pairs=pairs: _plain_set(
            pairs, "INLINE_FS_PATTERNS", key, tables.files.get("templates")))
    for key, pairs in (tables.flan2021_patterns or {}).items():
        add(f"flan2021/{flan_key_slug(key)}", key, lambda key=key, pairs=pairs: _plain_set(
            pairs, "FLAN2021_PATTERNS", key, tables.files.get("flan2021")))
    keys = list(tables.patterns)
    counts = {
        "keys": len(keys),
        "zero_shot": sum(len(tables.patterns[k]) for k in keys),
        "zero_shot_no_options": sum(len(tables.patterns_no_options[k]) for k in keys),
        "few_shot": sum(len(tables.fewshot_patterns.get(k, ())) for k in keys),
        "inline_fs": sum(len(v) for v in tables.inline_fs_patterns.values()),
        "flan2021_keys": len(tables.flan2021_patterns or {}),
    }
    return FlanImport(sets, counts)


def import_flan(src: Path | str, out_dir: Path | str | None = None, *, overwrite: bool = False) -> FlanImport:
    """Read FLAN's template files under `src` and (with `out_dir`) write every set as `DIR/templates/<ref>.yaml`,
    atomically: nothing is written unless every file is read, converted and read back unchanged."""
    result = convert(read_flan_tables(src))
    if out_dir is not None:
        files = {Path("templates") / f"{ref}.yaml": dump_yaml(templates.model_dump(mode="json", exclude_defaults=True))
                 for ref, templates in result.sets.items()}
        expected = {Path("templates") / f"{ref}.yaml": templates for ref, templates in result.sets.items()}
        write_files(files, out_dir, overwrite=overwrite, check=lambda stage: _check_written(stage, expected))
    return result


def _check_written(stage: Path, expected: dict[Path, TemplateSet]) -> None:
    from flanmix.prompts import PromptSet
    from flanmix.registry import read_template_set

    for rel, templates in expected.items():
        back, _ = read_template_set(stage / rel)
        if back != templates:
            raise FlanmixError("written template set does not read back unchanged (please report this)",
                               file=stage / rel)
        PromptSet(back, file=str(stage / rel))  # compiles every template
