"""Arithmetic generators: small integers so a tiny model can learn them on a CPU."""

from __future__ import annotations

import random


def add(rng: random.Random) -> dict:
    """Two integers to add."""
    return {"a": rng.randint(0, 99), "b": rng.randint(0, 99)}
