"""Simple propositional logic generators: boolean expressions, variable substitution, conditionals, orderings
and counting true statements. Rationales evaluate one operator per step.
"""

from __future__ import annotations

import random

from flanmix.builtin.word_problems import PEOPLE


def _lit(rng: random.Random, p_not: float = 0.3) -> tuple[bool, bool]:
    """A literal: (negated, value)."""
    return rng.random() < p_not, rng.random() < 0.5


def _lit_text(lit: tuple[bool, bool], name: str | None = None) -> str:
    negated, value = lit
    return ("not " if negated else "") + (name if name is not None else str(value))


def _eval_lit(lit: tuple[bool, bool], steps: list[str]) -> bool:
    negated, value = lit
    if negated:
        steps.append(f"not {value} = {not value}.")
        return not value
    return value


def _apply(op: str, x: bool, y: bool, steps: list[str]) -> bool:
    result = (x and y) if op == "and" else (x or y)
    steps.append(f"{x} {op} {y} = {result}.")
    return result


def _three_literal_expr(rng: random.Random, names: list[str] | None = None
                        ) -> tuple[str, str, list[tuple[bool, bool]], bool, list[str]]:
    """(A op B) op C or A op (B op C), each literal possibly negated.

    Returns the text (with `names` in place of the values when given), the text with values, the literals, the
    value and the evaluation steps.
    """
    lits = [_lit(rng) for _ in range(3)]
    op1, op2 = rng.choice(("and", "or")), rng.choice(("and", "or"))
    left = rng.random() < 0.5

    def text(labels: list[str] | None) -> str:
        t = [_lit_text(lit, labels[i] if labels else None) for i, lit in enumerate(lits)]
        return f"({t[0]} {op1} {t[1]}) {op2} {t[2]}" if left else f"{t[0]} {op1} ({t[1]} {op2} {t[2]})"

    steps: list[str] = []
    if left:
        inner = _apply(op1, _eval_lit(lits[0], steps), _eval_lit(lits[1], steps), steps)
        value = _apply(op2, inner, _eval_lit(lits[2], steps), steps)
    else:
        inner = _apply(op2, _eval_lit(lits[1], steps), _eval_lit(lits[2], steps), steps)
        value = _apply(op1, _eval_lit(lits[0], steps), inner, steps)
    return text(names), text(None), lits, value, steps


def bool_expr(rng: random.Random) -> dict:
    """Evaluate a boolean expression over True/False with and, or, not and one pair of parentheses."""
    text, _, _, value, steps = _three_literal_expr(rng)
    return {"expression": text, "answer": str(value), "options": ["True", "False"], "rationale": " ".join(steps)}


def variables(rng: random.Random) -> dict:
    """Substitute given truth values for two or three variables, then evaluate."""
    names = rng.sample(["p", "q", "r", "x", "y", "z"], 3)
    if rng.random() < 0.5:
        names = names[:2]
        lits = [_lit(rng), _lit(rng)]
        op = rng.choice(("and", "or"))
        text = f"{_lit_text(lits[0], names[0])} {op} {_lit_text(lits[1], names[1])}"
        substituted = f"{_lit_text(lits[0])} {op} {_lit_text(lits[1])}"
        steps: list[str] = []
        value = _apply(op, _eval_lit(lits[0], steps), _eval_lit(lits[1], steps), steps)
    else:
        text, substituted, lits, value, steps = _three_literal_expr(rng, names)
    truth = [lit[1] for lit in lits]
    given = ", ".join(f"{name} = {value_}" for name, value_ in zip(names, truth))
    rationale = f"Substituting gives {substituted}. " + " ".join(steps)
    return {"assignment": given, "names": names, "truth": truth, "expression": text, "answer": str(value),
            "options": ["True", "False"], "rationale": rationale}


# Each subject can be in one of two states; a statement is "the <subject> is <state>".
STATES = (
    ("lamp", "on", "broken"), ("door", "open", "locked"), ("box", "red", "heavy"), ("cup", "full", "hot"),
    ("road", "wet", "busy"), ("dog", "asleep", "hungry"), ("car", "clean", "new"), ("oven", "hot", "on"),
    ("shop", "closed", "busy"), ("glass", "empty", "cold"), ("garden", "green", "wet"), ("window", "open", "dirty"),
)


def implication(rng: random.Random) -> dict:
    """'If P, then Q' plus one fact: modus ponens (yes), modus tollens (no) or an invalid inference (unknown)."""
    (s1, *states1), (s2, *states2) = rng.sample(STATES, 2)
    a1, a2 = rng.choice(states1), rng.choice(states2)
    p, q = f"the {s1} is {a1}", f"the {s2} is {a2}"
    not_p, not_q = f"the {s1} is not {a1}", f"the {s2} is not {a2}"
    ask_p, ask_q = f"Is the {s1} {a1}?", f"Is the {s2} {a2}?"
    roll = rng.random()
    if roll < 1 / 3:
        form, fact, ask, answer = "modus_ponens", p, ask_q, "yes"
        rationale = f"The rule says that if {p}, then {q}. We know {p}, so {q}."
    elif roll < 2 / 3:
        form, fact, ask, answer = "modus_tollens", not_q, ask_p, "no"
        rationale = f"If {p}, then {q} would be true. But {not_q}, so {not_p}."
    elif roll < 5 / 6:
        form, fact, ask, answer = "denying_antecedent", not_p, ask_q, "unknown"
        rationale = f"The rule says nothing about what happens when {not_p}, so we cannot tell."
    else:
        form, fact, ask, answer = "affirming_consequent", q, ask_p, "unknown"
        rationale = f"The rule does not say that {q} only if {p}, so we cannot tell."
    context = f"If {p}, then {q}. {fact[0].upper()}{fact[1:]}."
    return {"context": context, "ask": ask, "form": form, "answer": answer, "options": ["yes", "no", "unknown"],
            "rationale": rationale}


COMPARATIVES = (  # (more, less, most, least)
    ("taller", "shorter", "tallest", "shortest"), ("older", "younger", "oldest", "youngest"),
    ("faster", "slower", "fastest", "slowest"), ("heavier", "lighter", "heaviest", "lightest"),
)


def order(rng: random.Random) -> dict:
    """Two comparisons among three people; who is the most (or least) of the three?"""
    top, mid, bottom = (p[0] for p in rng.sample(PEOPLE, 3))
    more, less, most, least = rng.choice(COMPARATIVES)
    facts = []
    for high, low in ((top, mid), (mid, bottom)):
        facts.append(f"{high} is {more} than {low}." if rng.random() < 0.5 else f"{low} is {less} than {high}.")
    rng.shuffle(facts)
    ask_most = rng.random() < 0.5
    superlative = most if ask_most else least
    answer = top if ask_most else bottom
    names = sorted([top, mid, bottom])
    return {"facts": " ".join(facts), "superlative": superlative, "answer": answer, "options": names,
            "order": [top, mid, bottom],
            "rationale": f"From {most} to {least} the order is {top}, {mid}, {bottom}."}


def count_true(rng: random.Random) -> dict:
    """How many of three comparisons between one-digit numbers are true (0-3)."""
    statements, steps, true = [], [], 0
    for _ in range(3):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        op = rng.choice(("<", ">", "="))
        holds = a < b if op == "<" else a > b if op == ">" else a == b
        true += holds
        statements.append(f"{a} {op} {b}")
        steps.append(f"{a} {op} {b} is {'true' if holds else 'false'}.")
    return {"statements": "; ".join(statements), "answer": str(true), "options": ["0", "1", "2", "3"],
            "rationale": " ".join(steps)}
