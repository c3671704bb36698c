"""Evaluation: build eval items from registered tasks, BBH and MMLU; score them with a model; compute metrics.

Three metrics (the Flan / T0 protocols):

- `exact_match`: greedy generation compared with the rendered target. Reported normalised (`exact_match`: strip,
  collapse whitespace, case-insensitive, trailing period dropped, option-letter forms `(B)`/`B`/`B)` equal,
  numbers compared by value) and strict (`exact_match_strict`: only surrounding whitespace stripped).
- `rank_classification`: every answer option is scored as a continuation of the prompt (sum of token log-probs,
  EOS included); the prediction is the argmax. `rank_classification_norm` uses the per-token mean instead.
- `cot_exact_match`: the task is prompted with its chain-of-thought template, the model generates a rationale, and
  `extract_answer` pulls the final answer out of it ("So the answer is X." and friends, see its docstring).

Scores: per task the mean over examples of every metric; the task's `score` is its primary metric (the first one
its spec lists; BBH: exact_match or cot_exact_match; MMLU: rank_classification). A cluster's score is the macro
average of its tasks' scores; `overall.score` is the macro average over tasks and `overall.cluster_macro` over
clusters.

This module is data-side: it imports no torch at module level. Model scoring goes through a `Scorer`; the default
`ModelScorer` wraps `trainers.evaluate` (imported lazily). Tests can inject any object with the same methods.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

from flanmix.core.errors import FlanmixError

VARIANTS = ("zs_opt", "zs_noopt", "fs_opt", "fs_noopt")
GENERATIVE = ("exact_match", "contains", "cot_exact_match")
SPLITS = ("validation", "train", "test")
DEFAULT_MAX_NEW_TOKENS = 64       # cap for direct answers (the budget is also bounded by the longest reference)
DEFAULT_COT_MAX_NEW_TOKENS = 256  # rationales are longer
FEWSHOT_STOP = ("\n\n",)          # after a few-shot answer the model would start the next exemplar


# ============================================================================================ answers and metrics

_ANSWER_HEADS = (
    # "So the answer is X." / "The final answer is: X" / "Therefore, the answer is X" (the last one wins)
    re.compile(r"\bthe\s+(?:final\s+|correct\s+)?answer\s+is\s*:?\s*", re.I),
    re.compile(r"\banswer\s*:\s*", re.I),
    re.compile(r"^####\s*", re.M),  # GSM8K
)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_LETTER = re.compile(r"^\(?([A-Za-z])\)?[.:]?$")


def _clean_answer(text: str) -> str:
    text = text.strip()
    # A sentence ends at ". " (so "3.5" survives, "46. Let me check" becomes "46").
    text = re.split(r"\.\s", text, maxsplit=1)[0]
    previous = None
    while previous != text:  # peel markdown bold, quotes and a final period in any order
        previous = text
        text = text.strip().strip("*\"'`").strip()
        if text.endswith("."):
            text = text[:-1]
        text = re.sub(r"^\\boxed\{(.*)\}$", r"\1", text)
    return text


def _conclusion(text: str) -> str:
    """The value a final sentence concludes with: what follows its last " is " or "=" ("So 20 - 10 = 10.")."""
    sentences = [x for x in re.split(r"(?<=[.!?])\s+|\n", text.strip()) if x.strip()]
    if not sentences:
        return ""
    last = sentences[-1]
    cut = max(last.rfind(" is "), last.rfind("="))
    if cut < 0:
        return ""
    return _clean_answer(last[cut + (4 if last[cut] == " " else 1):])


def extract_answer(text: str, options: Sequence[str] | None = None) -> str:
    """The final answer of a chain-of-thought generation.

    In order: the text after the last "the answer is" ("So the answer is X.", "The final answer is: X",
    "Therefore, the answer is X"), the last "Answer: X", or a GSM8K "#### X" line -- cut at the end of its
    sentence, with markdown bold, quotes, `\\boxed{}` and a trailing period removed; else the conclusion of the last
    sentence, what follows its last " is " or "=" ("So 20 - 10 = 10.", "The sorted list is 3, 8, 10.") -- when
    `options` are given only if it is one of them; else the option mentioned last (by text, as a whole word, or
    as a "(B)" label); else that conclusion; else the last number in the text (commas and "$" dropped); else the
    last non-empty line.
    """
    for head in _ANSWER_HEADS:
        ends = [m.end() for m in head.finditer(text)]
        if ends:  # an earlier head is more specific than a later one; within one head the last match wins
            answer = _clean_answer(text[ends[-1]:].split("\n", 1)[0])
            if answer:
                return answer
            break
    conclusion = _conclusion(text)
    if conclusion and (not options or any(answers_match(conclusion, str(o)) for o in options)):
        return conclusion
    if options:
        last: tuple[int, int, str] | None = None
        for i, option in enumerate(options):
            for needle in (str(option), f"({chr(65 + i)})"):
                if not needle.strip():
                    continue
                pattern = (r"(?<!\w)" if needle[0].isalnum() else "") + re.escape(needle) + \
                    (r"(?!\w)" if needle[-1].isalnum() else "")
                for m in re.finditer(pattern, text, re.I):
                    key = (m.end(), len(needle), str(option))  # the latest-ending mention; longer wins a tie
                    if last is None or key[:2] > last[:2]:
                        last = key
        if last is not None:
            return last[2]
    if conclusion:
        return conclusion
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", "").replace("$", "")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def normalize(text: str) -> str:
    """Normalised answer text: stripped, whitespace collapsed, lower case, trailing period dropped."""
    text = " ".join(str(text).split()).lower()
    if text.endswith("."):
        text = text[:-1].rstrip()
    return text


def _as_number(text: str) -> float | None:
    t = text.replace(",", "").replace("$", "").strip()
    if not re.fullmatch(r"-?(?:\d+(?:\.\d*)?|\.\d+)", t):
        return None
    try:
        return float(t)
    except ValueError:
        return None


def answers_match(prediction: str, reference: str) -> bool:
    """Normalised equality: `normalize`d strings equal, or both option letters ("(B)" == "b)"), or equal numbers."""
    p, r = normalize(prediction), normalize(reference)
    if p == r:
        return True
    lp, lr = _LETTER.match(p), _LETTER.match(r)
    if lp and lr and ("(" in p + r or ")" in p + r):
        return lp.group(1) == lr.group(1)
    np_, nr = _as_number(p), _as_number(r)
    return np_ is not None and nr is not None and math.isclose(np_, nr, rel_tol=0, abs_tol=1e-9)


# ============================================================================================== eval items

@dataclass
class EvalItem:
    """One prompt to score, with what it is compared against."""

    prompt: str
    reference: str                     # the expected generation (rendered target; for CoT the final answer)
    metrics: tuple[str, ...]           # which metrics this item feeds
    options: list[str] | None = None   # for rank classification (continuations of the prompt)
    answer_index: int | None = None    # the correct option
    stop: tuple[str, ...] = ()         # generation stop strings
    example_id: str = ""
    cot: bool = False
    budget_text: str | None = None     # the longest text a good answer needs (sets the generation budget)
    alternatives: tuple[str, ...] = ()  # further accepted answers (BIG-bench lists several targets)


@dataclass
class EvalSet:
    """The items of one task (a registered task, a BBH file or an MMLU subject)."""

    name: str
    cluster: str
    source: str                        # "registry" | "bbh" | "mmlu"
    items: list[EvalItem]
    primary: str
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    max_new_tokens: dict[bool, int] = field(default_factory=dict)  # cot? -> budget (filled by `evaluate`)


def _cycle(indices: list[int], n: int) -> int:
    return indices[n % len(indices)]


def task_eval_set(task, *, split: str = "validation", variant: str = "zs_opt", limit: int | None = None,
                  seed: int = 0, template_idx: int | None = None, metrics: Sequence[str] | None = None) -> EvalSet:
    """Eval items of a registered task: its held-out rows rendered with the non-inverted templates (cycled, or
    one fixed `template_idx`). `*_opt` falls back to `*_noopt` for a task without answer options. `metrics`
    restricts the spec's metrics (e.g. only rank_classification for a fast run)."""
    from flanmix.core.constants import TARGET_DELIMITER  # the SFT join rule

    if variant not in VARIANTS:
        raise FlanmixError(f"unknown variant {variant!r}", field="variant", expected=" | ".join(VARIANTS))
    if split not in ("validation", "train"):
        raise FlanmixError(f"registered tasks have no {split!r} split", field="split", expected="validation | train")
    used = variant if variant in task.variants() else variant.replace("_opt", "_noopt")
    wanted = metrics
    metrics = [m for m in task.spec.metrics if wanted is None or m in wanted]
    if not metrics:
        return EvalSet(task.name, task.cluster, "registry", [], "none", {"variant": used, "split": split},
                       [f"none of the requested metrics ({', '.join(wanted or [])}) is in its spec"])
    examples = task.examples(split)[:limit] if limit is not None else task.examples(split)
    notes: list[str] = []
    if not examples:
        notes.append(f"no {split} rows")
    stop = FEWSHOT_STOP if used.startswith("fs") else ()
    items: list[EvalItem] = []
    plain = [m for m in metrics if m != "cot_exact_match"]
    zs_indices = [template_idx] if template_idx is not None else task.template_indices(cot=False, inverted=False)
    if plain and not zs_indices:
        notes.append("no non-inverted zero-shot templates; plain metrics skipped")
        plain = []
    skipped_rank = 0
    for n, example in enumerate(examples if plain else []):
        r = task.render_full(example, template_type=used, template_idx=_cycle(zs_indices, n), seed=seed, split=split)
        item_metrics = list(plain)
        answer_index = None
        if "rank_classification" in item_metrics:
            answer_index = _option_index(r.options, r.answer, r.targets)
            if answer_index is None:
                item_metrics.remove("rank_classification")
                skipped_rank += 1
        if not item_metrics:
            continue
        # Options are scored as SFT trains a Flan row's target: after the target delimiter.
        options = [TARGET_DELIMITER + o for o in r.options] if answer_index is not None else None
        items.append(EvalItem(r.inputs, r.targets, tuple(item_metrics), options, answer_index,
                              stop, example.example_id))
    if skipped_rank:
        notes.append(f"{skipped_rank} rows without options containing the answer: no rank_classification for them")
    if "cot_exact_match" in metrics:
        cot_indices = task.template_indices(cot=True, inverted=False)
        if not cot_indices:
            notes.append("cot_exact_match listed but the task has no cot templates")
        for n, example in enumerate(examples if cot_indices else []):
            r = task.render_full(example, template_type=used, template_idx=_cycle(cot_indices, n), cot=True,
                                 seed=seed, split=split)
            items.append(EvalItem(r.inputs, r.answer, ("cot_exact_match",), list(r.options) if r.options else None,
                                  None, stop, example.example_id, cot=True, budget_text=r.targets))
    return EvalSet(task.name, task.cluster, "registry", items, metrics[0],
                   {"variant": used, "split": split, "templates": "cycled" if template_idx is None else template_idx},
                   notes)


