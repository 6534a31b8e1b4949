"""Output stores: create once, write chunk-aligned blocks from any process, finalise.

OME-Zarr (NGFF 0.4, zarr v2), N5 and Neuroglancer precomputed are written in place
through tensorstore; parallel workers write disjoint chunks, and rewriting a block writes
the same bytes, so a resumed job can rewrite anything safely. HDF5 and TIFF cannot take
writes from many processes: their blocks go to a staging zarr array in the job folder,
converted slab by slab when every block is done. OME-Zarr gets its pyramid at the end,
with class names and colours (:mod:`ilastik_web.ngff`): ``omero`` channels for
probabilities; a segmentation (or painted labels) is also written under
``labels/<name>/`` with ``image-label`` colours, as napari and MoBIE expect.

Arrays are (c, z, y, x) in memory; N5 and precomputed store (x, y, z, c), as their
readers expect.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import tensorstore as ts
import tifffile

from ilastik_web.abc import Box
from ilastik_web.errors import ConflictError, InvalidRequestError
from ilastik_web.ngff import ClassInfo, classes_for_values, image_label, multiscales, omero
from ilastik_web.pyramid import downsample_mean, downsample_mode, pyramid_factors

log = logging.getLogger(__name__)


def is_object_output(output: Path | str) -> bool:
    """Whether ``output`` names object storage (``s3://bucket/folder``)."""
    return isinstance(output, str) and output.strip().lower().startswith("s3://")

#: Stop the OME-Zarr pyramid once every axis is this short.
PYRAMID_MIN_SIZE = 64


@dataclass(frozen=True)
class OutputLayout:
    """Geometry and type of an output array.

    Attributes
    ----------
    shape
        Spatial shape (z, y, x).
    channels
        Channel count.
    dtype
        numpy dtype name (``"uint8"``, ``"uint16"`` or ``"float32"``).
    chunk_shape
        Spatial chunk shape (z, y, x); blocks are multiples of it.
    voxel_size
        nm (z, y, x).
    export
        What it holds (decides the pyramid's downsampling: mode for segmentation and
        labels).
    classes
        The project's classes, for names and colours in the metadata; probability
        channels follow ``channel_values``.
    channel_values
        The class value of each probability channel.
    """

    shape: tuple[int, int, int]
    channels: int
    dtype: str
    chunk_shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    export: str
    classes: tuple[ClassInfo, ...] = ()
    channel_values: tuple[int, ...] = ()

    @property
    def label_image_name(self) -> str | None:
        """The ``labels/<name>`` this output also gets, if it is a label image."""
        return {"segmentation": "segmentation", "labels": "annotations"}.get(self.export)

    @property
    def channel_chunk(self) -> int:
        # Feature stacks are wide and float: one channel per chunk keeps chunks small.
        return 1 if self.dtype == "float32" else self.channels

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "channels": self.channels, "dtype": self.dtype,
                "chunk_shape": list(self.chunk_shape), "voxel_size": list(self.voxel_size),
                "export": self.export, "classes": [c.to_json() for c in self.classes],
                "channel_values": list(self.channel_values)}

    @classmethod
    def from_json(cls, data: dict) -> OutputLayout:
        return cls(tuple(data["shape"]), int(data["channels"]), data["dtype"],
                   tuple(data["chunk_shape"]), tuple(data["voxel_size"]), data["export"],
                   tuple(ClassInfo.from_json(c) for c in data.get("classes", ())),
                   tuple(int(v) for v in data.get("channel_values", ())))


def _zarr_dtype(dtype: str) -> str:
    return {"uint8": "|u1", "uint16": "<u2", "float32": "<f4"}[dtype]


def _file_kv(path: Path) -> dict:
    return {"driver": "file", "path": str(path)}


def _zarr_spec(kvstore: dict, layout: OutputLayout, shape: Sequence[int] | None = None, *,
               zarr3: bool = False, channel: bool = True) -> dict:
    """A (c, z, y, x) array (or (z, y, x) without ``channel``), zarr v2 or v3, in
    ``kvstore``."""
    spatial = tuple(shape) if shape is not None else layout.shape
    chunks = [min(c, s) for c, s in zip(layout.chunk_shape, spatial, strict=True)]
    full_shape = [layout.channels, *spatial] if channel else list(spatial)
    full_chunks = [layout.channel_chunk, *chunks] if channel else chunks
    if zarr3:
        return {
            "driver": "zarr3",
            "kvstore": kvstore,
            "metadata": {
                "shape": full_shape,
                "chunk_grid": {"name": "regular",
                               "configuration": {"chunk_shape": full_chunks}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "data_type": layout.dtype,
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                           {"name": "gzip", "configuration": {"level": 1}}],
                "fill_value": 0,
                "dimension_names": (["c"] if channel else []) + ["z", "y", "x"],
            },
        }
    return {
        "driver": "zarr",
        "kvstore": kvstore,
        "metadata": {
            "shape": full_shape,
            "chunks": full_chunks,
            "dtype": _zarr_dtype(layout.dtype),
            "compressor": {"id": "zlib", "level": 1},
            "fill_value": 0,
            "order": "C",
            "dimension_separator": "/",
        },
    }


