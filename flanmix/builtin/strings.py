"""String manipulation generators: short lowercase words, half from a small vocabulary and half random letters.

Random letter strings keep the space of distinct rows large (so the content-based validation split is not tiny)
while the vocabulary words keep the text natural.
"""

from __future__ import annotations

import random
import string

WORDS = (
    "apple", "river", "house", "green", "table", "music", "bread", "stone", "cloud", "tiger", "paper", "chair",
    "light", "plant", "smile", "train", "water", "horse", "candle", "garden", "window", "pencil", "rabbit",
    "banana", "orange", "yellow", "purple", "silver", "winter", "summer", "forest", "island", "planet", "rocket",
    "cat", "dog", "sun", "map", "cup", "hat", "pen", "box", "car", "bus", "fish", "bird", "tree", "moon", "star",
    "book", "door", "lamp", "milk", "rain", "snow", "wind", "king", "ship", "frog", "duck", "cake", "kite",
    "letter", "bottle", "mirror", "pepper", "coffee", "ladder", "butter", "balloon", "morning", "kitchen",
)
PALINDROMES = (
    "level", "radar", "noon", "civic", "kayak", "refer", "madam", "racecar", "stats", "wow", "deed", "peep",
    "pop", "dad", "mom", "eye", "nun", "tenet", "solos", "rotor", "sagas", "gig", "pup", "bob", "anna",
)
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def random_letters(rng: random.Random, low: int, high: int, alphabet: str = string.ascii_lowercase) -> str:
    """A random string of `low`..`high` letters."""
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def word(rng: random.Random, low: int = 3, high: int = 7) -> str:
    """A vocabulary word of `low`..`high` letters, or (half the time) random letters of that length."""
    if rng.random() < 0.5:
        choices = [w for w in WORDS if low <= len(w) <= high]
        return rng.choice(choices)
    return random_letters(rng, low, high)


def reverse(rng: random.Random) -> dict:
    """Reverse a word letter by letter."""
    w = word(rng, 3, 7)
    rationale = f"The letters are {' '.join(w)}. Backwards they are {' '.join(reversed(w))}."
    return {"word": w, "answer": w[::-1], "rationale": rationale}


def upper(rng: random.Random) -> dict:
    """Write one to three words in capital letters."""
    text = " ".join(word(rng, 3, 6) for _ in range(rng.randint(1, 3)))
    return {"text": text, "answer": text.upper()}


def length(rng: random.Random) -> dict:
    """Count the letters of a word."""
    w = word(rng, 2, 9)
    counted = ", ".join(f"{c} {i}" for i, c in enumerate(w, 1))
    return {"word": w, "answer": str(len(w)), "rationale": f"Counting the letters: {counted}."}


def count_char(rng: random.Random) -> dict:
    """How often one letter occurs in a word (random words use a small alphabet so repeats are common)."""
    w = word(rng, 4, 8) if rng.random() < 0.5 else random_letters(rng, 4, 9, "abcdeilmnorst")
    letter = rng.choice(w) if rng.random() < 0.8 else rng.choice(string.ascii_lowercase)
    positions = [i for i, c in enumerate(w, 1) if c == letter]
    spelled = f"Spelled out: {' '.join(w)}."
    if positions:
        where = ", ".join(map(str, positions))
        rationale = f"{spelled} The letter {letter} is at position{'s' if len(positions) > 1 else ''} {where}."
    else:
        rationale = f"{spelled} The letter {letter} does not occur."
    return {"word": w, "letter": letter, "answer": str(len(positions)), "rationale": rationale}


def char_at(rng: random.Random) -> dict:
    """The letter at a given (ordinal) position of a word."""
    w = word(rng, 3, 8)
    index = rng.randrange(len(w))
    return {"word": w, "position": index + 1, "ordinal": ORDINALS[index], "answer": w[index]}


def palindrome(rng: random.Random) -> dict:
    """Is a word the same read backwards? Half the rows are palindromes."""
    if rng.random() < 0.5:
        if rng.random() < 0.5:
            w = rng.choice(PALINDROMES)
        else:
            half = random_letters(rng, 1, 3)
            w = half + (rng.choice(string.ascii_lowercase) if rng.random() < 0.5 else "") + half[::-1]
            if len(w) < 3:
                w = half + rng.choice(string.ascii_lowercase) + half[::-1]
    else:
        w = word(rng, 3, 7)
        while w == w[::-1]:
            w = word(rng, 3, 7)
    same = w == w[::-1]
    rationale = f"Backwards, {w} is {w[::-1]}, which is {'the same word' if same else 'a different word'}."
    return {"word": w, "answer": "yes" if same else "no", "options": ["yes", "no"], "rationale": rationale}
