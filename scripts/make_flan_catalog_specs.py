"""Write the T0, NIv2, CoT and Dialog task specs of the Flan catalog (task_registry/flan/{t0,niv2,cot,dialog}/),
their offline fixtures (tests/fixtures/hub/, rows made up here in each dataset's schema) and FLAN's recorded
example counts (bench/data/flan_counts.json), from a FLAN checkout read as data (`ast.literal_eval` of its
constant tables; nothing in it is imported or run).

    python scripts/make_flan_catalog_specs.py FLAN_CHECKOUT     # a clone of google-research/FLAN at e9e4ec6e2701

FLAN's preprocessing that each spec reproduces (flan/v2/preprocessors.py, task_configs.py):
- T0 (`t0`): question = inputs_pretokenized with newlines turned into spaces, stripped; answer = targets_pretokenized
  without newlines, stripped; multiple-choice prompts: options = answer_choices likewise, answer = the option equal
  to the target (rows where none is are dropped: FLAN's lookup would fail on them). `tf.strings.strip` strips ASCII
  whitespace only, hence `trim(' \\t\\r\\v\\f')` (Jinja's bare `trim` would also strip e.g. a no-break space).
  Only `t0_multiple_choice_separated_options` prompts get an options block (FLAN runs `format_options` for them
  alone); the other multiple-choice prompts already show their choices, so their answer is never rewritten to a
  label, and they have no `options_field`.
- CoT (`simple_cot_tsv`, the source format of that name): question | answer | chain_of_thought, literal `\\n`
  turned into newlines in the question and the chain of thought, nothing stripped.
- Dialog (`wiki_dialog`, `qrecc`): a random odd turn index (< 2 * min(len/2, 20)) splits the turns into the dialog
  so far and the answer; QReCC keeps turns after the sixth (`filter_qrecc`).
- NIv2: one task over every task file, the 57 MMLU-derived tasks (task664-667, task685-737) excluded; FLAN's
  Definition, input and output fields, and the first positive example for the inline few-shot patterns; fs_opt
  half inline patterns, half x_shot with 2 exemplars of the row's own NIv2 task (`few_shot_group: task_name`).
"""

from __future__ import annotations

import ast
import csv
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "task_registry" / "flan"
FIXTURES = ROOT / "tests" / "fixtures" / "hub"
FLAN_COMMIT = "e9e4ec6e2701"
HEADER = "# Written by scripts/make_flan_catalog_specs.py from FLAN (google-research/FLAN@{commit}); see that script.\n"
COT = [("gsm8k", "cot"), ("strategyqa", "cot"), ("creak", "cot"), ("qasc", "cot"), ("esnli", "cot"),
       ("ecqa", "cot"), ("sensemaking", "cot"), ("aqua", "stream"), ("qed", "stream")]


