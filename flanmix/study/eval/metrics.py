"""Metrics: answer normalisation, chain-of-thought answer extraction, per-item metric values and their macro
averages.

- `exact_match`: the greedy generation compared with the rendered target, normalised (`answers_match`: strip,
  collapse whitespace, case-insensitive, trailing period dropped, option-letter forms `(B)`/`B`/`B)` equal, numbers
  compared by value); `exact_match_strict` only strips surrounding whitespace.
- `rank_classification`: the argmax over the options' summed token log-probs (lm-eval's `acc`; EOS included for
  flanmix's own tasks, not for MMLU/BBH/BIG-bench); `rank_classification_norm` uses the per-token mean instead;
  `acc_norm` (MMLU/BBH/BIG-bench only) divides by the choice's characters, as lm-evaluation-harness does.
- `cot_exact_match`: `extract_answer` pulls the final answer out of a generated rationale and `answers_match`es it.

Scores (`aggregate`): per task the mean over items of every metric; the task's `score` is its primary metric. A
cluster's score is the macro average of its tasks' scores; `overall.score` is the macro average over tasks and
`overall.cluster_macro` over clusters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from flanmix.study.eval.items import LM_EVAL_SOURCES, EvalItem, EvalSet, choice_chars

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


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def item_metrics(item: EvalItem, generation: str | None = None,
                 option_scores: Sequence[tuple[float, int]] | None = None, *, acc_norm: bool = False
                 ) -> dict[str, float]:
    """The metric values (0/1) of one item given its generation and/or its option scores (with `acc_norm`, also
    lm-evaluation-harness's `acc_norm`: the argmax of log-prob / characters of the choice)."""
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
        if acc_norm and item.options:
            per_char = [s / max(1, choice_chars(o)) for s, o in zip(sums, item.options)]
            out["acc_norm"] = float(max(range(len(per_char)), key=lambda i: (per_char[i], -i)) == item.answer_index)
    return out


def aggregate(sets: list[EvalSet], generations: dict[tuple[int, int], str],
              scores: dict[tuple[int, int], list[tuple[float, int]]], *, samples: int = 3,
              full_samples: bool = False) -> dict:
    """Per-task means of every metric, per-cluster and overall macro averages (the `tasks/clusters/overall`
    part of the results). Keys of `generations`/`scores` are (set index, item index). With `full_samples` every
    item is in `samples`, with its whole prompt and unrounded scores."""
    tasks = {s.name: _task_result(s, [(generations.get((si, ii)), scores.get((si, ii))) for ii in range(len(s.items))],
                                  len(s.items) if full_samples else samples, full=full_samples)
             for si, s in enumerate(sets)}
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


def _task_result(s: EvalSet, outputs: list[tuple[str | None, list[tuple[float, int]] | None]], samples: int, *,
                 full: bool = False) -> dict:
    """One task's entry of the results: metric means, its score and the first `samples` predictions."""
    values: dict[str, list[float]] = {}
    for item, (gen, opt) in zip(s.items, outputs):
        for name, v in item_metrics(item, gen, opt, acc_norm=s.source in LM_EVAL_SOURCES).items():
            values.setdefault(name, []).append(v)
    metrics = {k: _mean(v) for k, v in sorted(values.items())}
    primary = s.primary if s.primary in metrics else next(iter(metrics), s.primary)
    return {"cluster": s.cluster, "source": s.source, "n": len({it.example_id for it in s.items}) if s.items else 0,
            "counts": {k: len(v) for k, v in sorted(values.items())}, "metrics": metrics,
            "primary_metric": primary, "score": metrics.get(primary), **s.info, "notes": s.notes,
            "samples": [_sample(item, *out, full=full) for item, out in zip(s.items[:samples], outputs)]}


def _sample(item: EvalItem, gen: str | None, opt: list[tuple[float, int]] | None, *, full: bool = False
            ) -> dict[str, Any]:
    sample: dict[str, Any] = {"example_id": item.example_id, "prompt": item.prompt if full else _tail(item.prompt, 300),
                              "reference": item.reference}
    if gen is not None:
        sample["generation"] = gen
        if item.cot:
            sample["extracted"] = extract_answer(gen, item.options)
    if opt is not None:
        sample["options"] = item.options
        sample["option_logprobs"] = [x if full else round(x, 4) for x, _ in opt]
        if full:
            sample["option_tokens"] = [n for _, n in opt]
            sample["answer_index"] = item.answer_index
    return sample


def _tail(text: str, n: int) -> str:
    return text if len(text) <= n else "…" + text[-n:]