def _option_index(options: list[str] | None, answer: str, target: str) -> int | None:
    if not options:
        return None
    for wanted in (answer, target):
        if wanted in options:
            return options.index(wanted)
    lowered = [normalize(o) for o in options]
    for wanted in (answer, target):
        if normalize(wanted) in lowered:
            return lowered.index(normalize(wanted))
    return None


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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FlanmixError(f"cannot read BBH file: {err}", file=path) from None
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


def bigbench_eval_sets(spec: str, *, limit: int | None = None, choice_prefix: str = " ") -> list[EvalSet]:
    """BIG-bench JSON tasks (cluster `bigbench`), prompted as BIG-bench's `json_task` does.

    Prompt: task_prefix + example_input_prefix ("\nQ: ") + input, the choices ("\n  choice: X") when
    `append_choices_to_input` (default true), then example_output_prefix ("\nA: ", trailing space moved into the
    options). Examples with `target_scores` are ranked (`rank_classification`, correct = highest score); examples
    with only `target` (a string or a list of accepted strings) are exact-matched on the first generated line.
    """
    sets = []
    for path in _bigbench_files(spec):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise FlanmixError(f"cannot read BIG-bench task: {err}", file=path) from None
        examples = data.get("examples") if isinstance(data, dict) else None
        if not isinstance(examples, list):
            raise FlanmixError("not a BIG-bench JSON task", file=path, expected='{"examples": [...]}')
        name = str(data.get("name") or path.parent.name)
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


