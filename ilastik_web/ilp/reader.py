"""Read a desktop ilastik Pixel Classification project (``.ilp``, HDF5) without ilastik.

Only datasets and attributes are read; the pickles an ``.ilp`` holds (``ClassifierFactory``,
``pickled_type``, ``Bookmarks``) are never unpickled, only matched as text.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from packaging.version import InvalidVersion, Version

import filters
from ilastik_web.classify.vigra_forest import VigraForest, VigraForestError
from ilastik_web.errors import InvalidRequestError

log = logging.getLogger(__name__)

PIXEL_CLASSIFICATION = "Pixel Classification"
#: Classifier types whose forests are vigra RFs (matched in ``pickled_type``'s text).
VIGRA_CLASSIFIERS = ("ParallelVigraRfLazyflowClassifier", "VigraRfLazyflowClassifier")
#: The colours ilastik invents for projects saved without label names.
LEGACY_COLORS = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
    (128, 128, 128), (255, 105, 180), (255, 165, 0), (240, 230, 140),
)


class IlpError(InvalidRequestError):
    """The file is not a Pixel Classification project we can read (one-line reason)."""


def text(value) -> str:
    """An HDF5 string (bytes, numpy bytes, str or a 0-d array of one) as str."""
    if isinstance(value, np.ndarray):
        value = value.item() if value.shape == () else value.tolist()
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


@dataclass(frozen=True)
class IlpLane:
    """One lane's raw data as ilastik recorded it."""

    nickname: str
    file_path: str
    location: str  # "FileSystem" or "ProjectInternal"
    info_class: str | None
    axes: str | None  # the dataset's own axis keys, e.g. "tzyxc"; None when not recorded
    shape: tuple[int, ...] | None
    allow_labels: bool


@dataclass(frozen=True)
class LabelBlock:
    """A saved label crop: ``data`` covers ``slices`` of the lane in the axes ``axes``."""

    slices: tuple[slice, ...]
    data: np.ndarray
    axes: str | None  # from the block's own axistags; None when it carries none


@dataclass
class IlpProject:
    path: Path
    version: str
    workflow: str
    lanes: list[IlpLane]
    selection: tuple[filters.FeatureSpec, ...] | None
    class_names: list[str]
    class_colors: list[tuple[int, int, int]]
    label_blocks: list[list[LabelBlock]] = field(default_factory=list)
    forest: VigraForest | None = None
    feature_names: list[str] = field(default_factory=list)
    known_labels: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def parsed_version(self) -> Version | None:
        try:
            return Version(self.version)
        except InvalidVersion:
            return None

    def saved_label_axes(self, lane: IlpLane, block: LabelBlock, data_axes: str,
                         data_shape: tuple[int, ...]) -> str:
        """The axis order ilastik wrote ``block`` in (``BackwardsCompatibleLabelSerialBlockSlot``).

        1.3.3post2 to 1.4.0b7 wrote the dataset's original axis order; every other version
        the lane's enforced order (:func:`enforced_axes`).
        """
        version = self.parsed_version
        if block.axes is not None and len(block.axes) == block.data.ndim:
            return block.axes
        if version is not None and Version("1.3.3post2") <= version <= Version("1.4.0b7"):
            return lane.axes or data_axes
        return enforced_axes(data_axes, data_shape)


def enforced_axes(axes: str, shape: tuple[int, ...]) -> str:
    """ilastik's lane axis order: the shortest of ``yxc``, ``xyc``, then 3- and 4-axis
    permutations of ``tzyx`` plus ``c``, holding every non-singleton axis
    (``opDataSelection._get_output_axis_order``)."""
    needed = {a for a, n in zip(axes, shape, strict=True) if n > 1 and a != "c"}
    candidates = ["yxc", "xyc"]
    for length in (3, 4):
        candidates += ["".join(p) + "c" for p in itertools.permutations("tzyx", length)]
    for candidate in candidates:
        if needed <= set(candidate):
            return candidate
    raise IlpError(f"no ilastik axis order holds the axes {''.join(sorted(needed))}")