def literal(path: Path, name: str):
    """A module-level constant of a FLAN file, read as a literal."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise KeyError(f"{name} not in {path}")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def jsonl(path: Path, rows: list[dict]) -> None:
    write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ---------------------------------------------------------------------------------------------- T0
ASCII_WS = "' \\t\\r\\v\\f'"  # tf.strings.strip's whitespace (after FLAN's newline replacement)
T0_QA = {
    "question": "{{ inputs_pretokenized | replace('\\n', ' ') | trim(" + ASCII_WS + ") }}",
    "answer": "{{ targets_pretokenized | replace('\\n', '') | trim(" + ASCII_WS + ") }}",
}
T0_MC_OPTIONS = "{{ answer_choices | map('replace', '\\n', '') | map('trim', " + ASCII_WS + ") | list }}"


def t0_spec(name: str, task_type: str) -> str:
    lines = [HEADER.format(commit=FLAN_COMMIT),
             f"# FLAN: T0_TASK_CONFIGS['t0_task_adaptation:{name}'] (task_type {task_type}): TFDS huggingface:"
             f"bigscience__p3/{name},\n# `prep.t0` then the `{task_type}` templates.\n"
             "# Hub: bigscience/P3, config = the prompt name; columns inputs_pretokenized, targets_pretokenized "
             "(and answer_choices\n# for multiple-choice prompts) as the P3 card's dataset_info lists them.\n"]
    lines.append(f"name: {name}\ndescription: P3 prompt {name}, wrapped in FLAN's {task_type} templates.\n"
                 "cluster: t0\ncollection: T0\n"
                 f"source: {{hub: bigscience/P3, config: {name}, split: train}}\nverified: true\n")
    if task_type != "t0_question_answer":  # FLAN's answer lookup fails on a row whose target is no choice
        lines.append(f"filter: \"{T0_QA['answer'][3:-3]} in ({T0_MC_OPTIONS[3:-3]})\"\n")
    lines.append(f"fields:\n  question: \"{T0_QA['question']}\"\n  answer: \"{T0_QA['answer']}\"\n")
    if task_type == "t0_multiple_choice_separated_options":
        lines.append(f"  options: \"{T0_MC_OPTIONS}\"\noptions_field: options\n")
    lines.append(f"templates: flan/{task_type}\n")
    return "".join(lines)


def t0_rows(name: str, task_type: str, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(4):
        choices = [f"choice {c} of {name[:12]}" for c in "abc"]
        target = choices[i % 3] if task_type != "t0_question_answer" else f"made-up answer {i} to {name}"
        prompt = f"Made-up P3 prompt {i} for {name}.\nWhich is it?" + (
            "\nOptions: " + ", ".join(choices) if task_type == "t0_multiple_choice" else "")
        row = {"inputs": [rng.randrange(32000) for _ in range(6)], "inputs_pretokenized": prompt + "\n",
               "targets": [rng.randrange(32000) for _ in range(2)], "targets_pretokenized": " " + target + "\n"}
        if task_type != "t0_question_answer":
            row["answer_choices"] = choices
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- CoT
def cot_spec(dataset: str, kind: str, inverted: bool) -> str:
    name = f"{kind}_{dataset}" + ("_ii" if inverted else "")
    key = f"{kind}_input_inversion_{dataset}" if inverted else f"{kind}_{dataset}"
    text = (HEADER.format(commit=FLAN_COMMIT)
            + f"# FLAN: COT{'_II' if inverted else ''}_TASK_CONFIGS['{key}']: flan/v2/cot_data/{dataset}_train.tsv, "
              "`prep.simple_cot_tsv`\n# (the source format of that name: FLAN's question, answer, chain_of_thought).\n"
            + f"name: {name}\ndescription: FLAN CoT {dataset}" + (" (input inversion)" if inverted else "")
            + ".\ncluster: cot\ncollection: CoT\n"
            + f"source: {{repo: google-research/FLAN, files: flan/v2/cot_data/{dataset}_train.tsv, "
              f"format: simple_cot_tsv, revision: {FLAN_COMMIT}}}\nverified: true\n"
            + f"templates: flan/{key}\n")
    if inverted:
        text += f"inversion_of: {kind}_{dataset}\n"
    return text


def cot_rows(dataset: str) -> str:
    return "".join(f"Made-up {dataset} question {i}?\\nPlease reason.\t({'ABC'[i % 3]})\t"
                   f"Step one of {dataset} example {i}.\\nStep two.\n" for i in range(8))


# ---------------------------------------------------------------------------------------------- Dialog
TURN = ("{{ (range([((utterances | length) - 1) // 2, 20] | min) | list | choice) * 2 + 1 }}")
DIALOG = {
    "wiki_dialog": dict(
        hub="djaym7/wiki_dialog", config="OQ", column="utterances", filter="utterances | length >= 3",
        turn=TURN, dialog="{{ utterances[1:][:turn] }}", answer="{{ utterances[1:][turn] }}",
        why="FLAN reads TFDS wiki_dialog:1.0.0 (column `utterances`, the first utterance a preamble); the hub copy "
            "djaym7/wiki_dialog (config OQ) is a community port whose columns could not be confirmed."),
    "qrecc": dict(
        hub="svakulenk0/qrecc", config=None, column="Context", filter="Turn_no > 6 and Context | length >= 2",
        turn=TURN.replace("utterances", "Context").replace(" - 1)", ")"), dialog="{{ Context[:turn] }}",
        answer="{{ Context[turn] }}",
        why="FLAN reads TFDS q_re_cc:1.0.0 (`context`, `turn_id`); the hub copy svakulenk0/qrecc (the authors' "
            "JSON: Context, Turn_no) was found, its column names not confirmed from its card."),
}


def dialog_spec(name: str, inverted: bool) -> str:
    d = DIALOG[name]
    config = f", config: {d['config']}" if d["config"] else ""
    key = f"{name}_input_inversion" if inverted else name
    text = (HEADER.format(commit=FLAN_COMMIT) + f"# FLAN: DIALOG{'_II' if inverted else ''}_TASK_CONFIGS['{key}']. "
            + f"{d['why']}\n"
            + f"name: {name}{'_ii' if inverted else ''}\ndescription: FLAN dialog {name}"
            + (" (input inversion)" if inverted else "") + ".\ncluster: dialog\ncollection: Dialog\n"
            + f"source: {{hub: {d['hub']}{config}, split: train}}\nverified: false\nfilter: \"{d['filter']}\"\n"
            + f"fields:\n  turn: \"{d['turn']}\"\n  dialog: \"{d['dialog']}\"\n  answer: \"{d['answer']}\"\n"
            + f"templates: flan/{key}\n")
    if inverted:
        text += f"inversion_of: {name}\n"
    return text


def dialog_rows(name: str) -> list[dict]:
    rows = []
    for i in range(8):
        turns = [f"Made-up turn {t} of conversation {i}." for t in range(5 + i % 4)]
        if name == "wiki_dialog":
            rows.append({"pid": f"p{i}", "title": f"Made-up title {i}", "passage": " ".join(turns[1::2]),
                         "sentences": turns[1::2], "utterances": ["I am your assistant."] + turns,
                         "author_num": [0, 1] * ((len(turns) + 2) // 2)})
        else:
            rows.append({"Context": turns, "Question": f"Made-up question {i}?", "Rewrite": f"Made-up rewrite {i}?",
                         "Answer": f"Made-up answer {i}.", "Answer_URL": f"https://example.org/{i}",
                         "Conversation_no": i, "Turn_no": 7 + i, "Conversation_source": "quac"})
    return rows


# ---------------------------------------------------------------------------------------------- NIv2
NIV2_SPEC = HEADER.format(commit=FLAN_COMMIT) + """\
# FLAN: NIV2_TASK_CONFIGS['tfds_natural_instructions'] - one task over every NIv2 task (TFDS natural_instructions),
# `filter_mmlu_fn` (task664-667, task685-737 excluded) and `lookup_posex_fn` (Definition; the task's first positive
# example as ex_input/ex_output/ex_explanation for the inline few-shot patterns `natinst_v2_inline_fs`).
# Rows come from a natural-instructions checkout (tasks/*.json, the `niv2` format); each row's NIv2 task is its
# `task_name` (the file's name, as FLAN's TFDS rows carry it).
# fs_opt as FLAN's FS_OPT_TEMPLATES (mixtures_utils.py), whose two seqio tasks have equal rates (template_mix 0.5 of
# the set): `template_mix_five_shot` = the inline patterns rendered zero-shot over the row (template_mix_templates),
# `template_0to10_x_shot` = FEWSHOT_PATTERNS with exactly 2 exemplars of the row's own NIv2 task
# (`niv2_few_shot_exemplar_lookup_fn`; few_shot_group + x_shot_exemplars). FLAN takes its exemplars from its own
# per-task sample (niv2_few_shot_data); flanmix draws them from the task's training rows, the row itself only when
# its task has fewer than 3. A mixture component with `split_by_group: true` mixes every NIv2 task as a task of its
# own (FLAN's per-task variants), each with its own cap (mixtures/flan2022-niv2-per-task.yaml).
name: tfds_natural_instructions
description: Super-NaturalInstructions (NIv2) as FLAN mixes it - one task for all of NIv2, MMLU-derived tasks excluded.
cluster: niv2
collection: NIv2
source: {repo: allenai/natural-instructions, files: tasks/task*.json, format: niv2}
verified: true
filter: "(id.split('-')[0][4:] | int) not in ([664, 665, 666, 667] + (range(685, 738) | list))"
fields:
  Definition: "{{ definition }}"
  ex_input: "{{ positive_examples[0].input if positive_examples else '' }}"
  ex_output: "{{ positive_examples[0].output if positive_examples else '' }}"
  ex_explanation: "{{ positive_examples[0].explanation if positive_examples else '' }}"
