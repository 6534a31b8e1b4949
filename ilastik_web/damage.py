"""Reading around unreadable chunks, and the record of what could not be read.

A corrupt storage chunk, a timeout or a 5xx from an HTTP source spoils the chunks it
touches and nothing else: :func:`read_tolerant` reads a box chunk by chunk once a read
fails, fills what fails, and says which regions of which source were filled. A
:class:`DamageLog` keeps those reports, logs each bad chunk once, and lists them for the
viewer's notice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ilastik_web.abc import Box, LazyVolume
from ilastik_web.errors import ChunkReadError

log = logging.getLogger(__name__)

#: Largest number of distinct bad chunks a log keeps (and logs); later ones are counted.
MAX_RECORDED = 1000


@dataclass(frozen=True)
class TolerantRead:
    """What :func:`read_tolerant` got.

    Attributes
    ----------
    data
        The (c, z, y, x) voxels; filled with zeros where reading failed.
    filled
        Boxes of the read (absolute, in the volume's voxels) that were filled.
    errors
        The failures, each naming its source, its storage chunks and the reason.
    """

    data: np.ndarray
    filled: tuple[Box, ...] = ()
    errors: tuple[ChunkReadError, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.errors

    def valid_mask(self, box: Box) -> np.ndarray:
        """Boolean (z, y, x) mask over ``box`` (the box read) of the voxels really read."""
        mask = np.ones(box.shape, bool)
        for part in self.filled:
            mask[part.relative_to(box)] = False
        return mask


def read_tolerant(volume: LazyVolume, box: Box) -> TolerantRead:
    """Read ``box``; if that fails on stored data, read it by ``volume.chunk_shape``
    pieces and fill the pieces that fail with zeros.

    Only :class:`~ilastik_web.errors.ChunkReadError` is tolerated; any other error
    (a bad request, a cancellation) propagates.
    """
    try:
        return TolerantRead(volume.read(box))
    except ChunkReadError as first:
        pieces = list(box.chunks(volume.chunk_shape))
        if len(pieces) == 1:
            return TolerantRead(np.zeros((volume.num_channels, *box.shape), volume.dtype),
                                (box,), (first,))
    out = np.zeros((volume.num_channels, *box.shape), volume.dtype)
    filled: list[Box] = []
    errors: list[ChunkReadError] = []
    for piece in pieces:
        try:
            out[(slice(None), *piece.relative_to(box))] = volume.read(piece)
        except ChunkReadError as exc:
            filled.append(piece)
            errors.append(exc)
    return TolerantRead(out, tuple(filled), tuple(errors))


@dataclass(frozen=True)
class BadChunk:
    """One storage chunk of one source that could not be read."""

    location: str
    box: Box
    reason: str

    def to_json(self) -> dict:
        return {
            "source": self.location,
            "start": list(self.box.start),
            "stop": list(self.box.stop),
            "region": f"z {self.box.start[0]}-{self.box.stop[0]}, "
                      f"y {self.box.start[1]}-{self.box.stop[1]}, "
                      f"x {self.box.start[2]}-{self.box.stop[2]}",
            "reason": self.reason,
        }


class DamageLog:
    """The bad chunks met so far, each logged once (thread-safe; owned by the app)."""

    def __init__(self, max_recorded: int = MAX_RECORDED):
        self._lock = threading.Lock()
        self._chunks: dict[tuple[str, Box], BadChunk] = {}
        self._max = max_recorded
        self.dropped = 0

    def record(self, errors: Iterable[ChunkReadError]) -> list[BadChunk]:
        """Remember the chunks of ``errors``; return (and log) the ones not seen before."""
        new: list[BadChunk] = []
        with self._lock:
            for error in errors:
                for box in error.chunks:
                    key = (error.location, box)
                    if key in self._chunks:
                        continue
                    if len(self._chunks) >= self._max:
                        self.dropped += 1
                        continue
                    chunk = BadChunk(error.location, box, error.reason)
                    self._chunks[key] = chunk
                    new.append(chunk)
        for chunk in new:
            log.warning("%s: unreadable chunk z, y, x %s, shown empty: %s",
                        chunk.location, chunk.box, chunk.reason)
        return new

    def list(self) -> list[BadChunk]:
        with self._lock:
            return list(self._chunks.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._chunks)
