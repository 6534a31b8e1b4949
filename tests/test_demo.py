"""The built-in demo volume: deterministic, shaped as asked, every class present."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.demo import CLASS_NAMES, VOXEL_SIZE, ensure_demo
from ilastik_web.sources import open_source

SMALL = (24, 96, 112)


def folder_digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    return ensure_demo(tmp_path_factory.mktemp("cache"), shape=SMALL)


def test_same_bytes_when_generated_twice(demo, tmp_path):
    again = ensure_demo(tmp_path, shape=SMALL)
    first = folder_digest(demo.raw_path.parent)
    assert first and first == folder_digest(again.raw_path.parent)
    other_seed = ensure_demo(tmp_path, shape=SMALL, seed=1)
    assert folder_digest(other_seed.raw_path) != folder_digest(demo.raw_path)


def test_shapes_dtypes_and_pyramids(demo):
    raw, labels = open_source(str(demo.raw_path)), open_source(str(demo.labels_path))
    assert raw.base.shape == labels.base.shape == SMALL == demo.shape
    assert (raw.base.dtype, labels.base.dtype) == (np.uint16, np.uint8)
    assert raw.base.voxel_size == labels.base.voxel_size == VOXEL_SIZE == demo.voxel_size
    assert len(raw) == len(labels) >= 2
    assert raw.factors(1) == (1, 2, 2)  # z voxels are already twice as long
    assert max(raw.levels[-1].shape) <= 64


def test_every_class_present_and_not_separable_by_intensity(demo):
    raw = open_source(str(demo.raw_path)).base.read(Box.from_shape(SMALL))[0]
    labels = open_source(str(demo.labels_path)).base.read(Box.from_shape(SMALL))[0]
    present = set(np.unique(labels).tolist())
    assert present == set(CLASS_NAMES) == set(demo.class_names)
    assert 0 not in present
    means = {c: raw[labels == c].mean() for c in CLASS_NAMES}
    assert means[1] < means[3] < means[4] and means[3] < means[2]
    # A single threshold cannot tell membrane from nucleus voxels reliably.
    membrane, nucleus = raw[labels == 2], raw[labels == 4]
    thresholds = np.unique(np.concatenate([membrane, nucleus]))
    best = max(
        0.5 * ((membrane > t).mean() + (nucleus <= t).mean()) for t in thresholds[::7]
    )
    assert best < 0.9


def test_existing_demo_is_reused(demo, monkeypatch):
    import ilastik_web.demo

    stamp = demo.raw_path.stat().st_mtime_ns

    def must_not_generate(*args, **kwargs):
        raise AssertionError("the demo was generated again")

    monkeypatch.setattr(ilastik_web.demo, "generate_demo", must_not_generate)
    again = ensure_demo(demo.raw_path.parent.parent, shape=SMALL)
    assert again == demo and demo.raw_path.stat().st_mtime_ns == stamp


def test_default_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ILASTIK_WEB_CACHE", str(tmp_path / "env-cache"))
    data = ensure_demo(shape=(4, 40, 40))
    assert data.raw_path.is_relative_to(tmp_path / "env-cache")
    assert not [p for p in (tmp_path / "env-cache").iterdir() if p.name.startswith(".demo-")]


@pytest.mark.slow
def test_full_size_demo_generates(tmp_path):
    # How long this takes is a benchmark's business (benchmarks/live_update.py starts
    # from the demo too), not an assertion's: on a busy machine it varies tenfold.
    data = ensure_demo(tmp_path)
    assert data.shape == (128, 512, 512)
    raw = open_source(str(data.raw_path)).base
    assert raw.shape == (128, 512, 512)
