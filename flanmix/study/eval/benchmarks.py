"""The benchmark suites read from files: BIG-Bench Hard (`bbh:`), MMLU (`mmlu:`) and BIG-bench JSON tasks
(`bigbench:`), each turned into one `EvalSet` per task file or subject."""

from __future__ import annotations

import csv
import glob
import re
from pathlib import Path

from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import read_json
from flanmix.study.eval.items import EvalItem, EvalSet
from flanmix.study.eval.metrics import extract_answer

# --------------------------------------------------------------------------------------------------------- BBH

def _bbh_files(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec) if p.endswith(".json"))
        if not files:
            raise FlanmixError("BBH path not found", file=spec, expected="a BBH folder, a task .json or a glob")
    if not files:
        raise FlanmixError("no BBH *.json files in folder", file=spec)
    return files


def load_bbh(path: str | Path) -> list[dict]:
    """The `examples` ({input, target}) of one BBH task file."""
    path = Path(path)
    data = read_json(path, what="BBH file")
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list) or not all(isinstance(e, dict) and "input" in e and "target" in e
                                                 for e in examples):
        raise FlanmixError("not a BBH task file", file=path, expected='{"examples": [{"input", "target"}, ...]}')
    return examples


def load_bbh_cot_prompt(path: str | Path) -> tuple[str, list[tuple[str, str, str]]]:
    """A BBH CoT prompt file: (task description, [(question, rationale, final answer), ...]).

    The file is a canary line, `-----`, a description, then `Q: ... A: Let's think step by step. ... So the answer
    is X.` exemplars separated by blank lines.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise FlanmixError(f"cannot read CoT prompt: {err}", file=path) from None
    if "-----" in text:
        text = text.split("-----", 1)[1]
    text = text.strip()
    parts = re.split(r"\n\n(?=Q: )", text)
    description = parts[0].strip() if not parts[0].startswith("Q: ") else ""
    shots = []
    for part in parts[1:] if description else parts:
        m = re.match(r"Q: (?P<q>.*?)\nA: (?P<a>.*)$", part.strip(), re.S)
        if not m:
            raise FlanmixError("unexpected exemplar layout in CoT prompt", file=path, expected="'Q: ...\\nA: ...'")
        rationale = m.group("a").strip()
        shots.append((m.group("q").strip(), rationale, extract_answer(rationale)))
    if not shots:
        raise FlanmixError("no Q:/A: exemplars in CoT prompt", file=path)
    return description, shots


def bbh_eval_sets(spec: str, *, cot: bool = False, shots: int = 3, limit: int | None = None) -> list[EvalSet]:
    """BBH tasks from a folder (every *.json), one file or a glob.

    Direct mode (default): `shots` answer-only exemplars taken from `cot-prompts/<task>.txt` ("Q: ...\\nA: X"),
    then "Q: {input}\\nA:"; the generation (cut at the first newline) is exact-matched. CoT mode: the CoT exemplars
    verbatim, then "Q: {input}\\nA: Let's think step by step."; the answer is extracted (`cot_exact_match`).
    """
    sets = []
    for path in _bbh_files(spec):
        examples = load_bbh(path)
        if limit is not None:
            examples = examples[:limit]
        cot_file = path.parent / "cot-prompts" / f"{path.stem}.txt"
        description, exemplars = "", []
        if shots > 0 or cot:
            if cot_file.is_file():
                description, exemplars = load_bbh_cot_prompt(cot_file)
                exemplars = exemplars[:shots]
            elif shots > 0:
                raise FlanmixError("BBH few-shot/CoT prompt file not found", file=cot_file,
                                   expected="cot-prompts/<task>.txt next to the task file, or --bbh-shots 0")
        if cot:
            blocks = [f"Q: {q}\nA: {rationale}" for q, rationale, _ in exemplars]
            suffix, metric, stop = "\nA: Let's think step by step.", "cot_exact_match", ("\n\nQ:",)
        else:
            blocks = [f"Q: {q}\nA: {answer}" for q, _, answer in exemplars]
            suffix, metric, stop = "\nA:", "exact_match", ("\n",)
        head = "\n\n".join(([description] if description and blocks else []) + blocks)
        items = []
        for i, ex in enumerate(examples):
            prompt = (head + "\n\n" if head else "") + f"Q: {ex['input']}{suffix}"
            items.append(EvalItem(prompt, str(ex["target"]), (metric,), None, None, stop, f"{path.stem}-{i}",
                                  cot=cot))
        sets.append(EvalSet(f"bbh.{path.stem}", "bbh", "bbh", items, metric,
                            {"file": str(path), "cot": cot, "shots": len(exemplars)}))
    return sets


# -------------------------------------------------------------------------------------------------------- MMLU

_MMLU_SPLIT_DIRS = {"validation": "val", "test": "test", "train": "dev"}


def load_mmlu_csv(path: str | Path) -> list[dict]:
    """Rows of an MMLU CSV (no header: question, A, B, C, D, answer letter) as {question, choices, answer}."""
    path = Path(path)
    rows = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for line_no, rec in enumerate(csv.reader(fh), 1):
                if not rec:
                    continue
                if len(rec) != 6 or rec[5].strip() not in ("A", "B", "C", "D"):
                    raise FlanmixError(f"expected 6 columns ending in an answer letter, got {len(rec)} columns",
                                       file=path, line=line_no, expected="question,A,B,C,D,answer")
                rows.append({"question": rec[0], "choices": rec[1:5], "answer": "ABCD".index(rec[5].strip())})
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise FlanmixError(f"cannot read MMLU CSV: {err}", file=path) from None
    return rows


def _mmlu_subject(path: Path) -> str:
    return re.sub(r"_(test|val|dev)$", "", path.stem)


def _mmlu_files(spec: str, split: str) -> tuple[list[Path], Path | None]:
    path = Path(spec)
    if path.is_file():
        dev = path.parent.parent / "dev" if path.parent.name in ("test", "val", "dev") else None
        return [path], dev
    if not path.is_dir():
        raise FlanmixError("MMLU path not found", file=spec, expected="the MMLU folder (dev/ val/ test/), "
                                                                      "one of its split folders, or a CSV")
    sub = path / _MMLU_SPLIT_DIRS.get(split, split)
    if sub.is_dir():
        files, dev = sorted(sub.glob("*.csv")), path / "dev"
    else:
        files, dev = sorted(path.glob("*.csv")), path.parent / "dev"
    if not files:
        raise FlanmixError(f"no MMLU *.csv files for split {split!r}", file=path,
                           expected=f"{sub} or CSV files in {path}")
    return files, dev if dev.is_dir() else None


def _mmlu_question(row: dict, answer: str | None = None) -> str:
    text = row["question"].strip() + "".join(f"\n{letter}. {choice}" for letter, choice in zip("ABCD", row["choices"]))
    return text + "\nAnswer:" + (f" {answer}" if answer is not None else "")


def mmlu_eval_sets(spec: str, *, split: str = "validation", shots: int = 0, choices: str = "letters",
                   choice_prefix: str = " ", limit: int | None = None) -> list[EvalSet]:
    """MMLU subjects as rank-classification tasks (cluster `mmlu`).

    Prompt (Hendrycks et al.): "The following are multiple choice questions (with answers) about {subject}.",
    `shots` solved questions from `dev/`, then the question with its lettered choices and "Answer:". Options are
    `choice_prefix` + the letters A-D (`choices="letters"`) or + the choice texts (`choices="text"`).
    """
    if choices not in ("letters", "text"):
        raise FlanmixError(f"unknown MMLU choices mode {choices!r}", field="mmlu_choices", expected="letters | text")
    files, dev_dir = _mmlu_files(spec, split)
    sets = []
    for path in files:
        subject = _mmlu_subject(path)
        rows = load_mmlu_csv(path)
        if limit is not None:
            rows = rows[:limit]
        exemplars: list[dict] = []
        if shots > 0:
            dev_file = dev_dir / f"{subject}_dev.csv" if dev_dir else None
            if dev_file is None or not dev_file.is_file():
                raise FlanmixError(f"no dev file for MMLU subject {subject!r}", file=dev_file or path,
                                   expected="dev/<subject>_dev.csv for k-shot prompts, or --mmlu-shots 0")
            exemplars = load_mmlu_csv(dev_file)[:shots]
        head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        head += "".join(_mmlu_question(ex, "ABCD"[ex["answer"]]) + "\n\n" for ex in exemplars)
        items = []
        for i, row in enumerate(rows):
            options = [choice_prefix + (letter if choices == "letters" else text.strip())
                       for letter, text in zip("ABCD", row["choices"])]
            items.append(EvalItem(head + _mmlu_question(row), options[row["answer"]], ("rank_classification",),
                                  options, row["answer"], (), f"{subject}-{i}"))
        sets.append(EvalSet(f"mmlu.{subject}", "mmlu", "mmlu", items, "rank_classification",
                            {"file": str(path), "shots": len(exemplars), "choices": choices}))
    return sets


# --------------------------------------------------------------------------------------------------- BIG-bench

def _bigbench_files(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = [path / "task.json"] if (path / "task.json").is_file() else sorted(path.glob("*/task.json"))
        if files:
            return files
        raise FlanmixError("no BIG-bench task.json files in folder", file=path,
                           expected="DIR/task.json or DIR/<task>/task.json")
    raise FlanmixError("BIG-bench path not found", file=spec, expected="a BIG-bench task folder or task.json")


def _bigbench_tasks(spec: str) -> list[tuple[Path, str, dict]]:
    """(file, name, task) of every BIG-bench JSON task under `spec`. A task.json without `examples` is a parent
    task: its subtasks are the `task.json` files of its sub-folders (as bigbench's JsonTask loads them) or an
    inline `subtasks` list, each named `parent:subtask`."""
    found = []
    for path in _bigbench_files(spec):
        data = read_json(path, what="BIG-bench task")
        if not isinstance(data, dict):
            raise FlanmixError("not a BIG-bench JSON task", file=path, expected='{"examples": [...]}')
        name = str(data.get("name") or path.parent.name)
        if isinstance(data.get("examples"), list):
            found.append((path, name, data))
            continue
        subtasks = [(sub, read_json(sub, what="BIG-bench subtask")) for sub in sorted(path.parent.glob("*/task.json"))]
        inline = data.get("subtasks")
        if isinstance(inline, list):
            subtasks += [(path, sub) for sub in inline]
        children = [(sub_path, sub) for sub_path, sub in subtasks
                    if isinstance(sub, dict) and isinstance(sub.get("examples"), list)]
        if not children:
            raise FlanmixError("not a BIG-bench JSON task", file=path,
                               expected='{"examples": [...]} or sub-folders with their own task.json')
        for sub_path, sub in children:
            sub_name = str(sub.get("name") or sub_path.parent.name)
            sub_name = sub_name if sub_name.startswith(name + ":") else f"{name}:{sub_name}"
            found.append((sub_path, sub_name, sub))
    return found


def bigbench_eval_sets(spec: str, *, limit: int | None = None, choice_prefix: str = " ") -> list[EvalSet]:
    """BIG-bench JSON tasks (cluster `bigbench`), prompted as BIG-bench's `json_task` does.

    Prompt: task_prefix + example_input_prefix ("\nQ: ") + input, the choices ("\n  choice: X") when
    `append_choices_to_input` (default true), then example_output_prefix ("\nA: ", trailing space moved into the
    options). Examples with `target_scores` are ranked (`rank_classification`, correct = highest score); examples
    with only `target` (a string or a list of accepted strings) are exact-matched on the first generated line.
    """
    sets = []
    for path, name, data in _bigbench_tasks(spec):
        examples = data["examples"]
        prefix = data.get("task_prefix") or ""
        in_prefix = data.get("example_input_prefix", "\nQ: ")
        out_prefix = (data.get("example_output_prefix", "\nA: ") or "").rstrip()
        append = data.get("append_choices_to_input", True) is not False
        items, notes = [], []
        for i, ex in enumerate(examples[:limit] if limit is not None else examples):
            if not str(ex.get("input", "")).strip():
                continue
            scores = ex.get("target_scores")
            body = prefix + in_prefix + str(ex["input"])
            if isinstance(scores, dict) and scores:
                options = [str(o) for o in scores]
                best = max(range(len(options)), key=lambda k: float(scores[options[k]]))
                if append:
                    body += "".join(f"\n  choice: {o}" for o in options)
                ranked = [choice_prefix + o for o in options]
                items.append(EvalItem((body + out_prefix).lstrip("\n"), ranked[best], ("rank_classification",),
                                      ranked, best, (), f"{name}-{i}"))
            else:
                targets = ex.get("target")
                targets = [targets] if isinstance(targets, str) else [str(t) for t in targets or []]
                if not targets:
                    continue
                items.append(EvalItem((body + out_prefix).lstrip("\n"), targets[0], ("exact_match",), None, None,
                                      ("\n",), f"{name}-{i}", alternatives=tuple(targets[1:])))
        kinds = {it.metrics[0] for it in items}
        if len(kinds) > 1:
            notes.append("mixed multiple-choice and generative examples")
        primary = "rank_classification" if "rank_classification" in kinds else "exact_match"
        if not items:
            notes.append("no examples with an input")
        sets.append(EvalSet(f"bigbench.{name}", "bigbench", "bigbench", items, primary, {"file": str(path)}, notes))
    return sets
