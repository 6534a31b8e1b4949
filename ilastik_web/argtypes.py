"""argparse value types shared by the command line and the benchmark scripts."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def positive(kind: type[int] | type[float] = int) -> Callable[[str], int | float]:
    """A type accepting numbers of ``kind`` greater than zero."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def non_negative_int(text: str) -> int:
    """An integer >= 0 (e.g. a pyramid level)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value