# ------------------------------------------------------------------------------------------------ task specs

def build_eval_sets(specs: Sequence[str], *, registry_dirs: Iterable[str | Path] = (), split: str = "validation",
                    variant: str = "zs_opt", limit: int | None = None, seed: int = 0,
                    template_idx: int | None = None, bbh_cot: bool = False, bbh_shots: int = 3,
                    mmlu_shots: int = 0, mmlu_choices: str = "letters", mmlu_choice_prefix: str = " ",
                    metrics: Sequence[str] | None = None) -> list[EvalSet]:
    """Resolve `--tasks` specs (task names, globs, `cluster:NAME`, `bbh:PATH`, `mmlu:DIR`, `bigbench:DIR`) to eval
    sets."""
    if split not in SPLITS:
        raise FlanmixError(f"unknown split {split!r}", field="split", expected=" | ".join(SPLITS))
    if limit is not None and limit < 1:
        raise FlanmixError("--limit must be at least 1", field="limit")
    if metrics is not None:
        from flanmix.spec import METRICS

        bad = [m for m in metrics if m not in METRICS]
        if bad:
            raise FlanmixError(f"unknown metric {bad[0]!r}", field="metrics", expected=" | ".join(METRICS))
    if not specs:
        raise FlanmixError("no tasks given", field="tasks", expected="--tasks NAME | GLOB | cluster:NAME | bbh:PATH | "
                                                                     "mmlu:DIR")
    registry = None
    sets: list[EvalSet] = []
    seen: set[str] = set()

    def add(new: Iterable[EvalSet]) -> None:
        for s in new:
            if s.name not in seen:
                seen.add(s.name)
                sets.append(s)

    for spec in specs:
        if spec.startswith("bbh:"):
            add(_keep(bbh_eval_sets(spec[4:], cot=bbh_cot, shots=bbh_shots, limit=limit), metrics))
        elif spec.startswith("bigbench:"):
            add(_keep(bigbench_eval_sets(spec[9:], limit=limit), metrics))
        elif spec.startswith("mmlu:"):
            add(_keep(mmlu_eval_sets(spec[5:], split=split, shots=mmlu_shots, choices=mmlu_choices,
                                     choice_prefix=mmlu_choice_prefix, limit=limit), metrics))
        else:
            if registry is None:
                from flanmix.registry import Registry

                registry = Registry.discover(registry_dirs)
            tasks = registry.select(spec)
            if not tasks:
                raise FlanmixError(f"no task matches {spec!r}", field="tasks")
            add(task_eval_set(t, split="validation" if split == "test" else split, variant=variant, limit=limit,
                              seed=seed, template_idx=template_idx, metrics=metrics)
                for t in tasks if t.name not in seen)
    return sets


