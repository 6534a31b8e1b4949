"""The viewer: client files, and the state protocol the bundled client speaks."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from ilastik_web.server.context import CONTEXT_KEY
from ilastik_web.server.layers import VersionedLayer
from ilastik_web.server.viewer_state import ORIGIN
from neuroglancer_ext.static import StaticClient


async def read_event(resp, timeout: float = 5.0) -> dict:
    """The next ``data:`` message of an event stream (comments skipped)."""
    while True:
        line = await asyncio.wait_for(resp.content.readline(), timeout)
        if not line:
            raise AssertionError("event stream ended")
        if line.startswith(b"data: "):
            return json.loads(line[6:])


async def test_index_and_bundles_served(client):
    resp = await client.get("/v/main/")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    page = await resp.text()
    scripts = [part.split('"')[0] for part in page.split('src="')[1:]]
    assert any(name.startswith("main.") for name in scripts)
    js = await client.get(f"/v/main/{scripts[-1]}", headers={"Accept-Encoding": "gzip"})
    assert js.status == 200
    assert js.headers["Content-Type"].startswith("application/javascript")
    assert "immutable" in js.headers["Cache-Control"]
    assert len(await js.read()) > 1000


@pytest.mark.parametrize("name", ["../setup.cfg", "nope.js", "index.py"])
async def test_bad_client_file_is_404(client, name):
    resp = await client.get(f"/v/main/{name}")
    assert resp.status == 404


async def test_unknown_session_is_404(client):
    assert (await client.get("/v/other/")).status == 404
    assert (await client.get("/events/other?c=a")).status == 404


async def test_viewer_redirects_to_trailing_slash(client):
    resp = await client.get("/v/main?token=t", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "main/?token=t"


def test_injected_script_lands_before_body_end():
    static = StaticClient()
    static.inject_script("window.ilastikWebExtension = 1; // </script> stays inside")
    page = static.get("index.html").body.decode()
    assert page.index("window.ilastikWebExtension") < page.index("</body>")
    assert "<\\/script> stays inside" in page
    assert static.get("").body == static.get("index.html").body


async def test_events_push_initial_state_with_client_urls(client):
    resp = await client.get(
        "/events/main?c=client1&gs=&gc=", headers={"X-Forwarded-Host": "viewer.example"}
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    messages = {m["k"]: m for m in [await read_event(resp), await read_event(resp)]}
    state = messages["s"]["s"]
    (layer,) = state["layers"]
    assert layer["type"] == "image"
    assert layer["source"] == "precomputed://http://viewer.example/precomputed/raw/v0"
    assert ORIGIN not in json.dumps(state)
    assert state["dimensions"] == {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [4e-8, "m"]}
    assert state["position"] == [135, 150, 2.5]
    assert state["crossSectionScale"] == pytest.approx(300 / 340)
    assert state["layout"] == "4panel"
    assert layer["shaderControls"]["normalized"]["range"][0] < 20
    resp.close()


async def test_state_round_trip_between_two_clients(client):
    a = await client.get("/events/main?c=A&gs=&gc=")
    b = await client.get("/events/main?c=B&gs=&gc=")
    first = {m["k"]: m for m in [await read_event(a), await read_event(a)]}
    await read_event(b), await read_event(b)
    state = first["s"]["s"]
    state["position"] = [1, 2, 3]
    resp = await client.post(
        "/state/main", json={"s": state, "g": 7, "pg": first["s"]["g"], "c": "A"}
    )
    assert resp.status == 200
    new_generation = (await resp.json())["g"]
    assert new_generation == "A/7"
    # B sees A's change; A is not sent its own change back
    pushed = await read_event(b)
    assert pushed["k"] == "s" and pushed["s"]["position"] == [1, 2, 3]
    assert pushed["g"] == "A/7"
    with pytest.raises(asyncio.TimeoutError):
        await read_event(a, timeout=0.3)
    # a change on a stale but remembered generation is rebased (B's layout on top of A's
    # position) and pushed to everyone, B included; a forgotten base is refused
    b_state = dict(first["s"]["s"], layout="xy")
    stale = await client.post(
        "/state/main", json={"s": b_state, "g": 1, "pg": first["s"]["g"], "c": "B"}
    )
    assert stale.status == 200
    merged = await read_event(b)
    assert merged["g"] == (await stale.json())["g"] and not merged["g"].startswith("B/")
    assert merged["s"]["layout"] == "xy" and merged["s"]["position"] == [1, 2, 3]
    forgotten = await client.post(
        "/state/main", json={"s": state, "g": 2, "pg": "never-was", "c": "B"}
    )
    assert forgotten.status == 412
    # the state a client sent back is stored with the placeholder origin again
    session = client.app[CONTEXT_KEY].default_session
    stored, _ = session.shared.snapshot()
    assert stored["layers"][0]["source"].startswith(f"precomputed://{ORIGIN}/")
    a.close()
    b.close()


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"s": {}}', b'{"s": 1, "g": 1, "c": "x"}'])
async def test_malformed_state_post_is_400(client, body):
    resp = await client.post("/state/main", data=body,
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert "error" in await resp.json()


async def test_new_layer_version_reaches_open_viewers(aiohttp_client, make_app, raw_layer,
                                                      make_volume):
    predictions = VersionedLayer("pred", name="predictions")
    client = await aiohttp_client(make_app([raw_layer, predictions]))
    stream = await client.get("/events/main?c=A&gs=&gc=")
    initial = {m["k"]: m for m in [await read_event(stream), await read_event(stream)]}
    sources = [layer["source"] for layer in initial["s"]["s"]["layers"]]
    assert sources[1].endswith("/precomputed/pred/v0")

    volume, _ = make_volume((1, 2, 16, 16))
    # published from a worker thread, as a trainer would
    worker = threading.Thread(target=predictions.publish, args=(volume,))
    worker.start()
    worker.join()
    pushed = await read_event(stream)
    assert pushed["k"] == "s"
    sources = [layer["source"] for layer in pushed["s"]["layers"]]
    assert sources[0].endswith("/precomputed/raw/v0")
    assert sources[1].endswith("/precomputed/pred/v1")
    assert pushed["s"]["layers"][1]["name"] == "predictions"
    stream.close()


async def test_action_invokes_server_callback(client):
    session = client.app[CONTEXT_KEY].default_session
    seen: list[dict] = []
    session.add_action("save", seen.append)
    resp = await client.post("/action/main", json={"action": "save", "state": {"x": 1}})
    assert resp.status == 200
    assert seen == [{"x": 1}]
    config, _ = session.config.snapshot()
    assert config["actions"] == ["save"]


async def test_credentials_are_refused(client):
    resp = await client.post("/credentials/main", json={"key": "gcs"})
    assert resp.status == 403


def test_layer_event_handles_a_list_of_sources_mid_swap(volume_and_data):
    from ilastik_web.server.layers import VersionedLayer
    from ilastik_web.server.viewer_state import apply_layer_event, find_layer, layer_source

    layer = VersionedLayer("p-labels", "image")
    for _ in range(3):
        layer.publish(volume_and_data[0])
    old = layer_source("p-labels", "v1")
    newer = layer_source("p-labels", "v2")
    state = {"layers": [{"name": "labels", "source": [old, {"url": newer, "x": 1}]}]}
    assert find_layer(state, "p-labels") is state["layers"][0]
    updated = apply_layer_event(state, "changed", layer)
    assert updated["layers"][0]["source"] == {"url": layer_source("p-labels", "v3"), "x": 1}


async def test_labels_stay_on_top_when_layers_are_added(aiohttp_client, make_app, raw_layer,
                                                        make_volume):
    from ilastik_web.server.display import LayerDisplay

    labels = VersionedLayer("labels", "segmentation", name="labels",
                            display=LayerDisplay(on_top=True))
    early = VersionedLayer("early", name="early")
    app = make_app([raw_layer, labels, early])
    client = await aiohttp_client(app)
    session = client.app[CONTEXT_KEY].default_session
    state, _ = session.shared.snapshot()
    assert [layer["name"] for layer in state["layers"]] == ["vol", "early", "labels"]
    client.app[CONTEXT_KEY].registry.add(VersionedLayer("pred", name="predictions"))
    state, _ = session.shared.snapshot()
    assert [layer["name"] for layer in state["layers"]] == ["vol", "early", "predictions",
                                                           "labels"]
