"""Strokes the server acknowledged survive ``kill -9`` of the server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import tifffile

SHAPE = (12, 96, 80)


def _start(tmp_path, volume, project):
    env = {**os.environ, "ILASTIK_WEB_DATA": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ilastik_web", "serve", str(volume), "--project", str(project),
         "--port", "0", "--no-browser", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://"), f"server did not start: {url!r}"
    return proc, url.split("/v/")[0]


def _post(base, path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _get(base, path):
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return response.read()


@pytest.mark.slow
def test_acknowledged_strokes_survive_kill_9(tmp_path):
    volume = tmp_path / "vol.tif"
    tifffile.imwrite(volume, np.random.default_rng(0).integers(0, 4000, SHAPE, dtype=np.uint16))
    project_dir = tmp_path / "proj"
    proc, base = _start(tmp_path, volume, project_dir)
    acked: list[tuple[int, dict]] = []
    stop = threading.Event()

    def painter() -> None:
        i = 0
        while not stop.is_set():
            z = i % SHAPE[0]
            stroke = {"points_xyz": [[5.5 + i % 60, 10.5, z + 0.5], [5.5 + i % 60, 80.5, z + 0.5]],
                      "radius": 1.0, "label": 1 + i % 2}
            try:
                result = _post(base, "/api/projects/proj/strokes", stroke)
            except (urllib.error.URLError, ConnectionError, OSError):
                return  # the server died under us: this stroke was never acknowledged
            acked.append((result["revision"], stroke))
            i += 1

    thread = threading.Thread(target=painter)
    thread.start()
    while len(acked) < 25:
        thread.join(0.05)
        assert thread.is_alive() or len(acked) >= 25, "painter stopped early"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    thread.join()

    proc, base = _start(tmp_path, volume, project_dir)
    try:
        project = json.loads(_get(base, "/api/projects/proj"))
        last_acked = acked[-1][0]
        assert project["label_revision"] >= last_acked
        version = project["layers"]["labels"]["version"]
        # Every acknowledged stroke's voxels carry its label (strokes i < 60 never overlap,
        # and the one in flight at the kill, persisted or not, paints a column of its own).
        final: dict[tuple[int, int], int] = {}
        for _, stroke in acked:
            x0, _, z0 = stroke["points_xyz"][0]
            final[(int(z0), int(x0))] = stroke["label"]
        chunks = {}
        for z in range(SHAPE[0]):
            body = _get(base, f"/precomputed/proj-labels/{version}/s0/"
                              f"0-{SHAPE[2]}_0-{SHAPE[1]}_{z}-{z + 1}")
            chunks[z] = np.frombuffer(body, np.uint8).reshape(SHAPE[1], SHAPE[2])
        for (z, x), label in final.items():
            assert chunks[z][45, x] == label, (z, x)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _request(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _served_labels(base, project_id="proj"):
    project = json.loads(_get(base, f"/api/projects/{project_id}"))
    version = project["layers"]["labels"]["version"]
    planes = [np.frombuffer(_get(base, f"/precomputed/{project_id}-labels/{version}/s0/"
                                       f"0-{SHAPE[2]}_0-{SHAPE[1]}_{z}-{z + 1}"), np.uint8)
              .reshape(SHAPE[1], SHAPE[2]) for z in range(SHAPE[0])]
    return project, np.stack(planes)


def _model_project():
    """An in-memory project that the acknowledged operations are replayed on."""
    from ilastik_web.abc import MultiscaleVolume
    from ilastik_web.project import Project
    from ilastik_web.sources.array import ArrayVolume

    source = MultiscaleVolume("m", [ArrayVolume(np.zeros((1, *SHAPE), np.uint16),
                                                (1.0, 1.0, 1.0))])
    return Project.create(None, source, classes=["Label 1", "Label 2"])


def _replay(operations):
    from ilastik_web.abc import Box
    from ilastik_web.server.routes_project import stroke_from_json

    model = _model_project()
    for op, arg in operations:
        if op == "stroke":
            model.paint(stroke_from_json(arg))
        elif op == "undo":
            model.undo()
        elif op == "redo":
            model.redo()
        elif op == "delete":
            model.remove_class(arg)
        elif op == "add":
            model.add_class(arg)
    labels = model.labels.read(Box.from_shape(SHAPE))
    return model.labels.revision, [c.value for c in model.classes], labels


def _random_operation(rng, classes):
    kind = rng.choice(["stroke"] * 6 + ["undo", "redo", "delete", "add"])
    if kind == "delete" and len(classes) > 1:
        return "delete", int(rng.choice(classes))
    if kind == "add" and len(classes) < 6:
        return "add", f"class {rng.integers(1000)}"
    if kind in ("undo", "redo"):
        return kind, None
    x, y, z = rng.uniform(2, SHAPE[2] - 2), rng.uniform(2, SHAPE[1] - 2), rng.integers(SHAPE[0])
    points = [[x, y, z + 0.5], [x + rng.uniform(-20, 20), y + rng.uniform(-20, 20), z + 0.5]]
    return "stroke", {"points_xyz": points, "radius": float(rng.uniform(0.5, 4)),
                      "label": int(rng.choice([0, *classes]))}


def _send(base, op, arg):
    if op == "stroke":
        return _request(base, "POST", "/api/projects/proj/strokes", arg)
    if op in ("undo", "redo"):
        return _request(base, "POST", f"/api/projects/proj/{op}", {})
    if op == "delete":
        return _request(base, "DELETE", f"/api/projects/proj/classes/{arg}")
    return _request(base, "POST", "/api/projects/proj/classes", {"name": arg})


@pytest.mark.slow
def test_random_edits_survive_kill_9_exactly(tmp_path):
    """Strokes, erasing, undo, redo, class deletion and creation in random order, killed at
    random: after restart the labels and classes are those of the acknowledged operations
    (plus, maybe, the one in flight), with none lost."""
    rng = np.random.default_rng(1)
    volume = tmp_path / "vol.tif"
    tifffile.imwrite(volume, rng.integers(0, 4000, SHAPE, dtype=np.uint16))
    project_dir = tmp_path / "proj"
    acked: list[tuple[str, object]] = []
    for trial in range(3):
        proc, base = _start(tmp_path, volume, project_dir)
        inflight: list[tuple[str, object]] = []
        stop = threading.Event()
        target = len(acked) + int(rng.integers(5, 30))

        def served_classes(base=base) -> list[int]:
            return [c["value"] for c in json.loads(_get(base, "/api/projects/proj"))["classes"]]

        def client(base=base, inflight=inflight, stop=stop):
            classes = served_classes()
            while not stop.is_set():
                op, arg = _random_operation(rng, classes)
                inflight[:] = [(op, arg)]
                try:
                    answer = _send(base, op, arg)
                except urllib.error.HTTPError as exc:
                    raise AssertionError(f"{op} {arg}: {exc.code} {exc.read()!r}") from None
                except (urllib.error.URLError, ConnectionError, OSError):
                    return  # killed: the operation in flight was never acknowledged
                acked.append((op, arg))
                inflight[:] = []
                if op == "delete":
                    classes.remove(arg)
                elif op == "add":
                    classes.append(answer["value"])
                elif op in ("undo", "redo"):  # may bring back or take away a class
                    try:
                        classes = served_classes()
                    except (urllib.error.URLError, ConnectionError, OSError):
                        return

        thread = threading.Thread(target=client)
        thread.start()
        while len(acked) < target and thread.is_alive():
            thread.join(0.05)
        assert len(acked) >= target, "the client stopped early"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        thread.join()
        proc, base = _start(tmp_path, volume, project_dir)
        try:
            project, labels = _served_labels(base)
            served = (project["label_revision"], [c["value"] for c in project["classes"]])
            candidates = [_replay(acked)]
            if inflight:
                candidates.append(_replay(acked + inflight))
            matches = [c for c in candidates if (c[0], c[1]) == served
                       and np.array_equal(c[2], labels)]
            assert matches, (trial, served, [(c[0], c[1]) for c in candidates])
            if matches[0] is candidates[-1] and len(candidates) == 2:
                acked.extend(inflight)  # it was persisted: it is part of the history now
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.slow
def test_concurrent_painters_and_training_survive_kill_9(tmp_path):
    """Six painters on disjoint voxels with live training and publishing going on; each
    kill (several during training) loses no acknowledged stroke."""
    rng = np.random.default_rng(2)
    volume = tmp_path / "vol.tif"
    tifffile.imwrite(volume, rng.integers(0, 4000, SHAPE, dtype=np.uint16))
    project_dir = tmp_path / "proj"
    acked: dict[tuple[int, int, int], int] = {}
    lock = threading.Lock()
    next_spot = [0]
    trainings = 0
    for trial in range(4):
        proc, base = _start(tmp_path, volume, project_dir)
        stop = threading.Event()

        def painter(base=base, stop=stop):
            while not stop.is_set():
                with lock:
                    spot = next_spot[0]
                    next_spot[0] += 1
                z, y, x = spot % SHAPE[0], 2 + 3 * (spot // SHAPE[0] % 30), \
                    2 + 3 * (spot // SHAPE[0] // 30 % 26)
                label = 1 + spot % 2
                body = {"points_xyz": [[x + 0.5, y + 0.5, z + 0.5]], "radius": 0.5,
                        "label": label}
                try:
                    _request(base, "POST", "/api/projects/proj/strokes", body)
                except (urllib.error.URLError, ConnectionError, OSError):
                    return
                with lock:
                    acked[(z, y, x)] = label

        threads = [threading.Thread(target=painter) for _ in range(6)]
        for thread in threads:
            thread.start()
        target = len(acked) + int(rng.integers(20, 80))
        while len(acked) < target and any(t.is_alive() for t in threads):
            threads[0].join(0.05)
        if trial % 2:
            # Kill while a training (or the publishing after it) is under way: painting
            # stops so the debounced retraining starts.
            stop.set()
            for thread in threads:
                thread.join()
            generation = json.loads(_get(base, "/api/projects/proj"))["generation"]
            for _ in range(60_000):
                project = json.loads(_get(base, "/api/projects/proj"))
                if project["training"]["state"] in ("features", "training") or \
                        project["generation"] != generation:
                    break
                threads[0].join(0.01)
            trainings += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        for thread in threads:
            thread.join()
        proc, base = _start(tmp_path, volume, project_dir)
        try:
            _, labels = _served_labels(base)
            lost = [spot for spot, label in acked.items() if labels[spot] != label]
            assert lost == [], (trial, len(lost), len(acked))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert trainings == 2


# -- instance edits ---------------------------------------------------------------------------

INSTANCES = "project-proj-sam-objects"


def _square(x, y, size, z):
    return [[x, y, z], [x + size, y, z], [x + size, y + size, z], [x, y + size, z]]


def _instance_operation(rng, ids):
    """A random edit, mostly valid for the objects ``ids`` the model holds now."""
    z = int(rng.integers(SHAPE[0])) + 0.5
    x, y = float(rng.uniform(0, SHAPE[2] - 20)), float(rng.uniform(0, SHAPE[1] - 20))
    kinds = ["polygon"] * 3 + ["stroke", "undo", "redo"]
    if ids:
        kinds += ["add_to", "brush", "erase", "trim", "delete", "merge"]
    kind = str(rng.choice(kinds))
    pick = int(rng.choice(ids)) if ids else None
    if kind == "polygon":
        return kind, {"vertices_xyz": _square(x, y, float(rng.uniform(3, 18)), z)}
    if kind == "add_to":
        return "polygon", {"vertices_xyz": _square(x, y, 6, z), "object_id": pick}
    if kind in ("brush", "erase"):
        return "brush", {"points_xyz": [[x, y, z], [x + 15, y + 5, z]], "radius": 2.0,
                         "object_id": pick, "erase": kind == "erase"}
    if kind == "trim":
        return "cut", {"vertices_xyz": _square(x, y, 30, z), "object_id": pick,
                       "mode": "trim", "remove": bool(rng.integers(2))}
    if kind == "delete":
        return "delete", pick
    if kind == "merge":
        other = int(rng.choice(ids))
        return "merge", {"object_ids": [pick, other]}
    if kind == "stroke":
        return kind, {"points_xyz": [[x, y, z], [x + 10, y, z]], "radius": 1.5, "label": 1}
    return kind, None


def _send_instance(base, op, arg):
    if op == "stroke":
        return _request(base, "POST", "/api/projects/proj/strokes", arg)
    if op in ("undo", "redo"):
        return _request(base, "POST", f"/api/projects/proj/{op}", {})
    if op == "delete":
        return _request(base, "DELETE", f"/api/instances/{INSTANCES}/objects/{arg}")
    return _request(base, "POST", f"/api/instances/{INSTANCES}/{op}", arg)


def _apply_instance(model, op, arg):
    """The Python API's version of one operation (what the route does)."""
    from ilastik_web.errors import InvalidRequestError, NotFoundError
    from ilastik_web.sam.geometry import SliceRef, slice_index_of
    from ilastik_web.sam.instance_geometry import polygon_mask
    from ilastik_web.server.routes_project import stroke_from_json

    store = model.instances
    try:
        if op == "stroke":
            model.paint(stroke_from_json(arg))
        elif op == "undo":
            model.undo()
        elif op == "redo":
            model.redo()
        elif op == "delete":
            store.remove(arg)
        elif op == "merge":
            store.merge(*arg["object_ids"])
        elif op == "brush":
            store.brush(stroke_from_json({**arg, "label": 1}), arg["object_id"],
                        erase=arg["erase"])
        else:
            ref = SliceRef(SHAPE, "xy", slice_index_of(arg["vertices_xyz"], "xy"))
            box, mask = polygon_mask(ref, arg["vertices_xyz"])
            if op == "polygon":
                store.paint_polygon(ref, box, mask, arg.get("object_id"))
            else:
                store.cut(arg["object_id"], box, mask, remove=arg["remove"])
    except (InvalidRequestError, NotFoundError):
        return False
    return True


