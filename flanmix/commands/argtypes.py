"""Argument types for the command line: a nonsense number is refused by argparse (one line, exit 2) before any
work starts."""

from __future__ import annotations

import argparse


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


positive_int = _int_at_least(1)
positive_int.__doc__ = "argparse type: a whole number >= 1."
non_negative_int = _int_at_least(0)
non_negative_int.__doc__ = "argparse type: a whole number >= 0."
