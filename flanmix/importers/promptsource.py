"""Import promptsource template files (`<dataset>/[<subset>/]templates.yaml`) as flanmix tasks.

Decisions (see docs/importers.md):
- One task per (dataset, subset) holding every template with `original_task: true` (T0/Flan treat a dataset as one
  task with many prompts), named `ps.<dataset>[.<subset>]`, cluster from T0's task clusters.
- Templates with `original_task: false` ask for something else (generate the question, the topic, a paraphrase,
  ...), so they form a second task `ps.<dataset>[.<subset>].alt` in the same cluster: a mixture can take or leave
  them (`ps.*.alt`), and evaluation of the original task never scores them.
- The `|||` split is done here, once, on the template *source* (at the top level, outside Jinja tags), so a template
  becomes our `input`/`target` pair. `{% set %}` statements of the input half that the target half uses are copied
  in front of the target. A `|||` inside a Jinja block cannot be split in the source; such a template renders in
  full and is split at render time (a `{% set %}` capture + `.split('|||')`), which is exactly promptsource's
  semantics.
- `answer_choices` becomes the template's `options` (Jinja, `|||`-separated); flanmix exposes it to the template as
  `answer_choices`, as promptsource does. Templates that do not show their choices (`choices_in_prompt: false`) get
  `{{ options_ }}` appended, so the Flan `*_opt` variants list the choices and the `*_noopt` variants render exactly
  the promptsource prompt.
- A template whose target depends on a random draw made in its input (`{% set i = [0,1,2,3] | choice %}` used in
  both halves) is only imported when flanmix renders both halves from the same random state; otherwise it is
  skipped with a note (its target would disagree with its input).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jinja2
import jinja2.meta

from flanmix.core.errors import FlanmixError
from flanmix.core.yamlio import YamlDoc, read_yaml
from flanmix.importers._common import Imported, check_name, cluster_of, discover_files
from flanmix.spec import SourceSpec, TaskSpec, TemplateSet, TemplateSpec
from flanmix.templates import ENV

SEPARATOR = "|||"
_TAG_END = {"{{": "}}", "{%": "%}", "{#": "#}"}
_SET_STMT = re.compile(r"\{%-?\s*set\s+(?P<names>[A-Za-z_][\w\s,]*?)\s*=.*?-?%\}", re.S)
_SET_BLOCK = re.compile(r"\{%-?\s*set\s+(?P<names>[A-Za-z_]\w*)\s*-?%\}.*?\{%-?\s*endset\s*-?%\}", re.S)
_CHOICE_FILTER = re.compile(r"\|\s*choice\b")
# `{% for a, b in zip(x, y) %}`: promptsource's Jinja has a `zip` global, flanmix's sandbox may not.
_ZIP_FOR = re.compile(r"\{%(?P<l>-?)\s*for\s+(?P<a>\w+)\s*,\s*(?P<b>\w+)\s+in\s+zip\(\s*(?P<x>[^,()]+?)\s*,"
                      r"\s*(?P<y>[^,()]+?)\s*\)\s*(?P<r>-?)%\}")
OPTIONS_SUFFIX = "{% if options_ %}\n\n{{ options_ }}{% endif %}"


def split_source(jinja: str) -> list[str]:
    """Split a promptsource template at its `|||` separators that stand outside Jinja tags."""
    parts, start, i = [], 0, 0
    while i < len(jinja):
        opener = jinja[i:i + 2]
        if opener in _TAG_END:
            end = jinja.find(_TAG_END[opener], i + 2)
            i = len(jinja) if end < 0 else end + 2
            continue
        if jinja.startswith(SEPARATOR, i):
            parts.append(jinja[start:i])
            i += len(SEPARATOR)
            start = i
            continue
        i += 1
    parts.append(jinja[start:])
    return parts


def _parses(source: str) -> bool:
    try:
        ENV.parse(source)
    except jinja2.TemplateSyntaxError:
        return False
    return True


def _compiles(source: str) -> str | None:
    """None when `source` compiles in flanmix's environment, else why not (syntax, or an unknown filter/test)."""
    try:
        ENV.compile(source)
    except jinja2.TemplateSyntaxError as err:  # TemplateAssertionError (unknown filter or test) is one too
        return f"{err.message} (template line {err.lineno})"
    return None


def _undeclared(source: str) -> set[str]:
    return set(jinja2.meta.find_undeclared_variables(ENV.parse(source)))


