"""Block planning: chunk-aligned blocks sized from a memory budget.

Blocks tile the region of interest in *output* coordinates, starting at 0, and are whole
multiples of the output chunk shape, so parallel writers never share a chunk and
rewriting a block is idempotent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError

#: Output chunk shapes: cubes for volumes, tiles for 2D images.
CHUNK_3D = (64, 64, 64)
CHUNK_2D = (1, 256, 256)
#: Working copies per voxel and feature channel (filter temporaries, the forest's
#: transposed float32 copy) on top of the feature stack itself.
FEATURE_COPIES = 3


def default_chunk_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """Output chunk shape (z, y, x) for a region of ``shape``."""
    chunk = CHUNK_2D if shape[0] == 1 else CHUNK_3D
    return tuple(max(1, min(c, s)) for c, s in zip(chunk, shape, strict=True))  # type: ignore[return-value]


def block_bytes(block_shape: Sequence[int], halo: Sequence[int], *, feature_channels: int,
                input_channels: int = 1, output_channels: int = 1) -> int:
    """Estimated peak bytes to compute one block of ``block_shape`` with ``halo``."""
    grown = math.prod(b + 2 * h for b, h in zip(block_shape, halo, strict=True))
    inner = math.prod(block_shape)
    per_grown_voxel = 4 * (input_channels + feature_channels * FEATURE_COPIES)
    per_inner_voxel = 8 * (feature_channels + 2 * output_channels)
    return grown * per_grown_voxel + inner * per_inner_voxel


def block_shape_for_budget(
    shape: Sequence[int],
    chunk_shape: Sequence[int],
    halo: Sequence[int],
    *,
    memory_bytes: int,
    feature_channels: int,
    input_channels: int = 1,
    output_channels: int = 1,
) -> tuple[int, int, int]:
    """The largest chunk-multiple block whose estimated footprint fits ``memory_bytes``.

    Grows the block one chunk at a time along the axis where it is smallest relative to
    the region (x, then y, then z on ties), so blocks stay near-cubic and the halo costs
    little.

    Raises
    ------
    InvalidRequestError
        Not even one chunk fits the budget.
    """
    def cost(block: Sequence[int]) -> int:
        return block_bytes(block, halo, feature_channels=feature_channels,
                           input_channels=input_channels, output_channels=output_channels)

    block = list(chunk_shape)
    if cost(block) > memory_bytes:
        raise InvalidRequestError(
            f"memory budget {memory_bytes / 2**20:.0f} MiB is too small for one "
            f"{'x'.join(map(str, chunk_shape))} block (needs {cost(block) / 2**20:.0f} MiB)"
        )
    while True:
        candidates = [a for a in (2, 1, 0) if block[a] < shape[a]]
        candidates.sort(key=lambda a: block[a] / max(chunk_shape[a], 1))
        grown = False
        for axis in candidates:
            trial = list(block)
            trial[axis] = min(block[axis] + chunk_shape[axis], shape[axis])
            if cost(trial) <= memory_bytes:
                block = trial
                grown = True
                break
        if not grown:
            return (block[0], block[1], block[2])


@dataclass(frozen=True)
class BlockPlan:
    """Blocks of a region of interest.

    Attributes
    ----------
    roi
        Region of the source level (voxels of that level) the output covers.
    block_shape
        Block shape (z, y, x), a multiple of ``chunk_shape`` (clipped at the edge).
    chunk_shape
        Output chunk shape (z, y, x).
    """

    roi: Box
    block_shape: tuple[int, int, int]
    chunk_shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        if self.roi.is_empty:
            raise InvalidRequestError("the region of interest is empty")
        for b, c, n in zip(self.block_shape, self.chunk_shape, self.roi.shape, strict=True):
            if c < 1 or b < 1 or (b % c and b < n):
                raise InvalidRequestError(
                    f"block shape {self.block_shape} is not a multiple of chunk shape "
                    f"{self.chunk_shape}"
                )

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return self.roi.shape  # type: ignore[return-value]

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(  # type: ignore[return-value]
            -(-s // b) for s, b in zip(self.output_shape, self.block_shape, strict=True)
        )

    def __len__(self) -> int:
        return math.prod(self.grid)

    def output_box(self, index: int) -> Box:
        """Block ``index`` in output coordinates."""
        if not 0 <= index < len(self):
            raise InvalidRequestError(f"block {index} out of range 0..{len(self) - 1}")
        gz, gy, gx = self.grid
        position = (index // (gy * gx), (index // gx) % gy, index % gx)
        start = [p * b for p, b in zip(position, self.block_shape, strict=True)]
        stop = [min(s + b, n) for s, b, n in zip(start, self.block_shape, self.output_shape,
                                                   strict=True)]
        return Box(start, stop)

    def source_box(self, index: int) -> Box:
        """Block ``index`` in source-level coordinates."""
        return self.output_box(index).translate(self.roi.start)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))

    def to_json(self) -> dict:
        return {
            "roi": [list(self.roi.start), list(self.roi.stop)],
            "block_shape": list(self.block_shape),
            "chunk_shape": list(self.chunk_shape),
        }

    @classmethod
    def from_json(cls, data: dict) -> BlockPlan:
        return cls(Box(*data["roi"]), tuple(data["block_shape"]), tuple(data["chunk_shape"]))


def parse_roi(text: str, shape: Sequence[int]) -> Box:
    """A region from ``"z0:z1,y0:y1,x0:x1"`` (empty bounds mean the edge), checked.

    Raises
    ------
    InvalidRequestError
        Malformed text, or a region empty or outside ``shape``.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != len(shape):
        raise InvalidRequestError(
            f"--roi needs {len(shape)} ranges z0:z1,y0:y1,x0:x1, got {text!r}"
        )
    start, stop = [], []
    for part, n in zip(parts, shape, strict=True):
        bounds = part.split(":")
        if len(bounds) != 2:
            raise InvalidRequestError(f"--roi range {part!r} is not lo:hi")
        try:
            lo = int(bounds[0]) if bounds[0].strip() else 0
            hi = int(bounds[1]) if bounds[1].strip() else int(n)
        except ValueError:
            raise InvalidRequestError(f"--roi range {part!r} is not integer lo:hi") from None
        if not 0 <= lo < hi <= n:
            raise InvalidRequestError(f"--roi range {part!r} is empty or outside 0:{n}")
        start.append(lo)
        stop.append(hi)
    return Box(start, stop)
