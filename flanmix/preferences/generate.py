"""Verifiable preferences generated from (prompt, correct answer) pairs.

A rendered task example knows its correct answer, so preferences need no annotator: the correct answer is
preferred to perturbed ones, and a k-way ranking orders the candidates by a programmatic score — the negative
distance to the correct answer (numeric distance for numbers, Levenshtein distance for text).

    pairs:    {"prompt", "chosen": correct, "rejected": perturbed}             (+ "margin" if asked)
    rankings: {"prompt", "responses": [correct, p1, …], "scores": [0, −d1, …]}  (distinct scores, shuffled order)

Everything here is pure Python and seeded from (seed, example index), so the same input gives the same file.
`rows_from_tasks` renders examples of registered tasks (`flanmix.registry`) and makes rows from them.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections.abc import Iterable, Sequence

from flanmix.core.errors import FlanmixError
from flanmix.registry import load_registry

_NUM = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute: cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def distance(answer: str, candidate: str) -> float:
    """Programmatic distance to the correct answer: |x − y| for numbers, edit distance for text."""
    if _NUM.match(answer) and _NUM.match(candidate):
        return abs(float(answer) - float(candidate))
    return float(levenshtein(answer.strip(), candidate.strip()))


def _fmt_num(x: float, like: str) -> str:
    return str(int(x)) if "." not in like else f"{x:.{len(like.split('.')[1])}f}"


def _numeric_perturbations(answer: str, rng: random.Random, n: int) -> list[str]:
    x = float(answer)
    out: list[str] = []
    steps = [1, 2, 3, 5, 10, 20, 50, 100, 1000]
    tries = 0
    while len(out) < n and tries < 200:
        tries += 1
        kind = rng.random()
        if kind < 0.6:
            y = x + rng.choice([-1, 1]) * rng.choice(steps)
        elif kind < 0.8:
            y = x * rng.choice([10, 2]) if x else x + 7
        else:  # a digit swap, the classic slip
            s = list(_fmt_num(x, answer.strip()))
            digits = [i for i, ch in enumerate(s) if ch.isdigit()]
            if len(digits) >= 2:
                i, j = rng.sample(digits, 2)
                s[i], s[j] = s[j], s[i]
            y = float("".join(s)) if "".join(s).lstrip("-").replace(".", "", 1).isdigit() else x + 1
        cand = _fmt_num(y, answer.strip())
        if cand != answer and cand not in out:
            out.append(cand)
    return out


EDITS = {"mixed": range(6), "words": range(3), "chars": range(3, 6)}


def _text_edit(text: str, rng: random.Random, edits: str = "mixed") -> str:
    words = text.split()
    kind = rng.choice(EDITS[edits])
    if kind == 0 and len(words) > 1:  # drop a word
        del words[rng.randrange(len(words))]
        return " ".join(words)
    if kind == 1 and len(words) > 1:  # swap two words
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
        return " ".join(words)
    if kind == 2 and words:  # duplicate a word
        i = rng.randrange(len(words))
        words.insert(i, words[i])
        return " ".join(words)
    chars = list(text)
    if not chars:
        return rng.choice(string.ascii_lowercase)
    i = rng.randrange(len(chars))
    if kind == 3:  # substitute a character
        chars[i] = rng.choice(string.ascii_lowercase.replace(chars[i].lower(), "") or "x")
    elif kind == 4 and len(chars) > 1:  # delete a character
        del chars[i]
    else:  # swap adjacent characters / insert one
        if i + 1 < len(chars) and chars[i] != chars[i + 1]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        else:
            chars.insert(i, rng.choice(string.ascii_lowercase))
    return "".join(chars)


def _text_perturbations(answer: str, rng: random.Random, n: int, max_edits: int = 3,
                        edits: str = "mixed") -> list[str]:
    out: list[str] = []
    tries = 0
    while len(out) < n and tries < 100:
        tries += 1
        cand = answer
        for _ in range(rng.randint(1, max_edits)):
            cand = _text_edit(cand, rng, edits)
        if cand.strip() and cand.strip() != answer.strip() and cand not in out:
            out.append(cand)
    return out


def perturb(answer: str, n: int, rng: random.Random, edits: str = "mixed") -> list[str]:
    """Up to n distinct wrong answers near the correct one. Text answers get `edits`: word-level (drop, swap,
    duplicate a word), character-level (substitute, delete, transpose/insert a character) or a mix."""
    if edits not in EDITS:
        raise FlanmixError(f"unknown edits {edits!r}", field="edits", expected=" | ".join(EDITS))
    if not answer.strip():
        raise FlanmixError("empty correct answer", field="answer")
    if _NUM.match(answer):
        # keep the answer's surrounding whitespace so the format itself gives nothing away
        lead = answer[: len(answer) - len(answer.lstrip())]
        trail = answer[len(answer.rstrip()):]
        return [lead + c + trail for c in _numeric_perturbations(answer.strip(), rng, n)]
    return _text_perturbations(answer, rng, n, edits=edits)


def preference_rows(examples: Iterable[tuple[str, str]], *, kind: str = "pairs", k: int = 4, seed: int = 0,
                    margin: bool = False, edits: str = "mixed") -> list[dict]:
    """Pairs or k-way rankings from (prompt, correct answer) pairs.

    pairs: chosen = the answer, rejected = one perturbation (``margin`` adds log(1 + distance) as the pair margin).
    rankings: the answer and k − 1 perturbations with distinct distances, scored −distance, in shuffled order.
    Examples whose answer cannot be perturbed are skipped.
    """
    if kind not in ("pairs", "rankings"):
        raise FlanmixError(f"unknown kind {kind!r}", field="kind", expected="pairs | rankings")
    if kind == "rankings" and k < 2:
        raise FlanmixError("a ranking needs k ≥ 2", field="k")
    rows = []
    for idx, (prompt, answer) in enumerate(examples):
        rng = random.Random(f"{seed}:{idx}")
        if kind == "pairs":
            wrong = perturb(answer, 1, rng, edits)
            if not wrong:
                continue
            row = {"prompt": prompt, "chosen": answer, "rejected": wrong[0]}
            if margin:
                row["margin"] = round(math.log1p(distance(answer, wrong[0])), 6)
            rows.append(row)
        else:
            wrong = perturb(answer, 3 * k, rng, edits)
            picked, seen = [], {0.0}
            for w in wrong:
                d = distance(answer, w)
                if d not in seen:
                    seen.add(d)
                    picked.append((w, -d))
                if len(picked) == k - 1:
                    break
            if len(picked) < 1:
                continue
            cands = [(answer, 0.0)] + picked
            rng.shuffle(cands)
            rows.append({"prompt": prompt, "responses": [c for c, _ in cands], "scores": [s for _, s in cands]})
    return rows


def task_examples(tasks: Sequence[str], *, n: int = 200, split: str = "train", seed: int = 0,
                  template_type: str = "zs_noopt", extra_dirs: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(inputs, targets) of up to n rendered examples per task; `tasks` are names, globs or `cluster:NAME`.

    Only non-inverted zero-shot templates are used (their target is the task's answer), cycling over them."""
    registry = load_registry(extra_dirs)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for pattern in tasks:
        for task in registry.select(pattern):
            if task.name in seen:
                continue
            seen.add(task.name)
            indices = (task.template_indices(cot=False, inverted=False, template_type=template_type)
                       or task.template_indices(cot=False, template_type=template_type))
            for k, example in enumerate(task.examples(split)[:n]):
                row = task.render(example, template_type=template_type, template_idx=indices[k % len(indices)],
                                  seed=seed, split=split)
                if row["targets"].strip():
                    out.append((row["inputs"], row["targets"]))
    if not out:
        raise FlanmixError(f"no examples rendered for {', '.join(tasks)}", field="tasks")
    return out


def rows_from_tasks(tasks: Sequence[str], *, n: int = 200, split: str = "train", kind: str = "pairs",
                    k: int = 4, seed: int = 0, margin: bool = False, separator: str = " ",
                    edits: str = "mixed") -> list[dict]:
    """Verifiable preference rows for registered tasks. `separator` starts every response, as it starts the
    completion of an SFT row (inputs, then TARGET_DELIMITER + targets): prompt and responses then tokenize exactly
    as in SFT and at inference. (On the prompt's end it would become a token of its own that SFT never trains.)"""
    rows = preference_rows(task_examples(tasks, n=n, split=split, seed=seed), kind=kind, k=k, seed=seed,
                           margin=margin, edits=edits)
    return start_responses(rows, separator)


def start_responses(rows: list[dict], separator: str) -> list[dict]:
    """Put `separator` (the SFT target delimiter) at the start of every response of pair and ranking rows."""
    for row in rows:
        for key in ("chosen", "rejected"):
            if key in row:
                row[key] = separator + row[key]
        if "responses" in row:
            row["responses"] = [separator + r for r in row["responses"]]
    return rows
