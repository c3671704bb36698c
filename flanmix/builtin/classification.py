"""Classification and comparison generators. Every row carries its answer `options`, and the answer is one of them
exactly, so rank classification can score these tasks.
"""

from __future__ import annotations

import random

from flanmix.builtin.strings import WORDS

SUBJECTS = ("movie", "food", "hotel", "book", "game", "song", "class", "trip", "show", "meal", "party", "room")
POSITIVE = ("good", "great", "fun", "nice", "lovely", "amazing", "wonderful", "excellent")
NEGATIVE = ("bad", "awful", "boring", "dull", "poor", "terrible", "horrible", "weak")
OPENERS = ("The {s} was {a}.", "I thought the {s} was {a}.", "Honestly, the {s} was {a}.", "This {s} is {a}.",
           "Our {s} was {a}.")

CATEGORIES = {
    "animal": ("cat", "dog", "cow", "horse", "lion", "tiger", "sheep", "goat", "mouse", "bear", "fox", "wolf",
               "duck", "frog", "pig"),
    "fruit": ("apple", "pear", "plum", "grape", "lemon", "mango", "peach", "banana", "cherry", "kiwi", "melon"),
    "color": ("red", "blue", "green", "yellow", "pink", "purple", "brown", "black", "white", "gray"),
    "vehicle": ("car", "bus", "train", "bike", "truck", "boat", "plane", "van", "ship", "taxi"),
    "tool": ("hammer", "saw", "drill", "wrench", "shovel", "rake", "axe", "chisel", "pliers", "ladder"),
}


def sentiment(rng: random.Random) -> dict:
    """A one-sentence review; 'not' flips the polarity of the adjective."""
    positive = rng.random() < 0.5
    adjective = rng.choice(POSITIVE if positive else NEGATIVE)
    negated = rng.random() < 0.3
    if rng.random() < 0.3 and not negated:
        adjective = "very " + adjective
    phrase = ("not " if negated else "") + adjective
    sentence = rng.choice(OPENERS).format(s=rng.choice(SUBJECTS), a=phrase)
    label = "positive" if positive != negated else "negative"
    return {"sentence": sentence, "adjective": adjective, "negated": negated, "answer": label,
            "options": ["positive", "negative"]}


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def odd_one_out(rng: random.Random) -> dict:
    """Three words of one category and one of another; which one does not belong (the words are the options)."""
    common, odd_category = rng.sample(sorted(CATEGORIES), 2)
    words = rng.sample(CATEGORIES[common], 3)
    odd = rng.choice(CATEGORIES[odd_category])
    shown = words + [odd]
    rng.shuffle(shown)
    group = [w for w in shown if w != odd]
    rationale = (f"{group[0]}, {group[1]} and {group[2]} are each {_article(common)}, "
                 f"but {odd} is {_article(odd_category)}.")
    return {"words": shown, "items": ", ".join(shown), "category": common, "odd_category": odd_category,
            "answer": odd, "options": shown, "rationale": rationale}


def parity(rng: random.Random) -> dict:
    """Is a number below 1000 even or odd?"""
    n = rng.randint(0, 999)
    digit = n % 10
    label = "even" if n % 2 == 0 else "odd"
    return {"n": n, "answer": label, "options": ["even", "odd"],
            "rationale": f"The last digit of {n} is {digit}, and {digit} is {label}."}


def larger(rng: random.Random) -> dict:
    """Which of two different numbers below 1000 is larger (the two numbers are the options)."""
    a, b = rng.sample(range(0, 1000), 2)
    return {"a": a, "b": b, "answer": str(max(a, b)), "options": [str(a), str(b)]}


def longer_word(rng: random.Random) -> dict:
    """Which of two words of different lengths is longer (the two words are the options)."""
    first = rng.choice(WORDS)
    second = rng.choice([w for w in WORDS if len(w) != len(first)])
    longer = first if len(first) > len(second) else second
    return {"first": first, "second": second, "answer": longer, "options": [first, second],
            "rationale": f"{first} has {len(first)} letters and {second} has {len(second)} letters."}