def _keep(sets: list[EvalSet], metrics: Sequence[str] | None) -> list[EvalSet]:
    # BBH/MMLU have one fixed metric each; a --metrics filter that excludes it leaves the set empty (noted).
    if metrics is None:
        return sets
    for s in sets:
        if s.primary not in metrics:
            s.items, s.notes = [], s.notes + [f"its metric {s.primary} was not requested"]
    return sets


# ================================================================================================== scorers

class Scorer(Protocol):
    """What evaluation needs from a model (tests inject stubs with these methods)."""

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int,
                 stop: Sequence[Sequence[str]]) -> list[str]: ...

    def rank(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[tuple[float, int]]]: ...

    def count_tokens(self, text: str) -> int: ...


class ModelScorer:
    """A causal LM behind `trainers.evaluate` (generation and option log-likelihoods)."""

    def __init__(self, model, tokenizer=None, *, batch_size: int = 32, include_eos: bool = True,
                 threads: int | None = None, device: str | None = None) -> None:
        import torch

        from trainers import evaluate as backend

        if tokenizer is None:
            model, tokenizer = backend.load_model(model, device=device)
        self.model, self.tokenizer, self.backend = model, tokenizer, backend
        self.batch_size, self.include_eos = batch_size, include_eos
        params = sum(p.numel() for p in model.parameters())
        # Tiny models are dominated by per-op overhead; a second intra-op thread only adds contention (measured
        # 2-10x slower with 2 threads on a shared 2-core machine), so they run single-threaded unless told.
        self.threads = threads if threads is not None else (1 if params < 20_000_000 else None)
        self.params = params
        self._torch = torch
        self.gen_stats = backend.GenerationStats()
        self.rank_stats = backend.ScoringStats()

    def _threads(self):
        scorer = self

        class _Ctx:
            def __enter__(self):
                self.old = scorer._torch.get_num_threads()
                self.training = scorer.model.training  # a model handed over mid-training goes back as it came
                scorer.model.eval()
                if scorer.threads:
                    scorer._torch.set_num_threads(scorer.threads)

            def __exit__(self, *exc):
                scorer._torch.set_num_threads(self.old)
                scorer.model.train(self.training)

        return _Ctx()

    def generate(self, prompts, *, max_new_tokens, stop):
        with self._threads():
            return self.backend.generate_greedy(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                                                stop=[tuple(s) for s in stop], batch_size=self.batch_size,
                                                stats=self.gen_stats)

    def rank(self, prompts, options):
        with self._threads():
            scores = self.backend.option_logprobs(self.model, self.tokenizer, prompts, options,
                                                  batch_size=self.batch_size * 2, include_eos=self.include_eos,
                                                  stats=self.rank_stats)
        return [[(s.logprob, s.tokens) for s in row] for row in scores]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def timing(self) -> dict:
        g, r = self.gen_stats, self.rank_stats
        return {"generation": {"prompts": g.prompts, "seconds": round(g.seconds, 3), "new_tokens": g.new_tokens,
                               "prompts_per_s": round(g.prompts / g.seconds, 1) if g.seconds else None,
                               "truncated_prompts": g.truncated_prompts},
                "rank_classification": {"prompts": r.prompts, "sequences": r.sequences, "seconds": round(r.seconds, 3),
                                        "prompts_per_s": round(r.prompts / r.seconds, 1) if r.seconds else None,
                                        "truncated": r.truncated},
                "threads": self.threads, "params": self.params}