_SLICE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_block_slice(value: str) -> tuple[slice, ...]:
    """``"[a:b,c:d,...]"`` as slices."""
    inner = value.strip()
    if not (inner.startswith("[") and inner.endswith("]")):
        raise IlpError(f"malformed blockSlice {value!r}")
    slices = []
    for part in inner[1:-1].split(","):
        match = _SLICE.match(part)
        if match is None:
            raise IlpError(f"malformed blockSlice {value!r}")
        start, stop = int(match.group(1)), int(match.group(2))
        if stop < start:
            raise IlpError(f"malformed blockSlice {value!r}")
        slices.append(slice(start, stop))
    return tuple(slices)


def axes_from_axistags(raw) -> str | None:
    try:
        return "".join(axis["key"] for axis in json.loads(text(raw))["axes"])
    except (ValueError, KeyError, TypeError):
        return None


def _dataset(group: h5py.Group, name: str):
    item = group.get(name)
    return item[()] if isinstance(item, h5py.Dataset) else None


def _read_lanes(root: h5py.File) -> list[IlpLane]:
    infos = root.get("Input Data/infos")
    if not isinstance(infos, h5py.Group):
        return []
    lanes = []
    for name in sorted(infos):
        info = infos[name].get("Raw Data")
        if not isinstance(info, h5py.Group) or "filePath" not in info:
            continue
        axes = None
        if "axistags" in info:
            axes = axes_from_axistags(_dataset(info, "axistags"))
        if axes is None and "axisorder" in info:
            axes = text(_dataset(info, "axisorder"))
        shape = _dataset(info, "shape")
        lanes.append(IlpLane(
            nickname=text(_dataset(info, "nickname")) if "nickname" in info else name,
            file_path=text(_dataset(info, "filePath")),
            location=text(_dataset(info, "location")) if "location" in info else "FileSystem",
            info_class=text(_dataset(info, "__class__")) if "__class__" in info else None,
            axes=axes,
            shape=tuple(int(n) for n in shape) if shape is not None else None,
            allow_labels=bool(_dataset(info, "allowLabels")) if "allowLabels" in info else True,
        ))
    return lanes


def _read_selection(root: h5py.File) -> tuple[filters.FeatureSpec, ...] | None:
    group = root.get("FeatureSelections")
    if not isinstance(group, h5py.Group) or "SelectionMatrix" not in group:
        return None
    ids = [text(v) for v in _dataset(group, "FeatureIds")] if "FeatureIds" in group else list(
        filters.FEATURE_IDS
    )
    scales = [float(v) for v in np.ravel(_dataset(group, "Scales"))] if "Scales" in group else list(
        filters.DEFAULT_SCALES
    )
    matrix = np.asarray(_dataset(group, "SelectionMatrix"), dtype=bool)
    if matrix.shape != (len(ids), len(scales)):
        raise IlpError(
            f"feature selection matrix {matrix.shape} does not match "
            f"{len(ids)} features × {len(scales)} scales"
        )
    in_2d = [False] * len(scales)
    if "ComputeIn2d" in group:
        stored = [bool(v) for v in np.ravel(_dataset(group, "ComputeIn2d"))]
        if stored:
            in_2d = (stored + [False] * len(scales))[: len(scales)]
    specs = []
    for i, feature_id in enumerate(ids):
        for j, scale in enumerate(scales):
            if matrix[i, j]:
                try:
                    specs.append(filters.FeatureSpec(feature_id, scale, in_2d[j]))
                except ValueError as exc:
                    raise IlpError(f"unsupported feature: {exc}") from None
    return tuple(specs) if specs else None


def _read_list(group: h5py.Group, name: str):
    item = group.get(name)
    if not isinstance(item, h5py.Dataset) or item.attrs.get("isEmpty", False):
        return None
    return item[()]