def _xyzc_spec(driver: str, kvstore: dict, layout: OutputLayout) -> dict:
    z, y, x = layout.shape
    cz, cy, cx = layout.chunk_shape
    vz, vy, vx = layout.voxel_size
    if driver == "n5":
        return {
            "driver": "n5",
            "kvstore": kvstore,
            "metadata": {
                "dimensions": [x, y, z, layout.channels],
                "blockSize": [cx, cy, cz, layout.channel_chunk],
                "dataType": layout.dtype,
                "compression": {"type": "gzip", "level": 1},
            },
        }
    return {
        "driver": "neuroglancer_precomputed",
        "kvstore": kvstore,
        "multiscale_metadata": {"type": "image", "data_type": layout.dtype,
                                "num_channels": layout.channels},
        "scale_metadata": {"size": [x, y, z], "resolution": [vx, vy, vz],
                           "encoding": "raw", "chunk_size": [cx, cy, cz]},
    }


#: Formats whose output is a folder (the others are one file).
FOLDER_FORMATS = ("ome-zarr", "ome-zarr-0.5", "n5", "precomputed")


def reserve_output(path: Path, format: str) -> None:
    """Create ``path`` empty and exclusively (a folder or a file, as ``format`` needs).

    Exclusive creation fails on anything already there, a dangling symlink included, so
    two jobs never share an output and nothing of the user's is overwritten.

    Raises
    ------
    ConflictError
        Something exists at ``path``.
    InvalidRequestError
        The parent folder does not exist.
    """
    try:
        if format in FOLDER_FORMATS:
            os.mkdir(path)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        raise ConflictError(f"output {path} already exists") from None
    except FileNotFoundError:
        raise InvalidRequestError(f"output folder {path.parent} does not exist") from None
    except NotADirectoryError:
        raise InvalidRequestError(f"{path.parent} is not a folder") from None


def release_output(path: Path) -> None:
    """Undo :func:`reserve_output` (only while the reservation is still empty)."""
    try:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        elif path.is_file() and path.stat().st_size == 0:
            path.unlink()
    except OSError:
        log.warning("could not release the reserved output %s", path)


def _partial_file(output: Path) -> Path:
    """A new, exclusively created file next to ``output`` to write it in, then rename."""
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial",
                                dir=output.parent)
    os.close(fd)
    return Path(name)

class _ObjectTarget:
    """An output folder in object storage (``s3://``), written with plain PUTs only.

    Swift's S3 API refuses conditional PUTs, which tensorstore needs to create metadata
    and to merge partial chunks. Blocks are whole chunks, so each write is encoded into
    a fresh in-memory store of the same metadata and its objects uploaded as they are;
    reads go to the object store directly.
    """

    def __init__(self, output: str):
        from ilastik_web.sources.location import parse_location

        self.location = parse_location(output)

    def kvstore(self, sub: str | None = None) -> dict:
        place = self.location.child(sub) if sub else self.location
        return place.kvstore_spec()

    def _kv(self, sub: str | None = None) -> ts.KvStore:
        from ilastik_web.sources.s3 import open_kvstore

        return open_kvstore(self.kvstore(sub))

    def has_data(self, sub: str | None = None) -> bool:
        from ilastik_web.sources.s3 import has_objects

        return has_objects(self.kvstore(sub))

    def write_bytes(self, name: str, data: bytes) -> None:
        self._kv().write(name, data).result()

    def read_bytes(self, name: str) -> bytes | None:
        result = self._kv().read(name).result()
        return bytes(result.value) if result.state == "value" else None

    @staticmethod
    def _in_memory(spec: dict) -> ts.TensorStore:
        memory = dict(spec, kvstore={"driver": "memory"}, create=True)
        memory.pop("delete_existing", None)
        memory.pop("open", None)
        return ts.open(memory, context=ts.Context()).result()

    def create(self, spec: dict) -> None:
        """Upload the metadata tensorstore would create for ``spec``."""
        from ilastik_web.sources.s3 import unconditional_copy

        unconditional_copy(self._in_memory(spec).kvstore, ts.KvStore.open(spec["kvstore"])
                           .result())

    def write(self, spec: dict, index: tuple, data: np.ndarray) -> None:
        """Write ``data`` at ``index`` (whole chunks) of the array ``spec`` describes."""
        from ilastik_web.sources.s3 import unconditional_copy

        memory = self._in_memory(spec)
        memory[index].write(data).result()
        unconditional_copy(memory.kvstore, ts.KvStore.open(spec["kvstore"]).result(),
                           skip=_METADATA_KEYS)


