"""Controlled generation with a known reward: continue a short review; the reward is the share of positive words.

A row is the opening clause of a review ("The room was awful") and its continuation ("and the staff was nice,
but the bed was dull."). Each review has a hidden mood p: every adjective is positive with probability 0.8 p,
negative with 0.8 (1 - p) and neutral otherwise, and the opening follows the same mood — so, as with IMDb
prefixes in the DPO paper's controlled experiment, the prompt tilts the sentiment a model trained on these rows
continues with. `reward` scores any continuation exactly and cheaply: the share of its sentiment words (positive,
negative or neutral adjectives of the lexicon below) that are positive, 0 for a continuation without any.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from flanmix.builtin.classification import NEGATIVE, POSITIVE

NEUTRAL = ("okay", "fine", "average", "plain", "normal", "simple", "small", "quiet")
LEXICON = {**dict.fromkeys(POSITIVE, 1), **dict.fromkeys(NEGATIVE, -1), **dict.fromkeys(NEUTRAL, 0)}
ASPECTS = {
    "hotel": ("room", "staff", "bed", "view", "breakfast", "pool", "lobby"),
    "movie": ("plot", "acting", "music", "ending", "cast", "script", "camera work"),
    "restaurant": ("food", "service", "soup", "dessert", "menu", "waiter", "coffee"),
    "game": ("story", "controls", "graphics", "music", "levels", "map", "boss fight"),
    "trip": ("weather", "guide", "bus", "beach", "hike", "museum", "market"),
    "concert": ("band", "sound", "crowd", "singer", "lights", "venue", "encore"),
}
PLURAL = ("controls", "graphics", "levels", "lights")
INTENSIFIERS = ("very", "really", "quite")
_WORD = re.compile(r"[a-z]+")


def _adjective(rng: random.Random, mood: float) -> tuple[str, int]:
    u = rng.random()
    if u < 0.8 * mood:
        return rng.choice(POSITIVE), 1
    if u < 0.8:
        return rng.choice(NEGATIVE), -1
    return rng.choice(NEUTRAL), 0


def _clause(rng: random.Random, aspect: str, adjective: str) -> str:
    verb = "were" if aspect in PLURAL else "was"
    prefix = rng.choice(INTENSIFIERS) + " " if rng.random() < 0.2 else ""
    return f"the {aspect} {verb} {prefix}{adjective}"


def review(rng: random.Random) -> dict:
    """One review: subject, opening clause (the prompt's end) and a continuation of 2-3 clauses."""
    subject = rng.choice(sorted(ASPECTS))
    mood = rng.randint(1, 9) / 10
    aspects = rng.sample(ASPECTS[subject], rng.randint(3, 4))
    adjective, polarity = _adjective(rng, mood)
    opening = _clause(rng, aspects[0], adjective)
    opening = opening[0].upper() + opening[1:]
    parts: list[str] = []
    for aspect in aspects[1:]:
        adjective, new = _adjective(rng, mood)
        joiner = "but" if new * polarity < 0 else "and"
        parts.append(f"{joiner} {_clause(rng, aspect, adjective)}")
        polarity = new or polarity
    continuation = ", ".join(parts) + "."
    return {"subject": subject, "opening": opening, "continuation": continuation, "mood": mood,
            "answer": continuation, "reward": score(continuation)}


def sentiment_words(text: str) -> list[int]:
    """The polarity (+1, -1, 0) of each lexicon word of `text`, in order."""
    return [LEXICON[w] for w in _WORD.findall(text.lower()) if w in LEXICON]


def score(text: str) -> float:
    """The true reward of one continuation: positive lexicon words / all lexicon words (0 when there are none)."""
    words = sentiment_words(text)
    return sum(1 for w in words if w > 0) / len(words) if words else 0.0


def reward(prompts: Sequence, completions: Sequence[str], rows: Sequence[dict] | None = None) -> list[float]:
    """The reward function for PPO / RRHF candidates (`flanmix.builtin.steering:reward`): `score` of each
    completion; the prompt is not scored."""
    return [score(c) for c in completions]
