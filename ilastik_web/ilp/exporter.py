"""``export_ilp``: a project as a desktop ilastik 1.4 Pixel Classification ``.ilp``.

The layout follows the files ilastik 1.4.1 writes (checked group by group in
``tests/ilp/test_ilp_export.py``): root ``ilastikVersion``/``workflowName``/``time``, a
``StorageVersion`` in every applet group (ilastik skips a group without one), one lane whose
``Raw Data`` names the project's source (without ``axistags``/``shape``: ilastik then takes
the axes the data file declares, which a shape of our (z, y, x) view could contradict), the
feature selection matrix with ``ComputeIn2d``, class names and colours, and the labels as
uint8 blocks cropped to their bounding box with ``blockSlice`` and ``axistags`` in the
lane's enforced axis order (``yxc`` or ``zyxc``).

No forest and no classifier factory are written, so ilastik trains its own from the labels;
nothing pickled is written.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

import filters
from ilastik_web.ilp.reader import PIXEL_CLASSIFICATION, IlpError
from ilastik_web.project import Project

#: The ilastik version we claim: >= 1.4.0b8, so ilastik reads the label blocks in the lane's
#: enforced axis order, as written here.
ILASTIK_VERSION = "1.4.1"


def _string(group: h5py.Group, name: str, value: str) -> None:
    group.create_dataset(name, data=value.encode("utf-8"), dtype=h5py.string_dtype())


def _strings(group: h5py.Group, name: str, values: list[str]) -> h5py.Dataset:
    return group.create_dataset(name, data=[v.encode("utf-8") for v in values],
                                dtype=h5py.string_dtype())


def _axistags(keys: str) -> str:
    return json.dumps({"axes": [
        {"key": k, "typeFlags": 1 if k == "c" else 2, "resolution": 0, "description": ""}
        for k in keys
    ]}, indent=2)


def _hex_to_rgb(color: str) -> list[int]:
    return [int(color[i : i + 2], 16) for i in (1, 3, 5)]


def _data_location(project: Project, ilp_path: Path) -> tuple[str, str]:
    """(filePath, __class__) of the project's source as seen from the .ilp."""
    location = project.source_location
    if not location:
        raise IlpError("the project's data is held in memory; save it to a file first")
    if "://" in location:
        return location, "MultiscaleUrlDatasetInfo"
    path = Path(location).resolve()
    try:
        relative = os.path.relpath(path, ilp_path.resolve().parent)
    except ValueError:  # another drive
        return str(path), "FilesystemDatasetInfo"
    if relative.startswith(".."):
        return str(path), "FilesystemDatasetInfo"
    return Path(relative).as_posix(), "RelativeFilesystemDatasetInfo"


def _selection_matrix(selection, planar: bool) -> tuple[list[float], np.ndarray, list[bool]]:
    """Scales, the features × scales matrix and ComputeIn2d (unselected scales get
    ilastik's default: in 2D for a 2D image)."""
    scales = sorted({*filters.DEFAULT_SCALES, *(s.sigma for s in selection)})
    matrix = np.zeros((len(filters.FEATURE_IDS), len(scales)), dtype=bool)
    in_2d: dict[float, bool] = {}
    for spec in selection:
        if in_2d.setdefault(spec.sigma, spec.in_2d) != spec.in_2d:
            raise IlpError(f"σ={spec.sigma} is selected both in 2D and in 3D; ilastik has one "
                           "ComputeIn2d flag per scale")
        matrix[filters.FEATURE_IDS.index(spec.feature_id), scales.index(spec.sigma)] = True
    return scales, matrix, [in_2d.get(s, planar) for s in scales]