def _read_labels(group: h5py.Group) -> list[list[LabelBlock]]:
    sets = group.get("LabelSets")
    if not isinstance(sets, h5py.Group):
        return []
    lanes = []
    for name in sorted(sets):
        blocks = []
        for block_name in sorted(sets[name]):
            dataset = sets[name][block_name]
            if not isinstance(dataset, h5py.Dataset) or "blockSlice" not in dataset.attrs:
                continue
            slices = parse_block_slice(text(dataset.attrs["blockSlice"]))
            data = np.asarray(dataset[()])
            if data.ndim != len(slices) or data.shape != tuple(s.stop - s.start for s in slices):
                raise IlpError(f"label block {name}/{block_name} does not fit its blockSlice")
            axes = None
            if "axistags" in dataset.attrs:
                axes = axes_from_axistags(dataset.attrs["axistags"])
            blocks.append(LabelBlock(slices, data, axes))
        lanes.append(blocks)
    return lanes


def _read_forest(group: h5py.Group, notes: list[str]):
    forests = group.get("ClassifierForests")
    if not isinstance(forests, h5py.Group):
        return None, [], []
    kind = text(_dataset(forests, "pickled_type")) if "pickled_type" in forests else ""
    if not any(name in kind for name in VIGRA_CLASSIFIERS):
        shown = kind.split("\n")[:2]
        notes.append(f"the stored classifier ({' '.join(shown)}) is not a vigra forest: retrain")
        return None, [], []
    names = sorted(k for k in forests if k.startswith("Forest"))
    try:
        forest = VigraForest.from_hdf5([forests[n] for n in names])
    except VigraForestError as exc:
        notes.append(f"the stored forest cannot be decoded ({exc}): retrain")
        return None, [], []
    feature_names = [text(v) for v in _dataset(forests, "feature_names")] if (
        "feature_names" in forests) else []
    known = [int(v) for v in np.ravel(_dataset(forests, "known_labels"))] if (
        "known_labels" in forests) else list(forest.labels)
    return forest, feature_names, known


def read_ilp(path: str | Path) -> IlpProject:
    """Parse ``path`` into an :class:`IlpProject`.

    Raises
    ------
    IlpError
        Not an HDF5 file, or not a project we can read; one line.
    """
    path = Path(path)
    try:
        root = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise IlpError(f"{path.name}: not an HDF5 ilastik project ({exc})") from None
    with root:
        if "ilastikVersion" not in root:
            raise IlpError(f"{path.name}: not an ilastik project (no ilastikVersion)")
        version = text(root["ilastikVersion"][()])
        workflow = text(root["workflowName"][()]) if "workflowName" in root else ""
        notes: list[str] = []
        lanes = _read_lanes(root)
        selection = _read_selection(root)
        group = root.get("PixelClassification")
        names: list[str] = []
        colors: list[tuple[int, int, int]] = []
        blocks: list[list[LabelBlock]] = []
        forest, feature_names, known = None, [], []
        if isinstance(group, h5py.Group):
            stored_names = _read_list(group, "LabelNames")
            if stored_names is not None:
                names = [text(v) for v in np.ravel(stored_names)]
            stored_colors = _read_list(group, "LabelColors")
            if stored_colors is not None:
                colors = [tuple(int(c) for c in row) for row in np.reshape(stored_colors, (-1, 3))]
            blocks = _read_labels(group)
            forest, feature_names, known = _read_forest(group, notes)
        if not names and blocks:
            # ilastik counts the label values and invents names and colours
            top = max((int(b.data.max()) for lane in blocks for b in lane if b.data.size),
                      default=0)
            names = [f"Label {i + 1}" for i in range(top)]
            colors = [LEGACY_COLORS[i % len(LEGACY_COLORS)] for i in range(top)]
        colors = (colors + [LEGACY_COLORS[i % len(LEGACY_COLORS)] for i in range(len(names))])[
            : len(names)
        ]
        if forest is not None and len(known) > len(names):
            notes.append("the stored forest knows more classes than the project names: retrain")
            forest, feature_names, known = None, [], []
        return IlpProject(path, version, workflow, lanes, selection, names, colors, blocks,
                          forest, feature_names, known, notes)
