"""Fine-tuning through micro-sam's real training code: a tiny model, a few CPU steps, from a
training set exported from a collection; the result loads as a model and answers prompts.
No quality is asserted (random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from sam_fixtures import blobs, build_tiny_sam

from ilastik_web.collections import Collection, ItemAnnotation
from ilastik_web.collections.trainingset import export_training_set
from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam import ModelSpec, SamService, SamSettings, load_model
from ilastik_web.sam.embeddings import Cancelled
from ilastik_web.sam.finetune import FinetuneSettings, finetune
from ilastik_web.sources.array import ArrayVolume

pytest.importorskip("micro_sam.training")

TINY_STEPS = FinetuneSettings(iterations=3, patch_shape=(48, 48), n_objects_per_batch=2,
                              n_sub_iteration=2)


@pytest.fixture
def training_set(tmp_path):
    from scipy import ndimage

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"img{i}.tif", blobs((1, 56, 60), seed=i)[0, 0])
    collection = Collection.from_folder(folder)
    for i in range(3):
        image = blobs((1, 56, 60), seed=i)[0]
        labels = ndimage.label(image > 100)[0].astype(np.uint32)
        ids = [int(v) for v in np.unique(labels) if v]
        collection.save(f"img{i}", ItemAnnotation(labels, {v: "cell" for v in ids},
                                                  {v: "sam" for v in ids}))
    out = tmp_path / "set"
    export_training_set(collection, out, layout="tiff", val_fraction=0.34)
    return out


def test_finetune_writes_a_checkpoint_the_server_prompts_with(training_set, tmp_path,
                                                               tiny_checkpoint):
    seen = []
    result = finetune(ModelSpec("tiny", "vit_b", tiny_checkpoint), training_set,
                      tmp_path / "models" / "tuned.pt", TINY_STEPS, device="cpu",
                      progress=lambda done, total: seen.append((done, total)))
    assert result["iterations"] == 3 and result["steps_per_s"] > 0
    assert seen and seen[-1][1] == 3 and all(done <= 3 for done, _ in seen)
    tuned = load_model(ModelSpec("tuned", "vit_b", tmp_path / "models" / "tuned.pt"), "cpu")
    before = build_tiny_sam().state_dict()
    after = tuned.sam.state_dict()
    assert after.keys() == before.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    assert list((tmp_path / "models").iterdir()) == [tmp_path / "models" / "tuned.pt"]

    service = SamService(SamSettings(models=(ModelSpec("tuned", "vit_b",
                                                       tmp_path / "models" / "tuned.pt"),),
                                     device="cpu"))
    try:
        volume = ArrayVolume(blobs((2, 40, 50)), (1.0, 1.0, 1.0), key="tuned-blobs")
        mask = service.prompt(volume, "layer:x", "xy", 1, points_xyz=[[20.5, 20.5, 1.5]],
                              point_labels=[1], model="tuned")
        assert mask.model_name == "tuned"
    finally:
        service.close()


def test_finetune_cancels_and_refuses_bad_sets(training_set, tmp_path, tiny_checkpoint):
    spec = ModelSpec("tiny", "vit_b", tiny_checkpoint)
    with pytest.raises(Cancelled):
        finetune(spec, training_set, tmp_path / "never.pt", TINY_STEPS, device="cpu",
                 should_stop=lambda: True)
    assert not (tmp_path / "never.pt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".finetune-")]
    with pytest.raises(InvalidRequestError, match="training set"):
        finetune(spec, tmp_path, tmp_path / "x.pt", TINY_STEPS, device="cpu")
    with pytest.raises(InvalidRequestError, match="iterations"):
        FinetuneSettings(iterations=0)


def test_finetune_task_offers_the_new_model(training_set, tmp_path, make_service):
    service = make_service()
    output = tmp_path / "round2.pt"
    task = service.finetune(training_set, output, name="round2", settings=TINY_STEPS)
    assert task.wait(600), task.to_json()
    assert task.state == "done", task.to_json()
    assert task.progress == 1.0 and task.result["model"] == "round2"
    assert "round2" in service.models.names
    described = {m["name"]: m for m in service.models.describe()}
    assert described["round2"]["available"] and described["round2"]["model_type"] == "vit_b"
    volume = ArrayVolume(blobs((2, 40, 50)), (1.0, 1.0, 1.0), key="round2-blobs")
    mask = service.prompt(volume, "layer:x", "xy", 0, points_xyz=[[10.5, 10.5, 0.5]],
                          point_labels=[1], model="round2")
    assert mask.model_name == "round2"
    with pytest.raises(InvalidRequestError, match="already named"):
        service.finetune(training_set, tmp_path / "other.pt", name="round2",
                         settings=TINY_STEPS)
    with pytest.raises(InvalidRequestError, match="exists"):
        service.finetune(training_set, output, name="round3", settings=TINY_STEPS)


@pytest.mark.slow
def test_cli_loop_export_then_finetune(tmp_path, tiny_checkpoint):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from scipy import ndimage

    root = Path(__file__).resolve().parents[2]
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        tifffile.imwrite(folder / f"c{i}.tif", blobs((1, 56, 60), seed=i)[0, 0])
    collection = Collection.from_folder(folder)
    for i in range(2):
        labels = ndimage.label(blobs((1, 56, 60), seed=i)[0] > 100)[0].astype(np.uint32)
        collection.save(f"c{i}", ItemAnnotation(labels))
    env = {**os.environ, "PYTHONPATH": str(root)}
    cli = [sys.executable, "-m", "ilastik_web"]
    done = subprocess.run([*cli, "collection-export", str(folder), "--output",
                           str(tmp_path / "set"), "--val-fraction", "0.5"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["train"] == 1
    done = subprocess.run([*cli, "sam-finetune", str(tmp_path / "set"), "--sam-model",
                           f"vit_b:{tiny_checkpoint}", "--output", str(tmp_path / "t.pt"),
                           "--iterations", "2", "--patch", "48", "--objects", "2",
                           "--sam-device", "cpu", "--log-level", "WARNING"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["iterations"] == 2
    assert load_model(ModelSpec("t", "vit_b", tmp_path / "t.pt"), "cpu").image_size == 256
    again = subprocess.run([*cli, "collection-export", str(folder), "--output",
                            str(tmp_path / "set")], capture_output=True, text=True, env=env,
                           timeout=300)
    assert again.returncode == 2 and "exists" in again.stderr
