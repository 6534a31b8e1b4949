"""A scripted session on the demo volume: strokes on three slices, accuracy far away."""

from __future__ import annotations

import numpy as np
import pytest

from ilastik_web.abc import Box
from ilastik_web.classify.simulated_annotator import scribbles
from ilastik_web.demo import ensure_demo
from ilastik_web.project import Project
from ilastik_web.sources import open_source

PAINTED = (24, 64, 104)
# Boxes (z0, z1) at least 12 slices from every painted slice, sampled in y/x below.
EVALUATED_Z = ((40, 48), (84, 92))


@pytest.mark.slow
def test_demo_session_accuracy_far_from_strokes(tmp_path_factory):
    demo = ensure_demo(tmp_path_factory.mktemp("demo-cache"))
    source = open_source(str(demo.raw_path))
    truth_volume = open_source(str(demo.labels_path)).base
    truth = truth_volume.read(truth_volume.bounds)[0]
    names = [demo.class_names[v] for v in sorted(demo.class_names)]
    project = Project.create(None, source, classes=names)
    strokes = scribbles(truth, slices=PAINTED, strokes_per_class=5, length=8, rng=0)
    for stroke in strokes:
        project.paint(stroke)
    labelled = sum(project.labels.snapshot().counts().values())
    project.train()
    correct = total = 0
    per_class = np.zeros((2, len(names)), np.int64)
    for z0, z1 in EVALUATED_Z:
        for y0, x0 in ((0, 0), (192, 320), (384, 128)):
            box = Box((z0, y0, x0), (z1, y0 + 128, x0 + 128))
            seg = np.argmax(project.predict(box), axis=0) + 1
            want = truth[box.slices]
            correct += int((seg == want).sum())
            total += want.size
            for v in range(1, len(names) + 1):
                per_class[0, v - 1] += int(((seg == v) & (want == v)).sum())
                per_class[1, v - 1] += int((want == v).sum())
    accuracy = correct / total
    recall = {n: round(float(a / max(b, 1)), 3)
              for n, a, b in zip(names, per_class[0], per_class[1], strict=True)}
    majority = per_class[1].max() / total
    print(f"\ndemo session: {len(strokes)} strokes on z={PAINTED}, {labelled} labelled voxels; "
          f"accuracy {accuracy:.3f} on {total} voxels >= 12 slices from any stroke; "
          f"recall per class {recall}; majority-class baseline {majority:.3f}")
    assert accuracy > 0.8 and accuracy > majority + 0.15
