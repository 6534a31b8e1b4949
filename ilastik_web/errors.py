"""Exceptions of the Python API.

Each class says what went wrong, not how to answer it; the server maps them to HTTP
status codes in one place (:mod:`ilastik_web.server.errors`).
"""

from collections.abc import Iterable


class IlastikWebError(Exception):
    """Base class of every error the API raises on purpose."""


class InvalidRequestError(IlastikWebError, ValueError):
    """The caller asked for something malformed (maps to 400)."""


class OutOfBoundsError(InvalidRequestError):
    """A region reaches outside the volume it addresses (maps to 400)."""


class NotFoundError(IlastikWebError, KeyError):
    """A named thing (source, layer, scale, project) does not exist (maps to 404)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class ForbiddenError(IlastikWebError, PermissionError):
    """The caller may not do this, e.g. a path outside the allowed roots (maps to 403)."""


class GoneError(IlastikWebError):
    """A versioned resource was superseded (maps to 410)."""


class NotReadyError(IlastikWebError):
    """Not available yet, retry later (maps to 503; Neuroglancer retries those)."""


class SourceError(IlastikWebError):
    """A data source is missing, unsupported or corrupt.

    The message is one line that names the path and the problem.
    """


class UnauthenticatedError(IlastikWebError):
    """The caller has not shown valid credentials (maps to 401)."""


class TooManyRequestsError(IlastikWebError):
    """A bounded queue is full; retry later (maps to 429)."""


class ConflictError(IlastikWebError):
    """The request collides with the current state, e.g. an output another job reserved
    (maps to 409)."""


class StorageError(IlastikWebError):
    """A write to disk failed (full disk, I/O error); nothing was changed (maps to 507)."""
class ChunkReadError(SourceError):
    """Stored data could not be read: a corrupt chunk, a timeout, a server error.

    Metadata was fine, so the rest of the volume is probably readable: callers that can
    (the viewer) fill the region and carry on; others fail with this message.

    Attributes
    ----------
    location
        The source, as the user named it.
    chunks
        The (z, y, x) boxes of the storage chunks that failed, in that source's voxels.
    reason
        One line from the storage layer (``Truncated Zstd-compressed stream``, a timeout).
    """

    def __init__(self, location: str, chunks: Iterable, reason: str):
        self.location = location
        self.chunks = tuple(chunks)
        self.reason = reason
        regions = ", ".join(str(box) for box in self.chunks[:3])
        more = f" and {len(self.chunks) - 3} more" if len(self.chunks) > 3 else ""
        super().__init__(f"{location}: unreadable chunk {regions}{more} (z, y, x): {reason}")

    def __reduce__(self):  # picklable, for errors that travel back from dask workers
        return (type(self), (self.location, self.chunks, self.reason))
