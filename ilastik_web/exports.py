"""Painted labels as an OME-Zarr 0.4 that napari, Fiji and MoBIE open with class colours.

The output is a multiscale uint8 image of the label values (pyramid by mode), with the same
levels again under ``labels/annotations/`` carrying ``image-label`` colours and class names
(:mod:`ilastik_web.ngff`). Written through the batch writer (:class:`hpc.writers.OutputStore`),
so painted labels and exported segmentations share one format.
"""

from __future__ import annotations

from pathlib import Path

from hpc.plan import default_chunk_shape
from hpc.writers import OutputLayout, OutputStore
from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError
from ilastik_web.ngff import ClassInfo
from ilastik_web.project import Project


def export_labels(project: Project, path: str | Path) -> Path:
    """Write the project's painted labels to the OME-Zarr ``path`` (must not exist).

    Label values are the class values; ``labels/annotations/`` names and colours them.
    """
    path = Path(path)
    if path.exists():
        raise InvalidRequestError(f"output {path} already exists")
    if not path.parent.is_dir():
        raise InvalidRequestError(f"output folder {path.parent} does not exist")
    shape = project.source.base.shape
    layout = OutputLayout(
        shape, 1, "uint8", default_chunk_shape(shape), tuple(project.source.base.voxel_size),
        "labels", classes=tuple(ClassInfo(c.value, c.name, c.color) for c in project.classes),
    )
    store = OutputStore("ome-zarr", path, path.with_name(path.name + ".staging"), layout)
    store.create()
    snapshot = project.labels.snapshot()
    depth = layout.chunk_shape[0]
    for z0 in range(0, shape[0], depth):
        slab = Box((z0, 0, 0), (min(z0 + depth, shape[0]), shape[1], shape[2]))
        store.write(slab, snapshot.read(slab)[None])
    store.finalize()
    return path
