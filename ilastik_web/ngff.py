"""OME-NGFF 0.4 metadata of our exports, so napari, Fiji/BigDataViewer, MoBIE and ilastik
open them with class names and colours.

- a segmentation (or painted labels) also goes under the image's ``labels/<name>/``, a
  multiscale integer image with ``image-label`` colours (``rgba`` per class value) and
  ``properties`` naming each class;
- probabilities carry ``omero`` channels: one per class, named and coloured like it.

0.4 (zarr v2, ``.zattrs``) is what ilastik, BigDataViewer and MoBIE read, so it is the
default; 0.5 (zarr v3, everything under ``attributes.ome`` of ``zarr.json``) on request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NGFF_VERSION = "0.4"


@dataclass(frozen=True)
class ClassInfo:
    """A class as exports describe it: its label value, name and ``#rrggbb`` colour."""

    value: int
    name: str
    color: str

    def to_json(self) -> list:
        return [self.value, self.name, self.color]

    @classmethod
    def from_json(cls, data: Sequence) -> ClassInfo:
        return cls(int(data[0]), str(data[1]), str(data[2]))


def rgb(color: str) -> list[int]:
    """``#rrggbb`` as [r, g, b]."""
    text = color.lstrip("#")
    if len(text) != 6:
        raise ValueError(f"not a #rrggbb colour: {color!r}")
    return [int(text[i : i + 2], 16) for i in (0, 2, 4)]


def axes(channel: bool) -> list[dict]:
    spatial = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    return ([{"name": "c", "type": "channel"}] if channel else []) + spatial


def multiscales(name: str, scales: Sequence[Sequence[float]], *, channel: bool,
                kind: str, version: str = NGFF_VERSION) -> list[dict]:
    """The ``multiscales`` entry: one dataset ``"0"``, ``"1"``, … per level with its
    (z, y, x) voxel size in nm. From 0.5 the version moves to the ``ome`` attribute."""
    datasets = [
        {"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": ([1.0] if channel else []) + [float(v) for v in scale]}
        ]}
        for level, scale in enumerate(scales)
    ]
    entry = {"name": name, "axes": axes(channel), "datasets": datasets, "type": kind}
    return [{"version": version, **entry} if version == "0.4" else entry]


def image_label(classes: Sequence[ClassInfo], *, version: str = NGFF_VERSION) -> dict:
    """``image-label`` of a label image whose values are the class values."""
    return {
        **({"version": version} if version == "0.4" else {}),
        "colors": [{"label-value": c.value, "rgba": [*rgb(c.color), 255]} for c in classes],
        "properties": [{"label-value": c.value, "class": c.name} for c in classes],
        "source": {"image": "../../"},
    }


def omero(classes: Sequence[ClassInfo], *, maximum: float,
          version: str = NGFF_VERSION) -> dict:
    """``omero`` rendering settings: one channel per class (in channel order), values in
    [0, ``maximum``] (1 for float probabilities, 255 for uint8)."""
    return {
        **({"version": version} if version == "0.4" else {}),
        "rdefs": {"model": "color"},
        "channels": [
            {"label": c.name, "color": c.color.lstrip("#").upper(), "active": True,
             "coefficient": 1.0, "family": "linear", "inverted": False,
             "window": {"min": 0.0, "max": float(maximum), "start": 0.0,
                        "end": float(maximum)}}
            for c in classes
        ],
    }


def classes_for_values(values: Sequence[int], classes: Sequence[ClassInfo]) -> list[ClassInfo]:
    """One ClassInfo per value, in order; unnamed values get a name and a grey."""
    known = {c.value: c for c in classes}
    return [known.get(int(v), ClassInfo(int(v), f"class {int(v)}", "#808080")) for v in values]