answer_field: output
templates: flan/natinst_v2
template_mix_templates: flan/natinst_v2_inline_fs
few_shot_group: task_name
x_shot_exemplars: 2
"""


def niv2_task(number: int, slug: str) -> dict:
    return {"Contributors": ["made up"], "Source": ["made up"], "Categories": ["Made-up Category"],
            "Definition": [f"Made-up definition of task {number}: answer the input."],
            "Positive Examples": [{"input": f"example input {number}", "output": f"example output {number}",
                                   "explanation": "made-up explanation"}],
            "Negative Examples": [], "Input_language": ["English"], "Output_language": ["English"],
            "Instruction_language": ["English"],
            "Instances": [{"id": f"task{number:03d}-{slug}{i}", "input": f"made-up input {i} of task {number}",
                           "output": [f"made-up output {i}"]} for i in range(6)]}


# ---------------------------------------------------------------------------------------------- counts
def counts(flan: Path) -> dict:
    cases = literal(flan / "flan/v2/constants.py", "T_NAME_TO_NUM_CASES")
    niv2 = literal(flan / "flan/v2/constants_niv2.py", "NATINST_META_DATA")
    with open(flan / "flan/v2/flan_collection_info.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    out: dict[str, dict[str, int]] = {c: {} for c in ("Flan2021", "T0", "NIv2", "CoT", "Dialog")}
    for key, value in cases.items():
        n = value["zero_shot"]
        if key.startswith("t0_task_adaptation:"):
            out["T0"][key.split(":", 1)[1]] = n
        elif key.startswith(("cot_", "stream_")):
            parts = key.split("_input_inversion_")
            out["CoT"][f"{parts[0]}_{parts[1]}_ii" if len(parts) == 2 else key] = n
        elif key in ("wiki_dialog", "qrecc") or key.endswith("_input_inversion"):
            out["Dialog"][key.replace("_input_inversion", "_ii")] = n
        elif key == "tfds_natural_instructions":
            out["NIv2"][key] = n
        else:
            out["Flan2021"][key] = n
    niv2_names = {r["Specific Task Category"] for r in rows if r["Source"] == "NIv2"}
    per_task = {k.split(".")[0]: v["number_examples"] for k, v in niv2.items() if k.split(".")[0] in niv2_names}
    return {"source": f"google-research/FLAN@{FLAN_COMMIT}: flan/v2/constants.py T_NAME_TO_NUM_CASES (zero_shot "
                      "cases per task, as FLAN mixes them) and flan/v2/constants_niv2.py number_examples (per NIv2 "
                      "task, for a per-task NIv2 plan)",
            "counts": out, "niv2_tasks": per_task,
            # Catalog names FLAN's table lacks: `mnli` is FLAN's mnli_matched/mnli_mismatched (the same train rows);
            # trivia_qa_wiki_missing has no recorded count: estimated as trivia_qa's (an estimate, not FLAN's).
            "aliases": {"mnli": "mnli_matched"},
            "estimates": {"trivia_qa_wiki_missing": cases["trivia_qa"]["zero_shot"]}}


def main(flan: Path) -> None:
    meta = literal(flan / "flan/v2/constants_t0.py", "T0_TRAIN_TASK_METADATA")
    rng = random.Random(0)
    for key, info in sorted(meta.items()):
        name = key.split(":", 1)[1]
        if info["in_flan"] or "_score_eval" in name:
            continue
        write(REGISTRY / "t0" / f"{name}.yaml", t0_spec(name, info["task_type"]))
        jsonl(FIXTURES / "bigscience__P3" / name / "train.jsonl", t0_rows(name, info["task_type"], rng))
    for dataset, kind in COT:
        write(REGISTRY / "cot" / f"{kind}_{dataset}.yaml", cot_spec(dataset, kind, False))
        write(REGISTRY / "cot" / f"{kind}_{dataset}_ii.yaml", cot_spec(dataset, kind, True))
        write(FIXTURES / "google-research__FLAN" / "flan/v2/cot_data" / f"{dataset}_train.tsv", cot_rows(dataset))
    for name, d in DIALOG.items():
        write(REGISTRY / "dialog" / f"{name}.yaml", dialog_spec(name, False))
        write(REGISTRY / "dialog" / f"{name}_ii.yaml", dialog_spec(name, True))
        jsonl(FIXTURES / d["hub"].replace("/", "__") / (d["config"] or "default") / "train.jsonl", dialog_rows(name))
    write(REGISTRY / "niv2" / "tfds_natural_instructions.yaml", NIV2_SPEC)
    for number, slug in ((1, "a"), (2, "b"), (685, "mmlu")):  # task685 is MMLU-derived: the filter drops it
        write(FIXTURES / "allenai__natural-instructions" / "tasks" / f"task{number:03d}_made_up_{slug}.json",
              json.dumps(niv2_task(number, slug), indent=1) + "\n")
    write(ROOT / "bench" / "data" / "flan_counts.json", json.dumps(counts(flan), indent=1, sort_keys=True) + "\n")
    print(f"wrote specs under {REGISTRY}, fixtures under {FIXTURES}, counts in bench/data/flan_counts.json")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
