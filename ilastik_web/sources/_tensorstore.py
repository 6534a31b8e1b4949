"""Opening arrays with tensorstore and wrapping them as lazy volumes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorstore as ts

from ilastik_web.errors import SourceError
from ilastik_web.sources._common import AxisLayout, StoredArrayVolume, short_reason

#: Decoded storage chunks kept by tensorstore, shared by every source of the process.
#: Viewer chunks are flat (256x256x1) while storage chunks are often cubes, so one storage
#: chunk serves many requests: without this cache each request decodes it again.
DECODED_CHUNK_CACHE_BYTES = 256 << 20

#: HTTP sources: a request that fails with a 5xx or a network error is retried this many
#: times, waiting 0.2 s, then twice as long each time, at most 1 s (about 1.5 s in all):
#: a viewer waits on these, and a chunk that still fails is shown empty with a notice.
HTTP_RETRIES = {"max_retries": 3, "initial_delay": "0.2s", "max_delay": "1s"}

#: Seconds one read of an HTTP source may take, retries included, before it counts as
#: failed (a server that accepts the connection and never answers).
HTTP_READ_TIMEOUT_S = 30.0


@functools.cache
def shared_context() -> ts.Context:
    """The tensorstore context (decoded-chunk cache pool) all sources share."""
    return ts.Context({
        "cache_pool": {"total_bytes_limit": DECODED_CHUNK_CACHE_BYTES},
        "http_request_retries": HTTP_RETRIES,
    })


def open_tensorstore(spec: dict[str, Any], location: str) -> ts.TensorStore:
    """Open ``spec`` read-only with its origin moved to 0; SourceError on failure."""
    try:
        store = ts.open({**spec, "open": True}, read=True, context=shared_context()).result()
    except Exception as exc:
        raise SourceError(f"{location}: cannot open: {short_reason(exc)}") from exc
    return store[ts.d[:].translate_to[0]]


def stored_chunks(store: ts.TensorStore) -> tuple[int, ...] | None:
    """The read-chunk shape in the store's axis order, None when unknown."""
    try:
        shape = store.chunk_layout.read_chunk.shape
    except Exception:  # drivers without a chunk layout
        return None
    if shape is None or any(s is None for s in shape):
        return None
    return tuple(int(s) for s in shape)


def _is_http(store: ts.TensorStore) -> bool:
    try:
        return store.kvstore is not None and store.kvstore.url.startswith(("http://", "https://"))
    except (AttributeError, ValueError, NotImplementedError):  # e.g. s3 with an endpoint
        return False


def tensorstore_volume(
    store: ts.TensorStore,
    roles: Sequence[str],
    *,
    voxel_size: Sequence[float],
    key: str,
    location: str,
) -> StoredArrayVolume:
    """A lazy volume reading ``store``; tensorstore fetches only the chunks a box touches."""
    layout = AxisLayout.create(store.shape, roles, location)
    remote = _is_http(store)

    def read_index(index: tuple[slice | int, ...]) -> np.ndarray:
        future = store[index].read()
        if not remote:
            return future.result()
        try:
            return future.result(timeout=HTTP_READ_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(HTTP_READ_TIMEOUT_S) from None

    return StoredArrayVolume(
        read_index,
        layout,
        dtype=np.dtype(store.dtype.numpy_dtype),
        voxel_size=voxel_size,
        chunk_shape=layout.chunk_shape(stored_chunks(store)),
        key=key,
        location=location,
    )
