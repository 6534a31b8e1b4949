"""Array backends: numba on the CPU, torch on CUDA (or on the CPU when asked).

Both offer the same few primitives on 3D float32 (z, y, x) arrays, so the feature pipeline in
:mod:`filters.compute` is one code path for every device. Elementwise arithmetic uses Python
operators, which both numpy arrays and torch tensors implement.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("numba", "torch")


class Backend(Protocol):
    """The primitives the feature pipeline needs."""

    name: str

    def empty(self, shape: tuple[int, ...]) -> Any: ...

    def from_numpy(self, array: np.ndarray) -> Any: ...

    def to_numpy(self, array: Any) -> np.ndarray: ...

    def correlate(self, array: Any, kernel: np.ndarray, axis: int) -> Any:
        """Valid correlation along ``axis`` with a symmetric or antisymmetric kernel."""

    def sqrt(self, array: Any) -> Any: ...

    def copy_rows(self, array: Any, axis: int, start: int, sources: np.ndarray) -> None:
        """In place: ``array[..., start + i, ...] = array[..., sources[i], ...]`` along axis."""

    def eigenvalues(self, components: list[Any]) -> Any:
        """Descending eigenvalues of symmetric matrices given as upper-triangle components
        (a00, a01, a11) or (a00, a01, a02, a11, a12, a22); shape (k, *spatial)."""


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


SERIAL_BELOW_VOXELS = 1 << 16
"""Smaller kernel calls run on the calling thread: waking numba's workers costs more there."""


class NumbaBackend:
    """CPU backend: numpy arrays, numba kernels parallel over ``numba.get_num_threads()``."""

    name = "numba"
    device = "cpu"

    def __init__(self) -> None:
        import numba

        from filters import _numba_kernels

        self._numba = numba
        self._kernels = _numba_kernels

    def _call(self, kernel: Any, voxels: int, *args: Any) -> None:
        if voxels >= SERIAL_BELOW_VOXELS:
            kernel(*args)
            return
        threads = self._numba.get_num_threads()  # per calling thread in numba
        self._numba.set_num_threads(1)
        try:
            kernel(*args)
        finally:
            self._numba.set_num_threads(threads)

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.empty(shape, dtype=np.float32)

    def from_numpy(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=np.float32)

    def to_numpy(self, array: np.ndarray) -> np.ndarray:
        return array

    def correlate(self, array: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
        if _identity(kernel):
            return array
        radius = len(kernel) // 2
        shape = list(array.shape)
        shape[axis] -= 2 * radius
        out = np.empty(shape, dtype=np.float32)
        half = np.ascontiguousarray(kernel[radius:], dtype=np.float32)
        parity = np.float32(_kernel_parity(kernel))
        base, origin = _contiguous_base(array)
        self._call(self._kernels.correlate_valid, out.size, base, origin, half, parity, axis, out)
        return out

    def sqrt(self, array: np.ndarray) -> np.ndarray:
        return np.sqrt(array, out=array)

    def copy_rows(self, array: np.ndarray, axis: int, start: int, sources: np.ndarray) -> None:
        moved = np.moveaxis(array, axis, 0)
        moved[start : start + len(sources)] = moved[sources]

    def eigenvalues(self, components: list[np.ndarray]) -> np.ndarray:
        shape = components[0].shape
        located = [_contiguous_base(c) for c in components]
        if len({(base.shape, origin) for base, origin in located}) == 1:
            bases, origin = [base for base, _ in located], located[0][1]
        else:
            bases, origin = [np.ascontiguousarray(c) for c in components], (0, 0, 0)
        out = np.empty((2 if len(components) == 3 else 3, *shape), dtype=np.float32)
        kernel = (
            self._kernels.eigenvalues_2x2 if len(components) == 3 else self._kernels.eigenvalues_3x3
        )
        self._call(kernel, out.size, *bases, origin, out)
        return out


class TorchBackend:
    """torch backend on any device; each correlation is a sum of shifted views."""

    name = "torch"

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

    def sqrt(self, array: Any) -> Any:
        return array.sqrt_()

    def copy_rows(self, array: Any, axis: int, start: int, sources: np.ndarray) -> None:
        index = self._torch.as_tensor(sources, dtype=self._torch.long, device=self.device)
        array.narrow(axis, start, len(sources)).copy_(array.index_select(axis, index))

    def eigenvalues(self, components: list[Any]) -> Any:
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