# ================================================================================================== running

def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def item_metrics(item: EvalItem, generation: str | None = None,
                 option_scores: Sequence[tuple[float, int]] | None = None) -> dict[str, float]:
    """The metric values (0/1) of one item given its generation and/or its option scores."""
    out: dict[str, float] = {}
    if generation is not None:
        if "exact_match" in item.metrics:
            refs = (item.reference, *item.alternatives)
            out["exact_match_strict"] = float(any(generation.strip() == r.strip() for r in refs))
            out["exact_match"] = float(any(answers_match(generation, r) for r in refs))
        if "contains" in item.metrics:
            out["contains"] = float(normalize(item.reference) in normalize(generation))
        if "cot_exact_match" in item.metrics:
            out["cot_exact_match"] = float(answers_match(extract_answer(generation, item.options), item.reference))
    if option_scores is not None and "rank_classification" in item.metrics:
        sums = [s for s, _ in option_scores]
        means = [s / max(1, n) for s, n in option_scores]
        # Ties (identical scores) count as wrong unless the answer is the first maximum: argmax picks the first.
        out["rank_classification"] = float(max(range(len(sums)), key=lambda i: (sums[i], -i)) == item.answer_index)
        out["rank_classification_norm"] = float(max(range(len(means)), key=lambda i: (means[i], -i))
                                                == item.answer_index)
    return out


def _budgets(sets: list[EvalSet], scorer: Scorer, max_new_tokens: int | None) -> None:
    for s in sets:
        for cot in (False, True):
            refs = [it.reference for it in s.items if it.cot == cot and set(it.metrics) & set(GENERATIVE)]
            if not refs:
                continue
            texts = [it.budget_text or it.reference for it in s.items
                     if it.cot == cot and set(it.metrics) & set(GENERATIVE)]
            if max_new_tokens is not None:
                s.max_new_tokens[cot] = max_new_tokens
            elif cot and not any(it.budget_text for it in s.items if it.cot):
                s.max_new_tokens[cot] = DEFAULT_COT_MAX_NEW_TOKENS  # BBH: only the final answer is known
            else:
                # Enough for the longest reference (for CoT: the rendered rationale + answer) plus slack; an
                # untrained model would otherwise babble up to the cap and dominate the run time.
                cap = DEFAULT_COT_MAX_NEW_TOKENS if cot else DEFAULT_MAX_NEW_TOKENS
                s.max_new_tokens[cot] = min(cap, scorer.count_tokens(max(texts, key=len)) + (16 if cot else 8))


