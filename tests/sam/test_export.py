"""Batch export of micro-sam's automatic segmentation: the Python API and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sam_fixtures import blobs

from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam import ModelSpec, load_model
from ilastik_web.sam.automatic import AutoParams
from ilastik_web.sam.export import export_automatic
from ilastik_web.sources.array import ArrayVolume

zarr = pytest.importorskip("zarr")
pytest.importorskip("micro_sam")

LOOSE = AutoParams(method="amg", points_per_side=6, pred_iou_thresh=0.0,
                   stability_score_thresh=0.0)
ROOT = Path(__file__).resolve().parents[2]


def test_export_writes_unique_ids_and_resumes(tiny_checkpoint, tmp_path):
    model = load_model(ModelSpec("tiny", "vit_b", tiny_checkpoint), device="cpu")
    volume = ArrayVolume(blobs((4, 40, 48), seed=3), (1.0, 1.0, 1.0), key="export-blobs")
    out = tmp_path / "auto.zarr"
    seen = []
    result = export_automatic(volume, model, LOOSE, out, plane="xz", start=10, stop=13,
                              progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    array = zarr.open_array(str(out), mode="r")
    data = array[...]
    assert data.shape == (4, 40, 48) and data.dtype == np.uint32
    assert not data[:, :10].any() and not data[:, 13:].any()
    per_slice = [set(np.unique(data[:, y])) - {0} for y in (10, 11, 12)]
    assert all(per_slice)
    assert not (per_slice[0] & per_slice[1]) and not (per_slice[1] & per_slice[2])
    assert result["objects"] == len(set().union(*per_slice)) == int(data.max())
    assert array.attrs["done_slices"] == [10, 11, 12]

    again = export_automatic(volume, model, LOOSE, out, plane="xz", start=10, stop=13)
    assert again == result
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[...], data)
    with pytest.raises(InvalidRequestError, match="another export"):
        export_automatic(volume, model, AutoParams(method="amg"), out, plane="xz")


def test_cli_exports_a_tiff_stack(tiny_checkpoint, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, blobs((2, 36, 40), seed=1)[0])
    out = tmp_path / "labels.zarr"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "ilastik_web", "sam-segment", "--sam-model",
            f"tiny=vit_b:{tiny_checkpoint}", "--sam-device", "cpu", "--log-level", "WARNING"]
    done = subprocess.run([*base, str(source), "--output", str(out), "--method", "amg",
                           "--points-per-side", "4", "--pred-iou-thresh", "0",
                           "--stability-score-thresh", "0"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["slices"] == 2 and result["method"] == "amg"
    assert zarr.open_array(str(out), mode="r").shape == (2, 36, 40)

    missing = subprocess.run([*base, str(tmp_path / "nope.tif"), "--output", str(out)],
                             capture_output=True, text=True, env=env, timeout=600)
    assert missing.returncode == 2 and "nope.tif" in missing.stderr
    assert "Traceback" not in missing.stderr