def _replay_instances(operations):
    from ilastik_web.abc import Box

    model = _model_project()
    for op, arg in operations:
        _apply_instance(model, op, arg)
    return (model.instances.read(Box.from_shape(SHAPE)), model.labels.read(Box.from_shape(SHAPE)))


def _served_instances(base):
    layer = json.loads(_get(base, f"/api/instances/{INSTANCES}"))
    planes = [np.frombuffer(_get(base, f"/precomputed/{INSTANCES}/{layer['version']}/s0/"
                                       f"0-{SHAPE[2]}_0-{SHAPE[1]}_{z}-{z + 1}"), "<u4")
              .reshape(SHAPE[1], SHAPE[2]) for z in range(SHAPE[0])]
    return np.stack(planes)


@pytest.mark.slow
def test_instance_edits_survive_kill_9_exactly(tmp_path):
    """Polygons, added regions, object brush and eraser, trims, merges, deletions, label
    strokes and undo/redo across both, killed at random: after restart the served objects
    and labels are those of the acknowledged operations (plus, maybe, the one in flight)."""
    rng = np.random.default_rng(3)
    volume = tmp_path / "vol.tif"
    tifffile.imwrite(volume, rng.integers(0, 4000, SHAPE, dtype=np.uint16))
    project_dir = tmp_path / "proj"
    acked: list[tuple[str, object]] = []
    model = [_model_project()]  # follows the operations sent, to pick valid ones
    for trial in range(3):
        proc, base = _start(tmp_path, volume, project_dir)
        _request(base, "POST", "/api/instances/layers", {"project_id": "proj"})
        inflight: list[tuple[str, object]] = []
        stop = threading.Event()
        target = len(acked) + int(rng.integers(8, 30))

        def client(base=base, inflight=inflight, stop=stop):
            while not stop.is_set():
                op, arg = _instance_operation(rng, model[0].instances.object_ids)
                inflight[:] = [(op, arg)]
                expect_ok = _apply_instance(model[0], op, arg)  # taken back if unacked
                try:
                    _send_instance(base, op, arg)
                    assert expect_ok, f"the server accepted {op} {arg}, the API refuses it"
                except urllib.error.HTTPError as exc:
                    assert not expect_ok and 400 <= exc.code < 500, (op, arg, exc.code,
                                                                      exc.read())
                except (urllib.error.URLError, ConnectionError, OSError):
                    return  # killed: the operation in flight was never acknowledged
                acked.append((op, arg))
                inflight[:] = []

        thread = threading.Thread(target=client)
        thread.start()
        while len(acked) < target and thread.is_alive():
            thread.join(0.05)
        assert len(acked) >= target, "the client stopped early"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        thread.join()
        proc, base = _start(tmp_path, volume, project_dir)
        try:
            objects = _served_instances(base)
            _, labels = _served_labels(base)
            candidates = [_replay_instances(acked)]
            if inflight:
                candidates.append(_replay_instances(acked + inflight))
            matches = [i for i, (inst, lab) in enumerate(candidates)
                       if np.array_equal(inst, objects) and np.array_equal(lab, labels)]
            assert matches, (trial, len(acked), [np.count_nonzero(c[0] != objects)
                                                 for c in candidates])
            if matches[0] == 1:
                acked.extend(inflight)  # it was persisted: part of the history now
            elif inflight:
                model[0] = _model_copy(acked)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _model_copy(operations):
    model = _model_project()
    for op, arg in operations:
        _apply_instance(model, op, arg)
    return model