def _prelude(left: str, right: str) -> str:
    """The `{% set %}` statements of the input half that the target half needs, in their original order."""
    sets = sorted([(m.start(), m.group(0), {n.strip() for n in m.group("names").split(",")})
                   for rx in (_SET_STMT, _SET_BLOCK) for m in rx.finditer(left)])
    needed = _undeclared(right)
    if not any(names & needed for _, _, names in sets):
        return ""
    last = max(i for i, (_, _, names) in enumerate(sets) if names & needed)
    return "".join(text for _, text, _ in sets[:last + 1])


@functools.lru_cache(maxsize=1)
def parts_share_random_draws() -> bool:
    """Whether flanmix renders a template's input and target from the same random state (probed, not assumed)."""
    from flanmix.task import Example, Task

    draw = "{{ range(100000) | choice }}"
    spec = TaskSpec(name="probe", cluster="probe", source=SourceSpec(builtin="probe"),
                    templates=TemplateSet(zero_shot=[TemplateSpec(input=draw, target=draw)]))
    row = Task(spec, spec.templates).render(Example("probe", {}))
    return row["inputs"] == row["targets"]


def rewrite_zip(jinja: str) -> str:
    """Rewrite `for a, b in zip(x, y)` loops without `zip` when flanmix's Jinja environment has no `zip` global.

    `{% for a, b in zip(x, y) %}` becomes a loop over `range(min(len(x), len(y)))` that sets `a` and `b`: the same
    pairs, truncated to the shorter list as `zip` does, and the same `loop` variables.
    """
    if "zip" in ENV.globals:
        return jinja
    return _ZIP_FOR.sub(lambda m: (f"{{%{m['l']} for ps_i in range([({m['x']}) | length, ({m['y']}) | length] | min) "
                                   f"{m['r']}%}}{{% set {m['a']} = ({m['x']})[ps_i] %}}"
                                   f"{{% set {m['b']} = ({m['y']})[ps_i] %}}"), jinja)


def convert_template(template: dict, *, file: str | Path | None = None, line: int | None = None,
                     notes: list[str] | None = None) -> tuple[TemplateSpec, bool] | None:
    """One promptsource template -> (our template, original_task). None when it is skipped (with a note)."""
    name = str(template.get("name") or template.get("id") or "unnamed")
    where = {"file": file, "line": line, "field": f"templates[{name!r}]"}
    jinja = template.get("jinja")
    if not isinstance(jinja, str) or not jinja.strip():
        raise FlanmixError("template has no jinja text", expected="a 'jinja' string with '|||'", **where)
    jinja = rewrite_zip(jinja)
    choices = template.get("answer_choices")
    if choices is not None and not isinstance(choices, str):
        raise FlanmixError("answer_choices must be a string", expected="Jinja, '|||'-separated", **where)
    metadata = template.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise FlanmixError("metadata must be a mapping", **where)
    problem = _compiles(jinja)
    if problem is not None:
        raise FlanmixError(f"Jinja syntax error: {problem}", expected="a valid Jinja template", **where)
    if choices is not None and _compiles(choices) is not None:
        raise FlanmixError(f"Jinja syntax error in answer_choices: {_compiles(choices)}", expected="valid Jinja",
                           **where)
    parts = split_source(jinja)
    random_shared = False
    if len(parts) == 2 and _parses(parts[0]) and _parses(parts[1]):
        left, right = parts
        prelude = _prelude(left, right)
        random_shared = bool(_CHOICE_FILTER.search(prelude))
        target = prelude + right
    elif len(parts) >= 2:
        # `|||` inside a Jinja block: render in full, then split, as promptsource does.
        left = "{% set ps_full %}" + jinja + "{% endset %}{{ ps_full.split('|||')[0] | trim }}"
        # No '|||' in the render (e.g. `{% if label == 1 %}...|||...{% endif %}` on a label-0 row): promptsource
        # skips the row; here the target is empty, as for unlabelled rows.
        target = "{% set ps_full %}" + jinja + "{% endset %}{{ (ps_full.split('|||') + [''])[1] | trim }}"
        random_shared = bool(_CHOICE_FILTER.search(jinja))
    else:
        raise FlanmixError("template has no '|||' between input and target", expected="input ||| target", **where)
    if random_shared and not parts_share_random_draws():
        if notes is not None:
            notes.append(f"{file}: skipped template {name!r}: its target reuses a random draw of its input")
        return None
    if choices is not None and metadata.get("choices_in_prompt") is not True:
        left = left.rstrip() + OPTIONS_SUFFIX
    spec = TemplateSpec(input=left, target=target, options=choices, name=name)
    return spec, metadata.get("original_task") is not False


