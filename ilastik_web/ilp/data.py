"""The raw data of an ``.ilp`` lane: found as ilastik would, read into (c, z, y, x)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ilastik_web.ilp.reader import IlpError, IlpLane, IlpProject, axes_from_axistags

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".ilp")
TIFF_SUFFIXES = (".tif", ".tiff")


def _split_hdf5(path: Path) -> tuple[Path, str] | None:
    """(file, inner path) when some prefix of ``path`` is an existing HDF5 file."""
    for candidate in (path, *path.parents):
        if candidate.suffix.lower() in HDF5_SUFFIXES and candidate.is_file():
            return candidate, path.relative_to(candidate).as_posix()
    return None


def _read_hdf5(file: Path, inner: str) -> tuple[np.ndarray, str | None]:
    with h5py.File(file, "r") as f:
        if inner in ("", "."):
            datasets = [k for k, v in f.items() if isinstance(v, h5py.Dataset)]
            if len(datasets) != 1:
                raise IlpError(f"{file.name}: name the dataset inside it (file.h5/dataset)")
            inner = datasets[0]
        dataset = f.get(inner)
        if not isinstance(dataset, h5py.Dataset):
            raise IlpError(f"{file.name}: no dataset {inner!r}")
        axes = None
        if "axistags" in dataset.attrs:
            axes = axes_from_axistags(dataset.attrs["axistags"])
        return np.asarray(dataset[()]), axes


def read_array(path: Path) -> tuple[np.ndarray, str | None]:
    """An image file's voxels and, where the format says, its axes."""
    split = _split_hdf5(path)
    if split is not None:
        return _read_hdf5(*split)
    if not path.is_file():
        raise IlpError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return archive[archive.files[0]], None
    if suffix in TIFF_SUFFIXES:
        import tifffile

        return tifffile.imread(path), None
    try:
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image), None
    except (OSError, ValueError) as exc:
        raise IlpError(f"{path.name}: unsupported image format ({exc})") from None


def _guess_axes(ndim: int, shape: tuple[int, ...]) -> str:
    if ndim == 2:
        return "yx"
    if ndim == 3:
        return "yxc" if shape[-1] <= 4 else "zyx"
    if ndim == 4:
        return "zyxc"
    if ndim == 5:
        return "tzyxc"
    raise IlpError(f"cannot tell the axes of a {ndim}-D image")


def lane_data_path(ilp: IlpProject, lane: IlpLane) -> Path:
    """Where ilastik would look for the lane's raw data (relative to the project file)."""
    path = Path(lane.file_path)
    if not path.is_absolute():
        path = ilp.path.parent / path
    return path


def load_lane(
    ilp: IlpProject, lane: IlpLane, data: str | Path | None = None
) -> tuple[np.ndarray, str]:
    """The lane's raw voxels and their axis keys (ilastik's, e.g. ``"yxc"``).

    ``data`` replaces the recorded location (the data moved). Raises :class:`IlpError`
    with a one-line reason when the data cannot be found or read.
    """
    if data is not None:
        array, axes = read_array(Path(data))
    elif lane.location == "ProjectInternal":
        array, axes = _read_hdf5(ilp.path, lane.file_path.lstrip("/"))
    else:
        path = lane_data_path(ilp, lane)
        if "://" in lane.file_path:
            raise IlpError(f"the raw data is a URL ({lane.file_path}); pass data=PATH")
        if _split_hdf5(path) is None and not path.is_file():
            raise IlpError(f"{ilp.path.name}: raw data not found at {path}; pass data=PATH")
        array, axes = read_array(path)
    for candidate in (lane.axes, axes):
        if candidate is not None and len(candidate) == array.ndim:
            axes = candidate
            break
    else:
        axes = _guess_axes(array.ndim, array.shape)
    if lane.shape is not None and _squeezed(array.shape) != _squeezed(lane.shape):
        raise IlpError(f"{ilp.path.name}: raw data has shape {array.shape}, "
                       f"the project recorded {lane.shape}")
    return array, axes


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for n in shape if n != 1)


def to_czyx(array: np.ndarray, axes: str) -> np.ndarray:
    """(c, z, y, x) view of an array with ilastik axis keys; refuses time series."""
    if len(axes) != array.ndim or len(set(axes)) != len(axes) or set(axes) - set("tczyx"):
        raise IlpError(f"axes {axes!r} do not describe an array of shape {array.shape}")
    if "t" in axes:
        frames = array.shape[axes.index("t")]
        if frames > 1:
            raise IlpError(f"time series (t={frames}) are not supported; export one time point")
        array = np.take(array, 0, axis=axes.index("t"))
        axes = axes.replace("t", "")
    for axis in "czyx":
        if axis not in axes:
            array = array[..., None]
            axes += axis
    return np.transpose(array, [axes.index(a) for a in "czyx"])
