"""Three-way merge of viewer states: a client's change on a stale base keeps the
server's newer layer versions and the client's own edits."""

from __future__ import annotations

from ilastik_web.server.viewer_state import ORIGIN, rebase_state


def src(layer, version):
    return f"precomputed://{ORIGIN}/precomputed/{layer}/{version}"


BASE = {
    "position": [1, 2, 3],
    "layout": "4panel",
    "layers": [
        {"type": "image", "name": "raw", "source": src("raw", "v0")},
        {"type": "image", "name": "predictions", "source": src("pred", "v1"), "opacity": 0.5},
    ],
}


def test_server_version_change_and_client_camera_both_survive():
    theirs = {**BASE, "layers": [BASE["layers"][0],
                                 {**BASE["layers"][1], "source": src("pred", "v2")}]}
    mine = {**BASE, "position": [9, 9, 9]}
    out = rebase_state(BASE, mine, theirs)
    assert out["position"] == [9, 9, 9]
    assert out["layers"][1]["source"] == src("pred", "v2")


def test_client_layer_edit_keeps_the_new_source():
    theirs = {**BASE, "layers": [BASE["layers"][0],
                                 {**BASE["layers"][1], "source": src("pred", "v2")}]}
    mine = {**BASE, "layers": [
        {**BASE["layers"][0], "visible": False},
        # the client spells the source as an object: same URL, so not a change
        {**BASE["layers"][1], "opacity": 0.9, "source": {"url": src("pred", "v1")}},
    ]}
    out = rebase_state(BASE, mine, theirs)
    assert out["layers"][0]["visible"] is False
    assert out["layers"][1]["opacity"] == 0.9
    assert out["layers"][1]["source"] == src("pred", "v2")


def test_layers_added_and_removed_on_either_side():
    theirs = {**BASE, "layers": [*BASE["layers"],
                                 {"type": "segmentation", "name": "labels",
                                  "source": src("labels", "v1")}]}
    mine = {**BASE, "layers": [BASE["layers"][1],
                               {"type": "image", "name": "mine", "source": "zarr://x"}]}
    out = rebase_state(BASE, mine, theirs)
    assert [layer["name"] for layer in out["layers"]] == ["predictions", "mine", "labels"]


def test_server_setting_kept_when_client_did_not_touch_it():
    theirs = {**BASE, "layout": "xy"}
    mine = {**BASE, "position": [0, 0, 0]}
    out = rebase_state(BASE, mine, theirs)
    assert out["layout"] == "xy" and out["position"] == [0, 0, 0]
    assert rebase_state(BASE, {**BASE, "layout": "3d"}, theirs)["layout"] == "3d"
