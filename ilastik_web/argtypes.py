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


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byte_size(text: str) -> int:
    """A memory size such as ``2G``, ``512M``, ``1.5g`` or ``1073741824`` (bytes), > 0."""
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = cleaned[-1:] if cleaned[-1:] in _SIZE_UNITS else ""
    number = cleaned[: len(cleaned) - len(unit)]
    try:
        value = int(float(number) * _SIZE_UNITS[unit])
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive size like 2G, 512M or a number of bytes, got {text!r}")
    return value