def run_eval_sets(sets: list[EvalSet], scorer: Scorer, *, max_new_tokens: int | None = None,
                  samples: int = 3, log=None) -> dict:
    """Score every item of `sets` with `scorer` (all tasks batched together) and aggregate the metrics."""
    _budgets(sets, scorer, max_new_tokens)
    gen_groups: dict[int, list[tuple[int, int]]] = {}
    rank_refs: list[tuple[int, int]] = []
    for si, s in enumerate(sets):
        for ii, item in enumerate(s.items):
            if set(item.metrics) & set(GENERATIVE):
                gen_groups.setdefault(s.max_new_tokens[item.cot], []).append((si, ii))
            if "rank_classification" in item.metrics and item.options:
                rank_refs.append((si, ii))
    generations: dict[tuple[int, int], str] = {}
    for budget, refs in sorted(gen_groups.items()):
        if log:
            log(f"generating {len(refs)} answers (up to {budget} new tokens)")
        items = [sets[si].items[ii] for si, ii in refs]
        texts = scorer.generate([it.prompt for it in items], max_new_tokens=budget, stop=[it.stop for it in items])
        generations.update(zip(refs, texts))
    scores: dict[tuple[int, int], list[tuple[float, int]]] = {}
    if rank_refs:
        if log:
            log(f"ranking options of {len(rank_refs)} prompts")
        items = [sets[si].items[ii] for si, ii in rank_refs]
        scores.update(zip(rank_refs, scorer.rank([it.prompt for it in items], [it.options for it in items])))
    return aggregate(sets, generations, scores, samples=samples)


def aggregate(sets: list[EvalSet], generations: dict[tuple[int, int], str],
              scores: dict[tuple[int, int], list[tuple[float, int]]], *, samples: int = 3) -> dict:
    """Per-task means of every metric, per-cluster and overall macro averages (the `tasks/clusters/overall`
    part of the results). Keys of `generations`/`scores` are (set index, item index)."""
    tasks: dict[str, dict] = {}
    for si, s in enumerate(sets):
        values: dict[str, list[float]] = {}
        shown = []
        for ii, item in enumerate(s.items):
            gen = generations.get((si, ii))
            opt = scores.get((si, ii))
            for name, v in item_metrics(item, gen, opt).items():
                values.setdefault(name, []).append(v)
            if len(shown) < samples:
                sample: dict[str, Any] = {"example_id": item.example_id, "prompt": _tail(item.prompt, 300),
                                          "reference": item.reference}
                if gen is not None:
                    sample["generation"] = gen
                    if item.cot:
                        sample["extracted"] = extract_answer(gen, item.options)
                if opt is not None:
                    sample["options"] = item.options
                    sample["option_logprobs"] = [round(x, 4) for x, _ in opt]
                shown.append(sample)
        metrics = {k: _mean(v) for k, v in sorted(values.items())}
        primary = s.primary if s.primary in metrics else next(iter(metrics), s.primary)
        tasks[s.name] = {"cluster": s.cluster, "source": s.source,
                         "n": len({it.example_id for it in s.items}) if s.items else 0,
                         "counts": {k: len(v) for k, v in sorted(values.items())}, "metrics": metrics,
                         "primary_metric": primary, "score": metrics.get(primary), **s.info,
                         "notes": s.notes, "samples": shown}
    clusters: dict[str, dict] = {}
    for name, t in tasks.items():
        c = clusters.setdefault(t["cluster"], {"tasks": [], "scores": []})
        c["tasks"].append(name)
        if t["score"] is not None:
            c["scores"].append(t["score"])
    for c in clusters.values():
        c["score"] = _mean(c.pop("scores"))
        c["n_tasks"] = len(c["tasks"])
    task_scores = [t["score"] for t in tasks.values() if t["score"] is not None]
    cluster_scores = [c["score"] for c in clusters.values() if c["score"] is not None]
    overall = {"score": _mean(task_scores), "cluster_macro": _mean(cluster_scores), "n_tasks": len(tasks),
               "n_clusters": len(clusters), "n_items": sum(t["n"] for t in tasks.values())}
    return {"tasks": tasks, "clusters": dict(sorted(clusters.items())), "overall": overall}


def _tail(text: str, n: int) -> str:
    return text if len(text) <= n else "…" + text[-n:]


