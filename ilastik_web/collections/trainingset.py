"""Training sets out of a collection's annotations, in the layouts common trainers read.

Layouts:

- ``tiff``: ``<split>/images/<item>.tif`` and ``<split>/labels/<item>.tif`` (instance ids),
  what micro-sam's and torch-em's loaders take (an image folder and a label folder);
- ``cellpose``: ``<split>/<item>.tif`` beside ``<split>/<item>_masks.tif``;
- ``ome-zarr``: ``<split>/<item>.ome.zarr`` (OME-Zarr 0.4): the image at ``0`` and the
  instance labels at ``labels/instances``.

Items (never objects) are split into ``train`` and ``val``, so that no image is seen in
both. ``manifest.json`` lists per item its split, author, time, files, and each object's
class and source (SAM, polygon, brush, ...), plus the class names of the whole set.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from ilastik_web.abc import Box
from ilastik_web.collections.collection import Collection
from ilastik_web.errors import InvalidRequestError

log = logging.getLogger(__name__)

LAYOUTS = ("tiff", "cellpose", "ome-zarr")


def split_items(item_ids: list[str], val_fraction: float, seed: int = 0
                ) -> dict[str, str]:
    """item id -> "train" / "val": a seeded shuffle, at least one of each when there are two
    or more items and ``val_fraction`` > 0."""
    if not 0.0 <= val_fraction < 1.0:
        raise InvalidRequestError("val_fraction must be in [0, 1)")
    order = list(item_ids)
    np.random.default_rng(seed).shuffle(order)
    n_val = int(round(val_fraction * len(order)))
    if val_fraction > 0 and len(order) >= 2:
        n_val = min(max(n_val, 1), len(order) - 1)
    return {item: ("val" if i < n_val else "train") for i, item in enumerate(order)}


def _image_of(collection: Collection, item_id: str) -> np.ndarray:
    """The item's full-resolution image as (c, z, y, x)."""
    base = collection.open(item_id).base
    return np.asarray(base.read(Box.from_shape(base.shape)))


def _squeeze(image_czyx: np.ndarray, labels_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2D items lose their z axis; one-channel images lose their channel axis."""
    image, labels = image_czyx, labels_zyx
    if labels.shape[0] == 1:
        image, labels = image[:, 0], labels[0]
    if image.shape[0] == 1:
        image = image[0]
    else:  # channels last, as cellpose and micro-sam read multi-channel TIFFs
        image = np.moveaxis(image, 0, -1)
    return image, labels


def _write_ome_zarr(path: Path, image_czyx: np.ndarray, labels_zyx: np.ndarray,
                    voxel_size) -> None:
    import zarr

    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("0", data=image_czyx, chunks=(1, *[min(s, 256) for s in
                                                          image_czyx.shape[1:]]))
    root.attrs["multiscales"] = [{
        "version": "0.4", "name": path.name, "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, *map(float, voxel_size)]}]}]}]
    labels_group = root.create_group("labels")
    labels_group.attrs["labels"] = ["instances"]
    instances = labels_group.create_group("instances")
    instances.create_array("0", data=labels_zyx.astype(np.uint32),
                           chunks=tuple(min(s, 256) for s in labels_zyx.shape))
    instances.attrs["multiscales"] = [{
        "version": "0.4", "name": "instances", "axes": axes[1:],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": list(map(float, voxel_size))}]}]}]
    instances.attrs["image-label"] = {"version": "0.4", "source": {"image": "../../"}}


def export_training_set(collection: Collection, output: Path, *, layout: str = "tiff",
                        val_fraction: float = 0.2, seed: int = 0,
                        overwrite: bool = False) -> dict:
    """Write every annotated item of ``collection`` to ``output``; returns the manifest.

    Raises
    ------
    InvalidRequestError
        Unknown layout, no annotated item, or ``output`` exists (without ``overwrite``).
    """
    import tifffile

    if layout not in LAYOUTS:
        raise InvalidRequestError(f"layout must be one of {LAYOUTS}")
    annotated = [item.item_id for item in collection.items
                 if collection.annotations.exists(item.item_id)]
    if not annotated:
        raise InvalidRequestError("no item of the collection is annotated yet")
    output = Path(output)
    if output.exists():
        if not overwrite:
            raise InvalidRequestError(f"{output} exists; choose a new folder")
        shutil.rmtree(output)
    splits = split_items(annotated, val_fraction, seed)
    tmp = output.with_name(output.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    entries, class_names = [], set()
    for item_id in annotated:
        annotation = collection.annotations.load(item_id)
        split = splits[item_id]
        image_czyx = _image_of(collection, item_id)
        if image_czyx.shape[1:] != annotation.labels.shape:
            raise InvalidRequestError(f"item {item_id!r}: the image changed shape since it "
                                      "was annotated")
        folder = tmp / split
        if layout == "ome-zarr":
            folder.mkdir(parents=True, exist_ok=True)
            voxel = collection.open(item_id).base.voxel_size
            name = f"{item_id}.ome.zarr"
            _write_ome_zarr(folder / name, image_czyx, annotation.labels, voxel)
            files = {"image": f"{split}/{name}/0", "labels": f"{split}/{name}/labels/instances/0"}
        else:
            image, labels = _squeeze(image_czyx, annotation.labels)
            if layout == "tiff":
                image_rel = f"{split}/images/{item_id}.tif"
                labels_rel = f"{split}/labels/{item_id}.tif"
            else:
                image_rel, labels_rel = f"{split}/{item_id}.tif", f"{split}/{item_id}_masks.tif"
            for rel, data in ((image_rel, image), (labels_rel, labels.astype(np.uint32))):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                tifffile.imwrite(tmp / rel, data, compression="zlib",
                                 photometric="minisblack")
            files = {"image": image_rel, "labels": labels_rel}
        objects = [{"id": i, "class": annotation.classes.get(i),
                    "source": annotation.sources.get(i)} for i in annotation.object_ids]
        class_names.update(o["class"] for o in objects if o["class"])
        entries.append({"item": item_id, "split": split, "author": annotation.author,
                        "time": annotation.time, **files, "objects": objects})
    manifest = {"layout": layout, "created": time.time(), "val_fraction": val_fraction,
                "seed": seed, "classes": sorted(class_names), "items": entries}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    tmp.rename(output)
    log.info("exported %d items (%s) to %s", len(entries), layout, output)
    return manifest
