"""List operation generators: a handful of small integers, written comma-separated ("3, 8, 1").

Rationales walk the list left to right (running sums, running maxima, repeated selection of the smallest),
so each step is checkable.
"""

from __future__ import annotations

import random


def show(values: list[int]) -> str:
    """The way lists are written in prompts and targets."""
    return ", ".join(map(str, values))


def sort(rng: random.Random) -> dict:
    """Sort 3-5 numbers ascending; the rationale picks the smallest remaining number at each step."""
    values = [rng.randint(0, 20) for _ in range(rng.randint(3, 5))]
    rest, steps = list(values), []
    while len(rest) > 1:
        smallest = min(rest)
        steps.append(f"Smallest of {show(rest)} is {smallest}.")
        rest.remove(smallest)
    steps.append(f"Last is {rest[0]}.")
    return {"numbers": values, "items": show(values), "answer": show(sorted(values)), "rationale": " ".join(steps)}


def _extreme(rng: random.Random, pick) -> dict:
    values = rng.sample(range(0, 51), rng.randint(3, 6))
    running, best = [], values[0]
    for v in values:
        best = pick(best, v)
        running.append(best)
    word = "largest" if pick is max else "smallest"
    return {"numbers": values, "items": show(values), "answer": str(pick(values)), "options": list(map(str, values)),
            "rationale": f"Going left to right, the {word} so far is {show(running)}."}


def maximum(rng: random.Random) -> dict:
    """The largest of 3-6 distinct numbers (the numbers are the answer options)."""
    return _extreme(rng, max)


def minimum(rng: random.Random) -> dict:
    """The smallest of 3-6 distinct numbers (the numbers are the answer options)."""
    return _extreme(rng, min)


def total(rng: random.Random) -> dict:
    """The sum of 2-5 numbers, added up one at a time."""
    values = [rng.randint(0, 20) for _ in range(rng.randint(2, 5))]
    acc, steps = values[0], []
    for v in values[1:]:
        steps.append(f"{acc} + {v} = {acc + v}.")
        acc += v
    return {"numbers": values, "items": show(values), "answer": str(acc), "rationale": " ".join(steps)}


def reverse(rng: random.Random) -> dict:
    """Reverse a list of 2-6 numbers."""
    values = [rng.randint(0, 99) for _ in range(rng.randint(2, 6))]
    return {"numbers": values, "items": show(values), "answer": show(values[::-1])}


def count(rng: random.Random) -> dict:
    """How many times a number occurs in a list of 4-8 numbers drawn from 0-5."""
    values = [rng.randint(0, 5) for _ in range(rng.randint(4, 8))]
    target = rng.choice(values) if rng.random() < 0.85 else rng.randint(0, 5)
    positions = [i for i, v in enumerate(values, 1) if v == target]
    if positions:
        where = ", ".join(map(str, positions))
        rationale = f"{target} is at position{'s' if len(positions) > 1 else ''} {where}."
    else:
        rationale = f"No item is {target}."
    return {"numbers": values, "items": show(values), "value": target, "answer": str(len(positions)),
            "rationale": rationale}


def filter_even(rng: random.Random) -> dict:
    """Keep the even numbers of a list, in order ("none" when there are none)."""
    values = [rng.randint(0, 30) for _ in range(rng.randint(3, 7))]
    evens = [v for v in values if v % 2 == 0]
    return {"numbers": values, "items": show(values), "answer": show(evens) if evens else "none"}
