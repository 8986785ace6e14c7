"""Argument types shared by the benchmark scripts: a careless value ("0", "-1", "abc",
"1,,2") is refused by argparse with a one-line error and exit status 2, before any
measurement starts, instead of failing minutes later with a traceback."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _number(text: str) -> int:
    try:
        return int(text.strip().replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def at_least(minimum: int) -> Callable[[str], int]:
    """A whole number of at least `minimum` (underscores allowed: 10_000)."""

    def parse(text: str) -> int:
        value = _number(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    parse.__name__ = f"number >= {minimum}"
    return parse


def numbers(minimum: int) -> Callable[[str], list[int]]:
    """A comma-separated list of whole numbers of at least `minimum` ("100,1000")."""
    one = at_least(minimum)

    def parse(text: str) -> list[int]:
        parts = text.split(",")
        if not text.strip() or any(not part.strip() for part in parts):
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers")
        return [one(part) for part in parts]

    parse.__name__ = f"list of numbers >= {minimum}"
    return parse


def seconds(text: str) -> float:
    """A finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of seconds >= 0")
    return value
