"""Import Flan v2 chain-of-thought TSV files (`<name>_train.tsv`: question, answer, rationale) as flanmix tasks.

One task `cot.<name>` per file (collection CoT, cluster `cot`, category the file's dataset), read by the
`flan_cot_tsv` source format. Templates: CoT (question -> rationale + a final-answer sentence), non-CoT zero-shot
(question -> answer), and one input inversion (answer -> question with its reasoning).
"""

from __future__ import annotations

from pathlib import Path

from flanmix.core.errors import FlanmixError
from flanmix.importers._common import Imported, check_name, discover_files, file_glob
from flanmix.sources import read_flan_cot_tsv
from flanmix.spec import FewShotFormat, SourceSpec, TaskSpec, TemplateSet, TemplateSpec

# The final-answer sentence ends with a full stop unless the answer already ends with punctuation.
ANSWER = "{{ answer }}{% if answer[-1:] not in '.!?' %}.{% endif %}"

COT = [
    TemplateSpec(name="step_by_step", input="{{ question }}\nLet's think step by step.",
                 target="{{ rationale }} So the answer is " + ANSWER),
    TemplateSpec(name="reasoning_then_answer", input="Question: {{ question }}\nAnswer with step-by-step reasoning:",
                 target="{{ rationale }}\nThe final answer: " + ANSWER),
    TemplateSpec(name="think_carefully", input="{{ question }}\nThink carefully first, then make a decision:",
                 target="{{ rationale }} So, the answer is " + ANSWER),
    TemplateSpec(name="explain_first", input="Answer the following question, explaining your reasoning first.\n"
                                             "{{ question }}",
                 target="Reasoning: {{ rationale }}\nAnswer: " + ANSWER),
]
ZERO_SHOT = [
    TemplateSpec(name="question", input="{{ question }}", target="{{ answer }}"),
    TemplateSpec(name="qa", input="Question: {{ question }}\nAnswer:", target="{{ answer }}"),
    TemplateSpec(name="answer_this", input="Answer this question.\n\n{{ question }}", target="{{ answer }}"),
    TemplateSpec(name="inverted_question_from_answer", inverted=True,
                 input="Come up with a question and the reasoning that would justify this answer: {{ answer }}",
                 target="Question: {{ question }}\nReasoning: {{ rationale }}"),
]
FEW_SHOT = [FewShotFormat(inputs_prefix="Q: ", targets_prefix="A: ", x_y_delimiter="\n", example_separator="\n\n"),
            FewShotFormat(inputs_prefix="Question: ", targets_prefix="Answer: ", x_y_delimiter="\n",
                          example_separator="\n\n")]


def import_file(path: Path | str, *, cluster: str | None = None, notes: list[str] | None = None) -> list[Imported]:
    """Import one Flan CoT TSV as one task (source `{files: <path>, format: flan_cot_tsv}`)."""
    path = Path(path)
    if not path.is_file():
        raise FlanmixError("file not found", file=path, expected="a Flan CoT TSV (question, answer, rationale)")
    try:
        first = next(read_flan_cot_tsv(path), None)
    except UnicodeDecodeError as err:
        raise FlanmixError(f"cannot read file: {err}", file=path) from None
    if first is None:
        raise FlanmixError("no rows", file=path, expected="question<TAB>answer<TAB>rationale lines")
    dataset = path.stem.removesuffix("_train")
    name = check_name(f"cot.{dataset}", file=path)
    spec = TaskSpec(
        name=name, cluster=cluster or "cot", category=dataset, collection="CoT",
        description=f"Flan v2 chain-of-thought data {path.name} (question, answer, rationale)",
        source=SourceSpec(files=file_glob(path), format="flan_cot_tsv"),
        rationale_field="rationale", templates=f"cot/{name}", metrics=["exact_match", "cot_exact_match"])
    return [(spec, TemplateSet(zero_shot=ZERO_SHOT, cot=COT, few_shot=FEW_SHOT))]


def import_path(src: Path | str, *, cluster: str | None = None, notes: list[str] | None = None) -> list[Imported]:
    """Import a TSV, or every `*.tsv` under a folder."""
    out: list[Imported] = []
    for path in discover_files(src, ["*.tsv"], what="Flan CoT .tsv files"):
        out.extend(import_file(path, cluster=cluster, notes=notes))
    return out
