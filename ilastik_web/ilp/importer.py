"""``import_ilp``: a desktop ilastik Pixel Classification project as an ilastik-web project.

The lane's raw data is copied into the project folder (``raw.h5``, axes z, y, x, c), so the
project no longer depends on where the ``.ilp`` and its data lie. Classes keep their names
and colours, label blocks land where ilastik painted them whatever axis order the ilastik
version wrote, the feature selection keeps its "in 2D" flags, and the stored forest predicts
what desktop ilastik predicted until the user retrains.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np

from ilastik_web.abc import Box
from ilastik_web.classify.vigra_forest import VigraForestClassifier, VigraForestError
from ilastik_web.ilp.data import load_lane, to_czyx
from ilastik_web.ilp.reader import (
    PIXEL_CLASSIFICATION,
    IlpError,
    IlpLane,
    IlpProject,
    LabelBlock,
    read_ilp,
)
from ilastik_web.project import DEFAULT_SELECTION, PROJECT_FILE, Project

log = logging.getLogger(__name__)

RAW_FILE = "raw.h5"
RAW_DATASET = "data"
_RAW_CHUNK = (32, 128, 128)


def _write_raw(path: Path, volume: np.ndarray) -> None:
    """(c, z, y, x) as an HDF5 dataset (z, y, x, c) with vigra axistags."""
    zyxc = np.ascontiguousarray(np.moveaxis(volume, 0, -1))
    chunks = tuple(min(n, c) for n, c in zip(zyxc.shape[:3], _RAW_CHUNK, strict=True))
    tags = {"axes": [{"key": k, "typeFlags": 1 if k == "c" else 2, "resolution": 0,
                      "description": ""} for k in "zyxc"]}
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset(RAW_DATASET, data=zyxc, chunks=(*chunks, zyxc.shape[3]),
                                   compression="gzip", compression_opts=1)
        dataset.attrs["axistags"] = json.dumps(tags)


def block_to_zyx(block: LabelBlock, axes: str,
                 shape: tuple[int, int, int]) -> tuple[Box, np.ndarray]:
    """A saved label block as a (z, y, x) box of the volume and its values."""
    if len(axes) != block.data.ndim:
        raise IlpError(f"a label block has {block.data.ndim} axes, "
                       f"its axis order {axes!r} has {len(axes)}")
    data = block.data
    spans = dict(zip(axes, block.slices, strict=True))
    for axis in ("t", "c"):
        if axis in spans:
            if axis == "t" and spans["t"].start > 0:
                raise IlpError("labels on time points after the first are not supported")
            data = np.take(data, 0, axis=axes.index(axis))
            axes = axes.replace(axis, "")
    for axis in "zyx":
        if axis not in axes:
            data = data[..., None]
            axes += axis
            spans[axis] = slice(0, 1)
    data = np.transpose(data, [axes.index(a) for a in "zyx"])
    box = Box([spans[a].start for a in "zyx"], [spans[a].stop for a in "zyx"])
    if not Box.from_shape(shape).contains(box):
        raise IlpError(f"a label block {box} lies outside the data {shape}")
    return box, data


def _hex(color: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{max(0, min(255, int(c))):02x}" for c in color)


def _import_labels(project: Project, ilp: IlpProject, lane: IlpLane, lane_index: int,
                   data_axes: str, data_shape: tuple[int, ...], notes: list[str]) -> int:
    if lane_index >= len(ilp.label_blocks):
        return 0
    values = {c.value for c in project.classes}
    painted = 0
    for block in ilp.label_blocks[lane_index]:
        axes = ilp.saved_label_axes(lane, block, data_axes, data_shape)
        box, zyx = block_to_zyx(block, axes, project.source.base.shape)
        for value in np.unique(zyx):
            if value == 0:
                continue
            if int(value) not in values:
                notes.append(f"labels of value {int(value)} have no class: skipped")
                continue
            mask = zyx == value
            project.paint_mask(box, mask, int(value))
            painted += int(mask.sum())
    return painted


def _adopt_forest(project: Project, ilp: IlpProject, notes: list[str]) -> bool:
    if ilp.forest is None:
        return False
    names = list(project.feature_names)
    stored = ilp.feature_names
    if sorted(stored) != sorted(names) or len(set(stored)) != len(stored):
        notes.append("the stored forest's features are not the project's selection: retrain")
        return False
    try:
        classifier = VigraForestClassifier(
            ilp.forest, [c.value for c in project.classes], names,
            [names.index(n) for n in stored],
        )
    except VigraForestError as exc:
        notes.append(f"the stored forest cannot be used ({exc}): retrain")
        return False
    project.adopt_classifier(classifier)
    return True


def import_ilp(ilp_path: str | Path, directory: str | Path, *, data: str | Path | None = None,
               lane: int = 0, **project_kwargs) -> Project:
    """Make an ilastik-web project in ``directory`` from a desktop ilastik ``.ilp``.

    Parameters
    ----------
    ilp_path
        A Pixel Classification project written by ilastik 1.2 to 1.4.
    directory
        The new project folder (must not hold a project yet).
    data
        The lane's raw data when it is no longer where the ``.ilp`` says (an image file,
        ``.npy``, or ``file.h5/dataset``).
    lane
        Which lane to import (a project holds one image).
    project_kwargs
        Passed to :class:`~ilastik_web.project.Project` (caches, ``live=``).

    Returns
    -------
    Project
        With the data, classes, labels, feature selection and, when ilastik stored one, its
        forest serving predictions. What could not be carried over is logged as a warning
        and listed in ``project.import_notes``.

    Raises
    ------
    IlpError
        One line: not a Pixel Classification project, no data lanes, data not found, a
        time series, an unreadable label block.
    """
    ilp_path = Path(ilp_path)
    ilp = read_ilp(ilp_path)
    name = ilp_path.name
    if ilp.workflow != PIXEL_CLASSIFICATION:
        raise IlpError(f"{name}: workflow {ilp.workflow!r} is not {PIXEL_CLASSIFICATION}")
    if not ilp.lanes:
        raise IlpError(f"{name}: the project has no raw data (no lanes); nothing to import")
    if not 0 <= lane < len(ilp.lanes):
        raise IlpError(f"{name}: no lane {lane} (the project has {len(ilp.lanes)})")
    info = ilp.lanes[lane]
    array, axes = load_lane(ilp, info, data)
    if array.dtype.kind not in "biuf":
        raise IlpError(f"{name}: raw data of type {array.dtype} is not numeric")
    volume = to_czyx(array, axes)
    directory = Path(directory)
    if (directory / PROJECT_FILE).exists():
        raise IlpError(f"{directory} already holds a project")
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / RAW_FILE
    _write_raw(raw, volume)
    notes = list(ilp.notes)
    selection = ilp.selection
    if selection is None:
        notes.append("the project selects no features: using ilastik-web's default selection")
        selection = DEFAULT_SELECTION
    project = Project.create(directory, str(raw / RAW_DATASET), selection=selection,
                             **project_kwargs)
    for index, class_name in enumerate(ilp.class_names):
        project.add_class(class_name or f"Label {index + 1}", _hex(ilp.class_colors[index]))
    painted = _import_labels(project, ilp, info, lane, axes, array.shape, notes)
    if not ilp.class_names:
        notes.append("the project has no classes: add some and paint")
    elif painted == 0:
        notes.append("the project has no labels: paint some to train")
    adopted = _adopt_forest(project, ilp, notes)
    if not adopted and ilp.forest is None and not any("forest" in n for n in notes):
        notes.append("the project has no trained classifier: it trains from the labels")
    project.save()
    project.import_notes = notes
    for note in notes:
        log.warning("%s: %s", name, note)
    log.info("imported %s (ilastik %s): %d classes, %d labelled voxels, %s",
             name, ilp.version, len(project.classes), painted,
             "ilastik's forest" if adopted else "no classifier yet")
    return project

