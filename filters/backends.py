"""Array backends: numba on the CPU, torch on CUDA (or on the CPU when asked).

Both offer the same few primitives on 3D float32 (z, y, x) arrays, so the feature pipeline in
:mod:`filters.compute` is one code path for every device. Elementwise arithmetic uses Python
operators, which both numpy arrays and torch tensors implement.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("numba", "torch")


class Backend(Protocol):
    """The primitives the feature pipeline needs."""

    name: str
    parallel_tasks: bool
    """Whether scale groups should run as concurrent tasks (else kernels parallelise)."""

    def empty(self, shape: tuple[int, ...]) -> Any: ...

    def from_numpy(self, array: np.ndarray) -> Any: ...

    def to_numpy(self, array: Any) -> np.ndarray: ...

    def correlate(self, array: Any, kernel: np.ndarray, axis: int) -> Any:
        """Valid correlation along ``axis`` with a symmetric or antisymmetric kernel."""

    def sqrt(self, array: Any) -> Any:
        """In place."""

    def multiply(self, a: Any, b: Any) -> Any: ...

    def add(self, a: Any, b: Any) -> Any: ...

    def subtract(self, a: Any, b: Any) -> Any: ...

    def store(self, target: np.ndarray, values: Any) -> None:
        """Copy values into a (k, z, y, x) numpy view of the output."""

    def copy_rows(self, array: Any, axis: int, start: int, sources: np.ndarray) -> None:
        """In place: ``array[..., start + i, ...] = array[..., sources[i], ...]`` along axis."""

    def eigenvalues(self, components: list[Any], out: np.ndarray | None = None) -> Any:
        """Descending eigenvalues of symmetric matrices given as upper-triangle components
        (a00, a01, a11) or (a00, a01, a02, a11, a12, a22); shape (k, *spatial), written to
        the numpy view ``out`` when given."""


def _kernel_parity(kernel: np.ndarray) -> int:
    if np.array_equal(kernel, kernel[::-1]):
        return 1
    if np.array_equal(kernel, -kernel[::-1]):
        return -1
    raise ValueError("kernel is neither symmetric nor antisymmetric")


def _identity(kernel: np.ndarray) -> bool:
    return len(kernel) == 1 and kernel[0] == 1.0


def _contiguous_base(view: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A C-contiguous 3D array that ``view`` crops, and where the crop starts in it.

    Passing the base and an origin lets numba compile for unit strides; a view that is no
    crop of such an array is copied.
    """
    if view.flags.c_contiguous:
        return view, (0, 0, 0)
    base = view.base
    while isinstance(base, np.ndarray):
        if (
            base.ndim == 3
            and base.flags.c_contiguous
            and base.dtype == view.dtype
            and base.strides == view.strides
        ):
            delta = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
            origin = np.unravel_index(delta // view.itemsize, base.shape)
            if all(o + s <= b for o, s, b in zip(origin, view.shape, base.shape, strict=True)):
                return base, tuple(int(o) for o in origin)  # type: ignore[return-value]
        base = base.base
    return np.ascontiguousarray(view), (0, 0, 0)


class _Arena:
    """Bump allocator over retained float32 chunks.

    Fresh memory costs a page fault per page on first touch, which dominated whole-volume
    runs here; intermediates of a scale group are instead carved out of chunks that are kept
    and reused, and :meth:`reset` frees them all at once.
    """

    CHUNK_VOXELS = 1 << 24  # 64 MiB

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._chunk = 0
        self._used = 0

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        size = int(np.prod(shape))
        size_aligned = -(-size // 16) * 16  # keep rows of later arrays 64-byte aligned
        while self._chunk < len(self._chunks):
            chunk = self._chunks[self._chunk]
            if self._used + size_aligned <= len(chunk):
                view = chunk[self._used : self._used + size]
                self._used += size_aligned
                return view.reshape(shape)
            self._chunk += 1
            self._used = 0
        self._chunks.append(np.empty(max(self.CHUNK_VOXELS, size_aligned), dtype=np.float32))
        self._used = size_aligned
        return self._chunks[-1][:size].reshape(shape)

    def reset(self) -> None:
        self._chunk = 0
        self._used = 0

    @property
    def nbytes(self) -> int:
        return sum(chunk.nbytes for chunk in self._chunks)


_idle_arenas: list[_Arena] = []
_arena_lock = threading.Lock()
_local = threading.local()


@contextlib.contextmanager
def workspace() -> Iterator[None]:
    """Scope in which the numba backend allocates from a reusable arena (one per thread)."""
    if getattr(_local, "arena", None) is not None:
        yield
        return
    with _arena_lock:
        arena = _idle_arenas.pop() if _idle_arenas else _Arena()
    _local.arena = arena
    try:
        yield
    finally:
        _local.arena = None
        arena.reset()
        with _arena_lock:
            _idle_arenas.append(arena)


@contextlib.contextmanager
def scratch() -> Iterator[None]:
    """Within :func:`workspace`: everything allocated inside is released at exit."""
    arena = getattr(_local, "arena", None)
    if arena is None:
        yield
        return
    chunk, used = arena._chunk, arena._used
    try:
        yield
    finally:
        arena._chunk, arena._used = chunk, used


@contextlib.contextmanager
def serial_kernels() -> Iterator[None]:
    """Within: numba kernels of this thread run single-threaded (tasks run side by side)."""
    previous = getattr(_local, "serial", False)
    _local.serial = True
    try:
        yield
    finally:
        _local.serial = previous


def release_memory() -> int:
    """Drop the retained scratch memory of idle workspaces; returns the bytes released."""
    with _arena_lock:
        released = sum(arena.nbytes for arena in _idle_arenas)
        _idle_arenas.clear()
    return released


SERIAL_BELOW_VOXELS = 1 << 16
"""Smaller kernel calls run on the calling thread: waking numba's workers costs more there."""


class NumbaBackend:
    """CPU backend: numpy arrays, numba kernels parallel over ``numba.get_num_threads()``."""

    name = "numba"
    device = "cpu"
    parallel_tasks = True

    def __init__(self) -> None:
        import numba

        from filters import _numba_kernels

        self._numba = numba
        self._kernels = _numba_kernels

    def _call(self, kernel: Any, voxels: int, *args: Any) -> None:
        if voxels >= SERIAL_BELOW_VOXELS and not getattr(_local, "serial", False):
            kernel(*args)
            return
        threads = self._numba.get_num_threads()  # per calling thread in numba
        self._numba.set_num_threads(1)
        try:
            kernel(*args)
        finally:
            self._numba.set_num_threads(threads)

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        arena = getattr(_local, "arena", None)
        if arena is None:
            return np.empty(shape, dtype=np.float32)
        return arena.empty(tuple(shape))

    def from_numpy(self, array: np.ndarray) -> np.ndarray:
        if array.dtype == np.float32 and array.flags.c_contiguous:
            return array
        out = self.empty(array.shape)
        out[...] = array
        return out

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.multiply(a, b, out=self.empty(a.shape))

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.add(a, b, out=self.empty(a.shape))

    def subtract(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.subtract(a, b, out=self.empty(a.shape))

    def store(self, target: np.ndarray, values: np.ndarray) -> None:
        """``target[...] = values`` for a (k, z, y, x) view of the output, in parallel."""
        values = values.reshape(target.shape)
        self._call(self._kernels.copy_4d, values.size, values, target)

    def to_numpy(self, array: np.ndarray) -> np.ndarray:
        return array

    def correlate(self, array: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
        if _identity(kernel):
            return array
        radius = len(kernel) // 2
        shape = list(array.shape)
        shape[axis] -= 2 * radius
        out = self.empty(tuple(shape))
        half = np.ascontiguousarray(kernel[radius:], dtype=np.float64)
        parity = np.float64(_kernel_parity(kernel))
        base, origin = _contiguous_base(array)
        self._call(self._kernels.correlate_valid, out.size, base, origin, half, parity, axis, out)
        return out

    def sqrt(self, array: np.ndarray) -> np.ndarray:
        return np.sqrt(array, out=array)

    def copy_rows(self, array: np.ndarray, axis: int, start: int, sources: np.ndarray) -> None:
        moved = np.moveaxis(array, axis, 0)
        moved[start : start + len(sources)] = moved[sources]

    def eigenvalues(self, components: list[np.ndarray], out: np.ndarray | None = None) -> Any:
        shape = components[0].shape
        located = [_contiguous_base(c) for c in components]
        if len({(base.shape, origin) for base, origin in located}) == 1:
            bases, origin = [base for base, _ in located], located[0][1]
        else:
            bases, origin = [np.ascontiguousarray(c) for c in components], (0, 0, 0)
        if out is None:
            out = self.empty((2 if len(components) == 3 else 3, *shape))
        kernel = (
            self._kernels.eigenvalues_2x2 if len(components) == 3 else self._kernels.eigenvalues_3x3
        )
        self._call(kernel, out.size, *bases, origin, out)
        return out


class TorchBackend:
    """torch backend on any device; each correlation is a sum of shifted views."""

    name = "torch"
    parallel_tasks = False

    def __init__(self, device: Any = None) -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device if device is not None else "cpu")

    def empty(self, shape: tuple[int, ...]) -> Any:
        return self._torch.empty(shape, dtype=self._torch.float32, device=self.device)

    def from_numpy(self, array: np.ndarray) -> Any:
        array = np.ascontiguousarray(array, dtype=np.float32)
        return self._torch.from_numpy(array).to(self.device)

    def to_numpy(self, array: Any) -> np.ndarray:
        return array.detach().cpu().numpy()

    def correlate(self, array: Any, kernel: np.ndarray, axis: int) -> Any:
        if _identity(kernel):
            return array
        radius = len(kernel) // 2
        length = array.shape[axis] - 2 * radius
        parity = _kernel_parity(kernel)
        out = array.narrow(axis, radius, length) * float(kernel[radius])
        for j in range(1, radius + 1):
            tap = float(kernel[radius + j])
            after = array.narrow(axis, radius + j, length)
            before = array.narrow(axis, radius - j, length)
            out.add_(after + before if parity > 0 else after - before, alpha=tap)
        return out

    def multiply(self, a: Any, b: Any) -> Any:
        return a * b

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def subtract(self, a: Any, b: Any) -> Any:
        return a - b

    def store(self, target: np.ndarray, values: Any) -> None:
        target[...] = self.to_numpy(values).reshape(target.shape)

    def sqrt(self, array: Any) -> Any:
        return array.sqrt_()

    def copy_rows(self, array: Any, axis: int, start: int, sources: np.ndarray) -> None:
        index = self._torch.as_tensor(sources, dtype=self._torch.long, device=self.device)
        array.narrow(axis, start, len(sources)).copy_(array.index_select(axis, index))

    def eigenvalues(self, components: list[Any], out: np.ndarray | None = None) -> Any:
        values = self._eigenvalues(components)
        if out is None:
            return values
        self.store(out, values)
        return out

    def _eigenvalues(self, components: list[Any]) -> Any:
        torch = self._torch
        parts = [c.to(torch.float64) for c in components]
        if len(parts) == 3:
            a00, a01, a11 = parts
            mean = 0.5 * (a00 + a11)
            radius = torch.sqrt((0.5 * (a00 - a11)) ** 2 + a01 * a01)
            return torch.stack([mean + radius, mean - radius]).to(torch.float32)
        a00, a01, a02, a11, a12, a22 = parts
        mean = (a00 + a11 + a22) / 3.0
        b0, b1, b2 = a00 - mean, a11 - mean, a22 - mean
        spread = (b0 * b0 + b1 * b1 + b2 * b2 + 2.0 * (a01 * a01 + a02 * a02 + a12 * a12)) / 6.0
        scale = torch.sqrt(spread)
        det = (
            b0 * (b1 * b2 - a12 * a12) - a01 * (a01 * b2 - a12 * a02) + a02 * (a01 * a12 - b1 * a02)
        )
        degenerate = spread <= 0
        half_det = det / torch.where(degenerate, 1.0, 2.0 * spread * scale)
        angle = torch.acos(half_det.clamp(-1.0, 1.0)) / 3.0
        largest = mean + 2.0 * scale * torch.cos(angle)
        smallest = mean + 2.0 * scale * torch.cos(angle + 2.0 * np.pi / 3.0)
        middle = 3.0 * mean - largest - smallest
        return torch.stack([largest, middle, smallest]).to(torch.float32)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


@functools.lru_cache(maxsize=8)
def _make_backend(name: str, device: str) -> Backend:
    if name == "numba":
        return NumbaBackend()
    return TorchBackend(device)


def get_backend(device: Any = None, backend: str | None = None) -> Backend:
    """Pick the backend for a device.

    Parameters
    ----------
    device : None, str or torch.device
        None: CUDA when available, else the CPU. "cpu", "cuda", "cuda:1", ...
    backend : {"numba", "torch"}, optional
        Force an implementation; default numba on the CPU (measured faster), torch elsewhere.
    """
    if backend is not None and backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
    if device is None:
        device = "cuda" if backend != "numba" and _cuda_available() else "cpu"
    device = str(device)
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu' or 'cuda[:n]', got {device!r}")
    if device.startswith("cuda") and not _cuda_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if backend is None:
        backend = "numba" if device == "cpu" else "torch"
    if backend == "numba" and device != "cpu":
        raise ValueError("the numba backend runs on the CPU only")
    logger.debug("filters backend %s on %s", backend, device)
    return _make_backend(backend, device)
