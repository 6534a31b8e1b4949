"""The on-disk embedding cache keeps to its size limit, evicting least recently used."""

from __future__ import annotations

import os

import pytest

from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam import ModelSpec, load_model
from ilastik_web.sam.embeddings import EmbeddingStore
from ilastik_web.sam.geometry import SliceRef


def test_lru_eviction_keeps_the_limit(tiny_checkpoint, volume, tmp_path):
    model = load_model(ModelSpec("tiny", "vit_b", tiny_checkpoint), device="cpu")
    base = volume.base
    refs = [SliceRef(base.shape, "xy", z) for z in range(5)]
    probe = EmbeddingStore(directory=tmp_path / "probe")
    probe.get(base, refs[0], model)
    (entry_bytes,) = [size for _, size, _ in probe.disk_usage()]

    store = EmbeddingStore(directory=tmp_path / "cache", disk_bytes=int(entry_bytes * 3.5))
    paths = {}
    for t, ref in enumerate(refs[:3]):
        store.get(base, ref, model)
        (new,) = {p for _, _, p in store.disk_usage()} - set(paths.values())
        paths[ref.index] = new
        os.utime(new, (1000 + t, 1000 + t))  # distinct use times, oldest first
    # Reading slice 0 again from disk (a fresh store: no memory hit) makes it recent.
    again = EmbeddingStore(directory=tmp_path / "cache", disk_bytes=int(entry_bytes * 3.5))
    assert again.get(base, refs[0], model).computed is False
    assert paths[0].stat().st_mtime > 2000
    again.get(base, refs[3], model)
    again.get(base, refs[4], model)
    left = {p for _, _, p in again.disk_usage()}
    assert sum(size for _, size, _ in again.disk_usage()) <= entry_bytes * 3.5
    assert paths[1] not in left and paths[2] not in left  # the least recently used
    assert paths[0] in left and len(left) == 3


def test_bad_limit():
    with pytest.raises(InvalidRequestError):
        EmbeddingStore(disk_bytes=0)
