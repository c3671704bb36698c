"""Multi-step word problems (two arithmetic steps each) with exact step-by-step rationales.

Numbers stay small (answers below ~200) and the vocabulary is a few dozen words, so tiny models can learn the
tasks; the rationale lists each step as an equation, and templates append "So the answer is X.".
"""

from __future__ import annotations

import random

# (name, subject pronoun, possessive pronoun)
PEOPLE = (
    ("Ann", "she", "her"), ("Ben", "he", "his"), ("Cara", "she", "her"), ("Dan", "he", "his"),
    ("Eva", "she", "her"), ("Finn", "he", "his"), ("Gina", "she", "her"), ("Hugo", "he", "his"),
    ("Ivy", "she", "her"), ("Jack", "he", "his"), ("Lena", "she", "her"), ("Max", "he", "his"),
    ("Nora", "she", "her"), ("Omar", "he", "his"), ("Pia", "she", "her"), ("Sam", "he", "his"),
    ("Tara", "she", "her"), ("Tom", "he", "his"), ("Mia", "she", "her"), ("Leo", "he", "his"),
)
COUNTABLES = ("apples", "stickers", "marbles", "cards", "cookies", "shells", "stamps", "pencils", "coins",
              "beads")
GOODS = ("pen", "book", "cup", "ball", "hat", "card", "toy", "kite", "cake", "bottle", "lamp", "sock")
CONTAINERS = ("bags", "boxes", "jars", "baskets")
RELATIVES = ("brother", "sister", "cousin", "friend")


def _two_people(rng: random.Random) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    first, second = rng.sample(PEOPLE, 2)
    return first, second


def _plural(word: str, n: int) -> str:
    return word if n == 1 else word + "s"


def two_step(rng: random.Random) -> dict:
    """Start with some things, gain and lose (or compare with a friend), then count."""
    (name, pron, _), (other, _, _) = _two_people(rng)
    items = rng.choice(COUNTABLES)
    form = rng.randrange(3)
    a, b = rng.randint(3, 30), rng.randint(1, 20)
    if form == 0:
        c = rng.randint(1, a + b)
        question = (f"{name} has {a} {items}. {pron.capitalize()} buys {b} more and then gives {c} to {other}. "
                    f"How many {items} does {name} have now?")
        mid, result = a + b, a + b - c
        rationale = (f"{name} starts with {a}. After buying {b}: {a} + {b} = {mid}. "
                     f"After giving away {c}: {mid} - {c} = {result}.")
    elif form == 1:
        c = rng.randint(1, a)
        question = (f"{name} has {a} {items}. {pron.capitalize()} gives {c} to {other} and then finds {b} more. "
                    f"How many {items} does {name} have now?")
        mid, result = a - c, a - c + b
        rationale = (f"{name} starts with {a}. After giving away {c}: {a} - {c} = {mid}. "
                     f"After finding {b}: {mid} + {b} = {result}.")
    else:
        c = 0
        question = (f"{name} has {a} {items}. {other} has {b} more {items} than {name}. "
                    f"How many {items} do they have together?")
        mid, result = a + b, a + a + b
        rationale = f"{other} has {a} + {b} = {mid}. Together: {a} + {mid} = {result}."
    return {"form": form, "a": a, "b": b, "c": c, "question": question,
            "answer": str(result), "rationale": rationale}


def shopping(rng: random.Random) -> dict:
    """Buy two kinds of things at given prices; how much is spent in total."""
    name, pron, _ = rng.choice(PEOPLE)
    g1, g2 = rng.sample(GOODS, 2)
    p1, p2 = rng.randint(1, 9), rng.randint(1, 9)
    n1, n2 = rng.randint(1, 5), rng.randint(1, 5)
    x, y = n1 * p1, n2 * p2
    question = (f"A {g1} costs {p1} {_plural('dollar', p1)} and a {g2} costs {p2} {_plural('dollar', p2)}. "
                f"{name} buys {n1} {_plural(g1, n1)} and {n2} {_plural(g2, n2)}. How many dollars does {pron} spend?")
    rationale = (f"The {_plural(g1, n1)} cost {n1} * {p1} = {x}. The {_plural(g2, n2)} cost {n2} * {p2} = {y}. "
                 f"In total: {x} + {y} = {x + y}.")
    return {"p1": p1, "p2": p2, "n1": n1, "n2": n2, "question": question, "answer": str(x + y),
            "rationale": rationale}


def change(rng: random.Random) -> dict:
    """Buy several of one thing and pay with a bill; how much change comes back."""
    name, pron, _ = rng.choice(PEOPLE)
    good = rng.choice(GOODS)
    n, p = rng.randint(2, 6), rng.randint(1, 8)  # at most 48, so a 50-dollar bill always covers it
    cost = n * p
    bill = rng.choice([b for b in (10, 20, 50) if b >= cost])
    question = (f"{name} buys {n} {good}s at {p} {_plural('dollar', p)} each and pays with a {bill}-dollar bill. "
                f"How many dollars of change does {pron} get?")
    rationale = f"The {good}s cost {n} * {p} = {cost}. The change is {bill} - {cost} = {bill - cost}."
    return {"n": n, "p": p, "bill": bill, "question": question, "answer": str(bill - cost), "rationale": rationale}


def share(rng: random.Random) -> dict:
    """Containers of things, shared equally among friends (always divides exactly)."""
    name, pron, _ = rng.choice(PEOPLE)
    items, containers = rng.choice(COUNTABLES), rng.choice(CONTAINERS)
    while True:
        b, k = rng.randint(2, 6), rng.randint(2, 9)
        divisors = [m for m in range(2, 10) if (b * k) % m == 0]
        if divisors:
            break
    m = rng.choice(divisors)
    total = b * k
    question = (f"{name} has {b} {containers} with {k} {items} in each. {pron.capitalize()} shares all the "
                f"{items} equally among {m} friends. How many {items} does each friend get?")
    rationale = f"There are {b} * {k} = {total} {items}. Each friend gets {total} / {m} = {total // m}."
    return {"b": b, "k": k, "m": m, "question": question, "answer": str(total // m), "rationale": rationale}


def age(rng: random.Random) -> dict:
    """An age difference, then a shift in time."""
    name, _, poss = rng.choice(PEOPLE)
    relative = rng.choice(RELATIVES)
    a, d, y = rng.randint(4, 15), rng.randint(1, 9), rng.randint(1, 9)
    older = rng.random() < 0.5 or a - d < 1
    now = a + d if older else a - d
    future = now <= y or rng.random() < 0.5
    then = now + y if future else now - y
    years = _plural("year", y)
    question = (f"{name} is {a} years old. {poss.capitalize()} {relative} is {d} {_plural('year', d)} "
                f"{'older' if older else 'younger'}. How old " +
                (f"will the {relative} be in {y} {years}?" if future else f"was the {relative} {y} {years} ago?"))
    step1 = f"The {relative} is {a} {'+' if older else '-'} {d} = {now} now."
    step2 = f"In {y} {years}: {now} + {y} = {then}." if future else f"{y} {years} ago: {now} - {y} = {then}."
    return {"a": a, "d": d, "y": y, "older": older, "future": future, "question": question,
            "answer": str(then), "rationale": f"{step1} {step2}"}
