"""Import Super-NaturalInstructions task JSON files (`taskNNN_name.json`) as flanmix tasks.

Each file becomes one task `niv2.<file stem>` (collection NIv2, cluster from its first Category), read by the
`niv2` source format. Its templates are the Tk-Instruct encodings, each a zero-shot template because the
demonstrations are part of the instruction: definition only; definition + 2 positive examples; definition + 2
positive + 2 negative examples with explanations; plus a few plain instruction/input layouts.
Metric: exact_match here; SuperNI itself reports ROUGE-L over all reference outputs (`outputs`).
"""

from __future__ import annotations

import json
from pathlib import Path

from flanmix.core.errors import FlanmixError
from flanmix.importers._common import Imported, check_name, discover_files, file_glob, slug
from flanmix.spec import SourceSpec, TaskSpec, TemplateSet, TemplateSpec

_DEFINITION = "Definition: {{ definition | trim }}\n\n"
_QUERY = "Now complete the following example -\nInput: {{ input | trim }}\nOutput:"
_POSITIVES = ("{% for ex in positive_examples[:2] %}Positive Example {{ loop.index }} -\n"
              "Input: {{ ex.input | trim }}\nOutput: {{ ex.output | trim }}\n\n{% endfor %}")
_POSITIVES_EXPLAINED = ("{% for ex in positive_examples[:2] %}Positive Example {{ loop.index }} -\n"
                        "Input: {{ ex.input | trim }}\nOutput: {{ ex.output | trim }}\n"
                        "Explanation: {{ ex.explanation | trim }}\n\n{% endfor %}")
_NEGATIVES_EXPLAINED = ("{% for ex in negative_examples[:2] %}Negative Example {{ loop.index }} -\n"
                        "Input: {{ ex.input | trim }}\nOutput: {{ ex.output | trim }}\n"
                        "Explanation: {{ ex.explanation | trim }}\n\n{% endfor %}")
TARGET = "{{ output | trim }}"

ENCODINGS = {
    "definition": _DEFINITION + _QUERY,
    "definition_pos2": _DEFINITION + _POSITIVES + _QUERY,
    "definition_pos2_neg2_explanation": _DEFINITION + _POSITIVES_EXPLAINED + _NEGATIVES_EXPLAINED + _QUERY,
}
PLAIN = {
    "instruction_input": "{{ definition | trim }}\n\n{{ input | trim }}",
    "input_instruction": "{{ input | trim }}\n\n{{ definition | trim }}",
    "task_input_answer": "Task: {{ definition | trim }}\nInput: {{ input | trim }}\nAnswer:",
}


def _first(value, default: str = "") -> str:
    if isinstance(value, list):
        return str(value[0]) if value else default
    return default if value is None else str(value)


def read_task(path: Path | str) -> dict:
    """Parse and check a SuperNI task file (one-line errors naming the file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlanmixError("file not found", file=path, expected="a Super-NaturalInstructions task JSON") from None
    except json.JSONDecodeError as err:
        raise FlanmixError(f"invalid JSON: {err.msg}", file=path, line=err.lineno) from None
    except (OSError, UnicodeDecodeError) as err:
        raise FlanmixError(f"cannot read file: {err}", file=path) from None
    if not isinstance(data, dict):
        raise FlanmixError("not a Super-NaturalInstructions task", file=path,
                           expected="a JSON object with Definition and Instances")
    if not isinstance(data.get("Instances"), list) or not data["Instances"]:
        raise FlanmixError("no Instances", file=path, field="Instances",
                           expected="a non-empty list of {id, input, output}")
    if not _first(data.get("Definition")).strip():
        raise FlanmixError("no Definition", file=path, field="Definition", expected="the task instruction")
    for key in ("Positive Examples", "Negative Examples"):
        if not isinstance(data.get(key) or [], list):
            raise FlanmixError(f"{key} must be a list", file=path, field=key)
    return data


def import_file(path: Path | str, *, cluster: str | None = None, notes: list[str] | None = None) -> list[Imported]:
    """Import one SuperNI task file as one task (source `{files: <path>, format: niv2}`)."""
    path = Path(path)
    data = read_task(path)
    category = _first(data.get("Categories"), "Super-NaturalInstructions")
    positives = data.get("Positive Examples") or []
    negatives = data.get("Negative Examples") or []
    templates: list[TemplateSpec] = [TemplateSpec(name="definition", input=ENCODINGS["definition"], target=TARGET)]
    if positives:
        templates.append(TemplateSpec(name="definition_pos2", input=ENCODINGS["definition_pos2"], target=TARGET))
    if positives or negatives:
        templates.append(TemplateSpec(name="definition_pos2_neg2_explanation",
                                      input=ENCODINGS["definition_pos2_neg2_explanation"], target=TARGET))
    elif notes is not None:
        notes.append(f"{path}: no positive or negative examples; only definition and plain templates")
    templates += [TemplateSpec(name=name, input=text, target=TARGET) for name, text in PLAIN.items()]
    name = check_name(f"niv2.{path.stem}", file=path)
    license_ = _first(data.get("Instance License")) or None
    spec = TaskSpec(
        name=name, cluster=cluster or slug(category), category=category, collection="NIv2",
        description=(f"Super-NaturalInstructions {path.stem} ({category}); exact_match here, "
                     f"SuperNI reports ROUGE-L against all outputs"),
        source=SourceSpec(files=file_glob(path), format="niv2"),
        answer_field="output", templates=f"niv2/{name}", metrics=["exact_match"], license=license_)
    return [(spec, TemplateSet(zero_shot=templates))]


def import_path(src: Path | str, *, cluster: str | None = None, notes: list[str] | None = None) -> list[Imported]:
    """Import a task JSON, or every `task*.json` under a folder."""
    out: list[Imported] = []
    for path in discover_files(src, ["task*.json"], what="Super-NaturalInstructions task*.json"):
        out.extend(import_file(path, cluster=cluster, notes=notes))
    return out