def evaluate(model: Any, tasks: Sequence[str], *, split: str = "validation", variant: str = "zs_opt",
             limit: int | None = None, batch_size: int = 32, max_new_tokens: int | None = None,
             registry_dirs: Iterable[str | Path] = (), seed: int = 0, template_idx: int | None = None,
             bbh_cot: bool = False, bbh_shots: int = 3, mmlu_shots: int = 0, mmlu_choices: str = "letters",
             mmlu_choice_prefix: str = " ", include_eos: bool = True, threads: int | None = None,
             metrics: Sequence[str] | None = None, samples: int = 3, out: str | Path | None = None,
             log=None) -> dict:
    """Evaluate a model on tasks; returns (and with `out` writes as JSON) the results dict.

    `model` is a model folder, a `(model, tokenizer)` pair already in memory, or a `Scorer`. `tasks` are
    specs as for `flanmix eval --tasks`: names, globs, `cluster:NAME`, `bbh:PATH_OR_DIR`, `mmlu:DIR`. `metrics`
    restricts which of each task's metrics are computed (default: all its spec lists). `tasks` may also be a list
    of `EvalSet`s from `build_eval_sets`, to render once and evaluate many models.
    """
    t0 = time.perf_counter()
    model_desc = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    if isinstance(model, (str, Path)):
        from trainers.models import check_model_dir

        check_model_dir(model)  # fail on a bad folder before the (slower) task rendering
    if tasks and all(isinstance(t, EvalSet) for t in tasks):
        sets = list(tasks)  # built once by the caller (an ablation grid evaluates many models on one set)
    else:
        sets = build_eval_sets(tasks, registry_dirs=registry_dirs, split=split, variant=variant, limit=limit,
                               seed=seed, template_idx=template_idx, bbh_cot=bbh_cot, bbh_shots=bbh_shots,
                               mmlu_shots=mmlu_shots, mmlu_choices=mmlu_choices,
                               mmlu_choice_prefix=mmlu_choice_prefix, metrics=metrics)
    t_build = time.perf_counter() - t0
    if isinstance(model, (str, Path)):
        scorer: Any = ModelScorer(model, batch_size=batch_size, include_eos=include_eos, threads=threads)
    elif isinstance(model, tuple) and len(model) == 2:
        scorer = ModelScorer(model[0], model[1], batch_size=batch_size, include_eos=include_eos, threads=threads)
    else:
        scorer = model
    t1 = time.perf_counter()
    results = run_eval_sets(sets, scorer, max_new_tokens=max_new_tokens, samples=samples, log=log)
    timing = {"build_s": round(t_build, 3), "score_s": round(time.perf_counter() - t1, 3),
              "total_s": round(time.perf_counter() - t0, 3)}
    if hasattr(scorer, "timing"):
        timing.update(scorer.timing())
    report = {"model": model_desc, "tasks_spec": [t.name if isinstance(t, EvalSet) else t for t in tasks],
              "settings": {"split": split, "variant": variant, "limit": limit, "seed": seed,
                           "template_idx": template_idx, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                           "bbh_cot": bbh_cot, "bbh_shots": bbh_shots, "mmlu_shots": mmlu_shots,
                           "mmlu_choices": mmlu_choices, "include_eos": include_eos,
                           "metrics": list(metrics) if metrics is not None else None},
              **results, "timing": timing}
    if out is not None:
        write_json(report, out)
    return report


def write_json(report: dict, path: str | Path) -> None:
    """Write the results atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def format_table(report: dict) -> str:
    """A plain-text table: one row per task, then clusters and the overall scores."""
    names = ["exact_match", "exact_match_strict", "rank_classification", "rank_classification_norm",
             "cot_exact_match", "contains"]
    present = [m for m in names if any(m in t["metrics"] for t in report["tasks"].values())]
    short = {"exact_match": "EM", "exact_match_strict": "EM-strict", "rank_classification": "RC",
             "rank_classification_norm": "RC-norm", "cot_exact_match": "CoT-EM", "contains": "contains"}
    header = ["task", "cluster", "n", *[short[m] for m in present], "score"]
    rows = [header]

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    for name, t in report["tasks"].items():
        rows.append([name, t["cluster"], str(t["n"]), *[fmt(t["metrics"].get(m)) for m in present], fmt(t["score"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for cname, c in report["clusters"].items():
        lines.append(f"cluster {cname:<20} {fmt(c['score'])}  (macro over {c['n_tasks']} tasks)")
    o = report["overall"]
    lines.append(f"overall {'(task macro)':<20} {fmt(o['score'])}  ({o['n_tasks']} tasks, {o['n_items']} items)")
    lines.append(f"overall {'(cluster macro)':<20} {fmt(o['cluster_macro'])}  ({o['n_clusters']} clusters)")
    return "\n".join(lines)


def _stderr_log(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr, flush=True)
