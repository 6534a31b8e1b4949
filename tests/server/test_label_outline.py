"""The labels layer's outline variant, served and kept across label revisions."""

from __future__ import annotations

import numpy as np
from test_project_routes import _stroke, client, served_project  # noqa: F401 (fixtures)

from ilastik_web.labels.outline import outline_2d
from ilastik_web.server.context import CONTEXT_KEY
from ilastik_web.server.viewer_state import apply_layer_event, find_layer, layer_source


async def test_outline_variant_of_each_label_version(client):  # noqa: F811
    resp = await client.post("/api/projects/p/strokes", json=_stroke(1, radius=5.0))
    assert resp.status == 200
    version = (await (await client.get("/api/projects/p")).json())["layers"]["labels"][
        "version"]
    filled = await client.get(f"/precomputed/p-labels/{version}/s0/0-64_0-64_5-6")
    outlined = await client.get(f"/precomputed/p-labels/{version}-outline/s0/0-64_0-64_5-6")
    assert filled.status == outlined.status == 200
    plane = np.frombuffer(await filled.read(), np.uint8).reshape(1, 64, 64)
    rim = np.frombuffer(await outlined.read(), np.uint8).reshape(1, 64, 64)
    assert plane[0, 20, 25] == 1 and rim[0, 20, 25] == 0  # the stroke's middle
    np.testing.assert_array_equal(rim, outline_2d(plane, (1, 2)))
    assert 0 < np.count_nonzero(rim) < np.count_nonzero(plane) / 2
    info = await client.get(f"/precomputed/p-labels/{version}-outline/info")
    assert (await info.json())["type"] == "segmentation"
    for bad in (f"{version}-outline-outline", f"{version}-other", "r0-outline"):
        resp = await client.get(f"/precomputed/p-labels/{bad}/info")
        assert resp.status in (404, 410), bad


async def test_a_new_revision_keeps_the_viewers_outline(client):  # noqa: F811
    ctx = client.app[CONTEXT_KEY]
    layer = ctx.projects.get("p").label_layer
    state = {"layers": [{"type": "segmentation", "name": "labels",
                         "source": layer_source(layer.layer_id, layer.version) + "-outline"}]}
    await client.post("/api/projects/p/strokes", json=_stroke(1))
    updated = apply_layer_event(state, "changed", layer)
    url = find_layer(updated, layer.layer_id)["source"]
    assert url == layer_source(layer.layer_id, layer.version) + "-outline"
    plain = {"layers": [{"type": "segmentation", "name": "labels",
                         "source": layer_source(layer.layer_id, "r0-" + layer.project.uid)}]}
    url = find_layer(apply_layer_event(plain, "changed", layer), layer.layer_id)["source"]
    assert url == layer_source(layer.layer_id, layer.version)