def _label_blocks(project: Project) -> list[tuple[tuple[slice, ...], np.ndarray]]:
    """Labels as ilastik values (class rank + 1), cropped blocks in (z, y, x)."""
    ranks = {c.value: i + 1 for i, c in enumerate(project.classes)}
    lookup = np.zeros(256, dtype=np.uint8)
    for value, rank in ranks.items():
        lookup[value] = rank
    blocks = []
    for box, block in project.labels.snapshot().labelled_blocks():
        values = lookup[block]
        nonzero = np.nonzero(values)
        if not len(nonzero[0]):
            continue
        lo = [int(a.min()) for a in nonzero]
        hi = [int(a.max()) + 1 for a in nonzero]
        crop = values[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        spans = tuple(slice(s + a, s + b) for s, a, b in zip(box.start, lo, hi, strict=True))
        blocks.append((spans, crop))
    return blocks


def export_ilp(project: Project, path: str | Path) -> Path:
    """Write ``project`` as a desktop ilastik 1.4 Pixel Classification project.

    Parameters
    ----------
    project
        The project; its source must be a file or URL ilastik can open (HDF5, TIFF, N5,
        OME-Zarr 0.4, precomputed), which it references (relative to the ``.ilp`` when
        below its folder).
    path
        The ``.ilp`` to write (replaced atomically).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    IlpError
        The source is in memory only, or the selection cannot be expressed in ilastik's
        matrix (one scale both in 2D and 3D).
    """
    path = Path(path)
    file_path, info_class = _data_location(project, path)
    base = project.source.base
    planar = base.shape[0] == 1
    scales, matrix, in_2d = _selection_matrix(project.selection, planar)
    lane_axes = "yxc" if planar else "zyxc"
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        _string(f, "ilastikVersion", ILASTIK_VERSION)
        _string(f, "workflowName", PIXEL_CLASSIFICATION)
        _string(f, "time", time.ctime())
        f.create_dataset("currentApplet", data=np.int64(0))

        data = f.create_group("Input Data")
        _strings(data, "Role Names", ["Raw Data", "Prediction Mask"])
        _string(data, "StorageVersion", "0.2")
        data.create_group("local_data")
        lane = data.create_group("infos/lane0000")
        lane.create_group("Prediction Mask")
        raw = lane.create_group("Raw Data")
        _string(raw, "__class__", info_class)
        raw.create_dataset("allowLabels", data=True)
        _string(raw, "datasetId", str(uuid.uuid1()))
        _string(raw, "display_mode", "default")
        _string(raw, "filePath", file_path)
        _string(raw, "location", "FileSystem")
        _string(raw, "nickname", project.directory.name if project.directory else "data")
        raw.create_dataset("normalizeDisplay", data=False)
        raw.create_dataset("scale_locked", data=False)
        _string(raw, "working_scale", "")

        features = f.create_group("FeatureSelections")
        features.create_dataset("ComputeIn2d", data=np.asarray(in_2d, dtype=bool))
        _strings(features, "FeatureIds", list(filters.FEATURE_IDS))
        features.create_dataset("Scales", data=np.asarray(scales, dtype=np.float64))
        features.create_dataset("SelectionMatrix", data=matrix)
        _string(features, "StorageVersion", "0.1")

        classification = f.create_group("PixelClassification")
        classes = project.classes
        if classes:
            names = _strings(classification, "LabelNames", [c.name for c in classes])
            names.attrs["isEmpty"] = False
            colors = np.asarray([_hex_to_rgb(c.color) for c in classes], dtype=np.int64)
            for name in ("LabelColors", "PmapColors"):
                classification.create_dataset(name, data=colors).attrs["isEmpty"] = False
        else:  # ilastik's encoding of an empty list
            for name in ("LabelNames", "LabelColors", "PmapColors"):
                classification.create_dataset(name, data=np.zeros(1)).attrs["isEmpty"] = True
        _string(classification, "StorageVersion", "0.1")
        sets = classification.create_group("LabelSets/labels000")
        block_tags = _axistags(lane_axes)
        for index, (spans, crop) in enumerate(_label_blocks(project)):
            if planar:
                spans, crop = spans[1:], crop[0]
            block = sets.create_dataset(f"block{index:04d}", data=crop[..., None],
                                        compression="gzip")
            block.attrs["blockSlice"] = (
                "[" + ",".join(f"{s.start}:{s.stop}" for s in spans) + ",0:1]"
            )
            block.attrs["axistags"] = block_tags

        export = f.create_group("Prediction Export")
        _string(export, "OutputFilenameFormat", "{dataset_dir}/{nickname}_{result_type}")
        _string(export, "OutputFormat", "hdf5")
        _string(export, "OutputInternalPath", "exported_data")
        _string(export, "StorageVersion", "0.1")
    os.replace(tmp, path)
    return path
