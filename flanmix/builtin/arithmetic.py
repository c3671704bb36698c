"""Arithmetic generators: small integers so a tiny model can learn them on a CPU.

Each generator is `fn(rng) -> dict` and draws only from `rng`, so a task's rows are fixed by its source seed.
Rationales spell out the column (or decomposition) steps exactly; templates append "So the answer is X.".
Multiplication is written `*` and division `/`, plain ASCII that any tokenizer handles.
"""

from __future__ import annotations

import random


def distractors(rng: random.Random, value: int, deltas: tuple[int, ...] = (-10, -2, -1, 1, 2, 10),
                k: int = 3) -> list[str]:
    """`value` plus `k` near misses (never negative), sorted numerically, as strings.

    The near misses are drawn at random so the answer's position among the sorted options carries no signal.
    """
    pool = [value + d for d in deltas if value + d >= 0]
    wrong = rng.sample(pool, min(k, len(pool)))
    return [str(v) for v in sorted([value, *wrong])]


def _column_add(a: int, b: int) -> str:
    ao, at, bo, bt = a % 10, a // 10, b % 10, b // 10
    ones = ao + bo
    if at == 0 and bt == 0 and ones < 10:
        return f"{a} + {b} = {ones}."
    carry = ones // 10
    first = (f"Ones: {ao} + {bo} = {ones}, write {ones % 10} and carry 1." if carry
             else f"Ones: {ao} + {bo} = {ones}, write {ones}.")
    tens = f"Tens: {at} + {bt}{' + 1' if carry else ''} = {at + bt + carry}."
    return f"{first} {tens}"


def add(rng: random.Random) -> dict:
    """Two integers below 100 to add (the spec maps `question` and `answer` with Jinja)."""
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return {"a": a, "b": b, "rationale": _column_add(a, b), "options": distractors(rng, a + b)}


def _column_sub(a: int, b: int) -> str:
    ao, at, bo, bt = a % 10, a // 10, b % 10, b // 10
    if ao >= bo:
        ones, borrow = f"Ones: {ao} - {bo} = {ao - bo}.", 0
    else:
        ones, borrow = f"Ones: {ao} is less than {bo}, so borrow a ten: {ao + 10} - {bo} = {ao + 10 - bo}.", 1
    tens = f"Tens: {at}{' - 1' if borrow else ''} - {bt} = {at - borrow - bt}."
    return f"{ones} {tens}"


def sub(rng: random.Random) -> dict:
    """A two-digit minus a smaller number (never a negative result)."""
    a = rng.randint(10, 99)
    b = rng.randint(0, a)
    result = a - b
    return {"a": a, "b": b, "question": f"{a} - {b}", "answer": str(result), "rationale": _column_sub(a, b),
            "options": distractors(rng, result)}


def mul(rng: random.Random) -> dict:
    """A one-digit times a two-digit number; the rationale splits the two-digit factor into tens and ones."""
    a, b = rng.randint(2, 9), rng.randint(11, 99)
    tens, ones = b // 10 * 10, b % 10
    if ones == 0:
        rationale = f"{a} * {b // 10} = {a * b // 10}, so {a} * {b} = {a * b}."
    else:
        rationale = f"{a} * {b} = {a} * {tens} + {a} * {ones} = {a * tens} + {a * ones} = {a * b}."
    question = f"{a} * {b}" if rng.random() < 0.5 else f"{b} * {a}"
    return {"a": a, "b": b, "question": question, "answer": str(a * b), "rationale": rationale,
            "options": distractors(rng, a * b, (-a, -10, -1, 1, 10, a))}


def div(rng: random.Random) -> dict:
    """An exact division by a one-digit number with a quotient below 20."""
    d, q = rng.randint(2, 9), rng.randint(2, 19)
    n = d * q
    if q < 10:
        rationale = f"{d} * {q} = {n}, so {n} / {d} = {q}."
    else:
        rest = n - 10 * d
        rationale = (f"{d} * 10 = {10 * d}, and {n} - {10 * d} = {rest}. {rest} / {d} = {q - 10}, "
                     f"so {n} / {d} = 10 + {q - 10} = {q}.")
    return {"n": n, "d": d, "question": f"{n} / {d}", "answer": str(q), "rationale": rationale,
            "options": distractors(rng, q, (-2, -1, 1, 2, 3))}


def expr(rng: random.Random) -> dict:
    """A three-number expression where operator precedence or parentheses decide the order of the two steps."""
    form = rng.randrange(5)
    a, b, c = rng.randint(1, 12), rng.randint(1, 9), rng.randint(1, 9)
    if form == 0:
        question, first = f"{a} + {b} * {c}", b * c
        result = a + first
        rationale = f"Multiply first: {b} * {c} = {first}. Then {a} + {first} = {result}."
    elif form == 1:
        question, first = f"({a} + {b}) * {c}", a + b
        result = first * c
        rationale = f"Parentheses first: {a} + {b} = {first}. Then {first} * {c} = {result}."
    elif form == 2:
        first = a * b
        c = rng.randint(1, min(first, 20))
        question, result = f"{a} * {b} - {c}", first - c
        rationale = f"Multiply first: {a} * {b} = {first}. Then {first} - {c} = {result}."
    elif form == 3:
        b = rng.randint(1, a)
        question, first = f"{a} - {b} + {c}", a - b
        result = first + c
        rationale = f"Left to right: {a} - {b} = {first}. Then {first} + {c} = {result}."
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        c = rng.randint(1, b)
        question, first = f"{a} * ({b} - {c})", b - c
        result = a * first
        rationale = f"Parentheses first: {b} - {c} = {first}. Then {a} * {first} = {result}."
    return {"question": question, "answer": str(result), "rationale": rationale}