def _load(path: Path):
    """Parse a promptsource file with flanmix's bounded YAML reader (libyaml; one-line file:line errors)."""
    return read_yaml(path)


class _Lines:
    """Line numbers for error messages, parsed only when an error needs one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._doc: YamlDoc | None = None

    def line_of(self, loc: list) -> int | None:
        if self._doc is None:
            self._doc = YamlDoc.read(self.path)
        return self._doc.line_of(loc)


def task_name(dataset: str, subset: str | None) -> str:
    """`ps.<dataset>[.<subset>]` (slashes in hub ids become dots)."""
    return "ps." + dataset.replace("/", ".") + (f".{subset}" if subset else "")


def import_file(path: Path | str, *, cluster: str | None = None, split: str = "train",
                notes: list[str] | None = None) -> list[Imported]:
    """Import one promptsource `templates.yaml`: the original-task task and, if any, the `.alt` task.

    Sources are `{hub: dataset, config: subset, split: split}`; nothing is downloaded at import time.
    """
    path = Path(path)
    data = _load(path)
    doc = _Lines(path)
    if not isinstance(data, dict) or not isinstance(data.get("dataset"), str):
        raise FlanmixError("not a promptsource template file", file=path, line=1, field="dataset",
                           expected="a mapping with dataset, subset, templates")
    templates = data.get("templates")
    if not isinstance(templates, dict) or not templates:
        raise FlanmixError("no templates", file=path, line=doc.line_of(["templates"]), field="templates",
                           expected="a mapping of template id -> !Template")
    dataset, subset = data["dataset"], data.get("subset")
    subset = str(subset) if subset is not None else None
    original: list[TemplateSpec] = []
    alternative: list[TemplateSpec] = []
    for key, template in templates.items():
        if not isinstance(template, dict):
            raise FlanmixError("template is not a mapping", file=path, line=doc.line_of(["templates", key]),
                               field=f"templates.{key}", expected="a !Template mapping with jinja")
        try:
            converted = convert_template(template, file=path, notes=notes)
        except FlanmixError as err:
            raise err.with_context(line=doc.line_of(["templates", key, "jinja"])) from None
        if converted is not None:
            (original if converted[1] else alternative).append(converted[0])
    base = check_name(task_name(dataset, subset), file=path)
    cluster = cluster or cluster_of(dataset, subset)
    source = SourceSpec(hub=dataset, config=subset, split=split)
    label = dataset + (f"/{subset}" if subset else "")
    out: list[Imported] = []
    for name, items, what in ((base, original, "original-task"), (base + ".alt", alternative, "other-task")):
        if not items:
            continue
        classify = all(t.options for t in items)
        tset = TemplateSet(zero_shot=items)
        spec = TaskSpec(
            name=name, cluster=cluster, category=label, collection="promptsource",
            description=f"promptsource {what} templates for {label} ({len(items)} templates)",
            source=source, answer_field="ps_answer",
            templates=f"promptsource/{name}",
            metrics=["exact_match", "rank_classification"] if classify else ["exact_match"])
        out.append((spec, tset))
    if not out:
        raise FlanmixError("every template was skipped", file=path, field="templates",
                           expected="at least one importable template")
    return out


def import_path(src: Path | str, *, cluster: str | None = None, split: str = "train",
                notes: list[str] | None = None, failures: list[FlanmixError] | None = None) -> list[Imported]:
    """Import a `templates.yaml` or every `templates.yaml` under a folder.

    Without `failures`, the first file that cannot be imported raises. With a `failures` list, each such file's
    one-line error (it names the file) is appended there and the other files are still imported; a folder where
    every file failed raises the first error.
    """
    out: list[Imported] = []
    failed: list[FlanmixError] = []
    paths = discover_files(src, ["templates.yaml"], what="promptsource templates.yaml")
    for path in paths:
        try:
            out.extend(import_file(path, cluster=cluster, split=split, notes=notes))
        except FlanmixError as err:
            if failures is None:
                raise
            failed.append(err.with_context(file=path))
    if failed and len(failed) == len(paths):
        raise failed[0]
    if failures is not None:
        failures.extend(failed)
    return out