#: Metadata objects, uploaded once at creation (not again with every block).
_METADATA_KEYS = (".zarray", ".zattrs", ".zgroup", "zarr.json", "attributes.json", "info")


class OutputStore:
    """Where one job's blocks go.

    Parameters
    ----------
    format
        ``ome-zarr`` (NGFF 0.4, zarr v2: what ilastik, BigDataViewer and MoBIE read),
        ``ome-zarr-0.5`` (zarr v3), ``n5``, ``precomputed``, ``hdf5`` or ``tiff``.
    output
        The final path, or an ``s3://bucket/folder`` in object storage (OME-Zarr, N5
        and precomputed; credentials as :mod:`ilastik_web.sources.s3` reads them).
    staging
        The job folder's staging path (HDF5 and TIFF only).
    layout
        Geometry and type.
    pyramid_min_size
        OME-Zarr levels are added until every axis is at most this long.
    """

    def __init__(self, format: str, output: Path | str, staging: Path, layout: OutputLayout,
                 *, pyramid_min_size: int = PYRAMID_MIN_SIZE):
        self.pyramid_min_size = pyramid_min_size
        self.format = format
        self.target = _ObjectTarget(str(output)) if is_object_output(output) else None
        self.output = Path(output) if self.target is None else None
        self.staging = Path(staging)
        self.layout = layout
        self._store: ts.TensorStore | None = None
        if self.target is not None and self.staged:
            raise InvalidRequestError("HDF5 and TIFF exports are written to local files only; "
                                      "choose ome-zarr, n5 or precomputed for object storage")

    @property
    def staged(self) -> bool:
        return self.format in ("hdf5", "tiff")

    @property
    def ome_version(self) -> str | None:
        """The NGFF version written, or None for the other formats."""
        return {"ome-zarr": "0.4", "ome-zarr-0.5": "0.5"}.get(self.format)

    @property
    def _zarr3(self) -> bool:
        return self.ome_version == "0.5"

    @property
    def _array_path(self) -> Path:
        assert self.output is not None
        if self.staged:
            return self.staging
        if self.ome_version is not None:
            return self.output / "0"
        return self.output

    def _kvstore(self, level: int | None = None) -> dict:
        """The kvstore of the written array (``level``: an OME-Zarr pyramid level)."""
        if level is None and self.ome_version is not None:
            level = 0
        if self.target is not None:
            return self.target.kvstore(None if level is None else str(level))
        assert self.output is not None
        if self.staged:
            return _file_kv(self.staging)
        return _file_kv(self.output if level is None else self.output / str(level))

    def _spec(self) -> dict:
        if self.ome_version is not None or self.staged:
            return _zarr_spec(self._kvstore(), self.layout, zarr3=self._zarr3)
        return _xyzc_spec("n5" if self.format == "n5" else "precomputed", self._kvstore(),
                          self.layout)

    def _exists(self) -> bool:
        if self.target is not None:
            return self.target.has_data("0" if self.ome_version is not None else None)
        return self._array_path.exists() and any(self._array_path.iterdir())

    def create(self) -> None:
        """Make the (empty) output, or keep it if a previous run of this job made it."""
        if self._exists():
            self._open()  # resuming: the store must still match
            return
        if self.ome_version is not None:
            self._write_group("", {}, self.ome_version)
        if self.target is not None:
            self.target.create(self._spec())
        else:
            self._store = ts.open(dict(self._spec(), create=True, delete_existing=False)).result()
        if self.format == "n5":
            self._add_n5_attributes()

    def _add_n5_attributes(self) -> None:
        if self.target is not None:
            attributes = json.loads(self.target.read_bytes("attributes.json") or b"{}")
        else:
            assert self.output is not None
            attributes = json.loads((self.output / "attributes.json").read_text())
        vz, vy, vx = self.layout.voxel_size
        attributes["axes"] = ["x", "y", "z", "c"]
        attributes["pixelResolution"] = {"dimensions": [vx, vy, vz, 1.0], "unit": "nm"}
        self._put_json("attributes.json", attributes)

    def _put_json(self, name: str, value: dict) -> None:
        text = json.dumps(value, indent=2)
        if self.target is not None:
            self.target.write_bytes(name, text.encode())
        else:
            assert self.output is not None
            path = self.output / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def _open(self) -> ts.TensorStore:
        if self._store is None:
            try:
                self._store = ts.open(self._spec()).result()
            except ValueError as exc:
                raise InvalidRequestError(
                    f"{self.output or self.target.location}: existing output does not "
                    f"match this job: {exc}"
                ) from None
        return self._store

    def _index(self, box: Box) -> tuple:
        if self.format in ("n5", "precomputed"):
            (z0, y0, x0), (z1, y1, x1) = box.start, box.stop
            return (slice(x0, x1), slice(y0, y1), slice(z0, z1), slice(None))
        return (slice(None), *box.slices)

    def _stored(self, data: np.ndarray) -> np.ndarray:
        return np.transpose(data, (3, 2, 1, 0)) if self.format in ("n5", "precomputed") else data

    def write(self, box: Box, data: np.ndarray) -> None:
        """Write ``data`` (c, z, y, x) at ``box`` (output coordinates, whole chunks)."""
        if self.target is not None:
            self.target.write(self._spec(), self._index(box), self._stored(data))
            return
        self._open()[self._index(box)].write(self._stored(data)).result()

    def read(self, box: Box) -> np.ndarray:
        """Read back (c, z, y, x) of ``box`` (as written)."""
        return self._stored(self._open()[self._index(box)].read().result())

    # -- finalising ------------------------------------------------------------------------

    def finalize(self) -> None:
        """Pyramid and metadata (OME-Zarr) or conversion (HDF5, TIFF); idempotent."""
        if self.ome_version is not None:
            self._write_pyramid()
        elif self.format == "hdf5":
            self._convert_hdf5()
        elif self.format == "tiff":
            self._convert_tiff()

    def _slabs(self) -> list[Box]:
        z, y, x = self.layout.shape
        depth = self.layout.chunk_shape[0]
        return [Box((z0, 0, 0), (min(z0 + depth, z), y, x)) for z0 in range(0, z, depth)]

    def _write_pyramid(self) -> None:
        layout = self.layout
        factors_list = pyramid_factors(layout.shape, layout.voxel_size,
                                       self.pyramid_min_size)
        labelled = layout.label_image_name is not None
        downsample = downsample_mode if labelled else downsample_mean
        scales = [list(layout.voxel_size)]
        shape = layout.shape
        shapes = [shape]
        previous = self._open()
        for level, factors in enumerate(factors_list, start=1):
            new_shape = tuple(-(-s // f) for s, f in zip(shape, factors, strict=True))
            spec = _zarr_spec(self._kvstore(level), layout, new_shape, zarr3=self._zarr3)
            if self.target is not None:
                self.target.create(spec)
            else:
                ts.open(dict(spec, create=True, delete_existing=True)).result()
            current = ts.open(spec).result()
            # Blocks of whole output chunks, read from the finer level with its factors.
            step = [c * 2 for c in layout.chunk_shape]
            for box in Box.from_shape(new_shape).chunks(step):
                fine = Box([a * f for a, f in zip(box.start, factors, strict=True)],
                           [min(b * f, s) for b, f, s in zip(box.stop, factors, shape,
                                                              strict=True)])
                data = previous[(slice(None), *fine.slices)].read().result()
                index, coarse = (slice(None), *box.slices), downsample(data, factors)
                if self.target is not None:
                    self.target.write(spec, index, coarse)
                else:
                    current[index].write(coarse).result()
            scales.append([v * f for v, f in zip(scales[-1], factors, strict=True)])
            previous, shape = current, new_shape
            shapes.append(new_shape)
        kind = "mode" if labelled else "mean"
        version = self.ome_version or "0.4"
        attributes: dict = {"multiscales": multiscales(layout.export, scales, channel=True,
                                                       kind=kind, version=version)}
        if layout.export == "probabilities" and layout.channel_values:
            maximum = {"uint8": 255, "uint16": 65535}.get(layout.dtype, 1)
            attributes["omero"] = omero(
                classes_for_values(layout.channel_values, layout.classes), maximum=maximum,
                version=version)
        if labelled:
            self._write_label_image(layout.label_image_name, scales, shapes, kind)
        self._write_group("", attributes, version)

    def _sub_kvstore(self, sub: str) -> dict:
        """The kvstore of ``sub`` (a path inside the output folder)."""
        if self.target is not None:
            return self.target.kvstore(sub)
        assert self.output is not None
        return _file_kv(self.output / sub)

    def _write_group(self, sub: str, ome: dict, version: str) -> None:
        """A zarr group at ``sub`` ("": the output itself) with OME metadata: v2
        ``.zgroup``/``.zattrs`` (0.4) or v3 ``zarr.json`` with it under
        ``attributes.ome`` (0.5)."""
        prefix = f"{sub}/" if sub else ""
        if version == "0.4":
            self._put_json(f"{prefix}.zgroup", {"zarr_format": 2})
            if ome:
                self._put_json(f"{prefix}.zattrs", ome)
            return
        attributes = {"ome": {"version": version, **ome}} if ome else {}
        self._put_json(f"{prefix}zarr.json",
                       {"zarr_format": 3, "node_type": "group", "attributes": attributes})

    def _write_label_image(self, name: str, scales: list, shapes: list, kind: str) -> None:
        """Every level again, without the channel axis, as ``labels/<name>/``."""
        layout = self.layout
        version = self.ome_version or "0.4"
        prefix = f"labels/{name}"
        self._write_group("labels", {"labels": [name]}, version)
        depth = layout.chunk_shape[0]
        for level, level_shape in enumerate(shapes):
            source = ts.open(_zarr_spec(self._kvstore(level), layout, level_shape,
                                        zarr3=self._zarr3)).result()
            spatial = tuple(source.shape[1:])
            spec = _zarr_spec(self._sub_kvstore(f"{prefix}/{level}"), layout, spatial,
                              zarr3=self._zarr3, channel=False)
            if self.target is not None:
                self.target.create(spec)
            else:
                target = ts.open(dict(spec, create=True, delete_existing=True)).result()
            for z0 in range(0, spatial[0], depth):
                slab = source[0, z0 : z0 + depth].read().result()
                if self.target is not None:
                    self.target.write(spec, (slice(z0, z0 + depth),), slab)
                else:
                    target[z0 : z0 + depth].write(slab).result()
        values = sorted({c.value for c in layout.classes})
        attributes = {
            "multiscales": multiscales(name, scales, channel=False, kind=kind, version=version),
            "image-label": image_label(classes_for_values(values, layout.classes),
                                       version=version),
        }
        self._write_group(prefix, attributes, version)

    def _convert_hdf5(self) -> None:
        assert self.output is not None
        staged = self._open()
        tmp = _partial_file(self.output)
        try:
            self._write_hdf5(tmp, staged)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(self.output)
        shutil.rmtree(self.staging, ignore_errors=True)

    def _write_hdf5(self, tmp: Path, staged: ts.TensorStore) -> None:
        layout = self.layout
        chunks = (layout.channel_chunk,
                  *[min(c, s) for c, s in zip(layout.chunk_shape, layout.shape, strict=True)])
        with h5py.File(tmp, "w") as f:
            dataset = f.create_dataset("data", shape=(layout.channels, *layout.shape),
                                       dtype=layout.dtype, chunks=chunks, compression="gzip",
                                       compression_opts=1)
            for slab in self._slabs():
                dataset[(slice(None), *slab.slices)] = staged[(slice(None), *slab.slices)] \
                    .read().result()
            dataset.attrs["axistags"] = json.dumps({"axes": [
                {"key": key, "typeFlags": flag, "resolution": 0, "description": ""}
                for key, flag in (("c", 1), ("z", 2), ("y", 2), ("x", 2))
            ]})
            dataset.attrs["element_size_um"] = [v / 1000.0 for v in layout.voxel_size]

    def _convert_tiff(self) -> None:
        assert self.output is not None
        layout = self.layout
        staged = self._open()

        def pages():
            for slab in self._slabs():
                data = staged[(slice(None), *slab.slices)].read().result()
                for z in range(data.shape[1]):
                    for c in range(data.shape[0]):
                        yield data[c, z]

        z, y, x = layout.shape
        vz, vy, vx = (v / 1000.0 for v in layout.voxel_size)
        tmp = _partial_file(self.output)
        try:
            tifffile.imwrite(
                tmp, data=pages(), shape=(z, layout.channels, y, x), dtype=layout.dtype,
                imagej=True, resolution=(1.0 / vx, 1.0 / vy),
                metadata={"axes": "ZCYX", "spacing": vz, "unit": "um"},
            )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(self.output)
        shutil.rmtree(self.staging, ignore_errors=True)
