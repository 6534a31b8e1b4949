"""Axis-aligned integer boxes in (z, y, x) voxel coordinates."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ilastik_web.errors import InvalidRequestError, OutOfBoundsError


@dataclass(frozen=True, slots=True)
class Box:
    """Half-open box ``[start, stop)`` per axis, axes ordered (z, y, x).

    Parameters
    ----------
    start, stop
        Integer corners; ``stop >= start`` on every axis (an empty box is allowed).
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]

    def __post_init__(self) -> None:
        start = tuple(int(v) for v in self.start)
        stop = tuple(int(v) for v in self.stop)
        if len(start) != len(stop):
            raise InvalidRequestError(f"box corners differ in rank: {start} vs {stop}")
        if any(b < a for a, b in zip(start, stop, strict=True)):
            raise InvalidRequestError(f"box stop {stop} is before its start {start}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)

    @classmethod
    def from_shape(cls, shape: Sequence[int]) -> Box:
        """The box ``[0, shape)``."""
        return cls((0,) * len(shape), tuple(shape))

    @classmethod
    def from_slices(cls, slices: Sequence[slice]) -> Box:
        """A box from non-strided slices with explicit bounds."""
        return cls(tuple(s.start for s in slices), tuple(s.stop for s in slices))

    @classmethod
    def of_mask(cls, mask: np.ndarray) -> Box:
        """The smallest box (in the mask's own coordinates) holding every True element;
        an empty box at the origin when there is none."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return cls((0,) * mask.ndim, (0,) * mask.ndim)
        start, stop = [], []
        for axis in range(mask.ndim):
            hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
            start.append(int(hit[0]))
            stop.append(int(hit[-1]) + 1)
        return cls(tuple(start), tuple(stop))

    @property
    def ndim(self) -> int:
        return len(self.start)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def is_empty(self) -> bool:
        return any(s == 0 for s in self.shape)

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    def contains(self, other: Box) -> bool:
        """True when ``other`` lies entirely inside this box."""
        return all(
            a0 <= b0 and b1 <= a1
            for a0, a1, b0, b1 in zip(self.start, self.stop, other.start, other.stop, strict=True)
        )

    def intersect(self, other: Box) -> Box:
        """The overlap of two boxes (empty, anchored at the larger start, when disjoint)."""
        start = tuple(max(a, b) for a, b in zip(self.start, other.start, strict=True))
        stop = tuple(
            max(lo, min(a, b)) for lo, a, b in zip(start, self.stop, other.stop, strict=True)
        )
        return Box(start, stop)

    def grow(self, margin: int | Sequence[int]) -> Box:
        """This box enlarged by ``margin`` voxels on both sides of each axis."""
        m = (margin,) * self.ndim if isinstance(margin, int) else tuple(margin)
        return Box(
            tuple(a - d for a, d in zip(self.start, m, strict=True)),
            tuple(b + d for b, d in zip(self.stop, m, strict=True)),
        )

    def clip(self, shape: Sequence[int]) -> Box:
        """This box cut to ``[0, shape)``."""
        return self.intersect(Box.from_shape(shape))

    def translate(self, offset: Sequence[int]) -> Box:
        return Box(
            tuple(a + d for a, d in zip(self.start, offset, strict=True)),
            tuple(b + d for b, d in zip(self.stop, offset, strict=True)),
        )

    def relative_to(self, outer: Box) -> tuple[slice, ...]:
        """Slices that pick this box out of an array holding ``outer``."""
        if not outer.contains(self):
            raise OutOfBoundsError(f"{self} is not inside {outer}")
        return tuple(
            slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, outer.start, strict=True)
        )

    def scaled_down(self, factors: Sequence[int]) -> Box:
        """The box covering this one on a grid coarser by integer ``factors``."""
        return Box(
            tuple(a // f for a, f in zip(self.start, factors, strict=True)),
            tuple(-(-b // f) for b, f in zip(self.stop, factors, strict=True)),
        )

    def scaled_up(self, factors: Sequence[int]) -> Box:
        return Box(
            tuple(a * f for a, f in zip(self.start, factors, strict=True)),
            tuple(b * f for b, f in zip(self.stop, factors, strict=True)),
        )

    def chunks(self, chunk_shape: Sequence[int]) -> Iterator[Box]:
        """Grid-aligned chunks (grid anchored at 0) that intersect this box, cut to it."""
        ranges = [
            range(a // c, -(-b // c))
            for a, b, c in zip(self.start, self.stop, chunk_shape, strict=True)
        ]
        for index in itertools.product(*ranges):
            cell = Box(
                tuple(i * c for i, c in zip(index, chunk_shape, strict=True)),
                tuple((i + 1) * c for i, c in zip(index, chunk_shape, strict=True)),
            )
            yield cell.intersect(self)

    def __str__(self) -> str:
        return "[" + ", ".join(f"{a}:{b}" for a, b in zip(self.start, self.stop, strict=True)) + "]"
