"""Neuroglancer viewer-state JSON for served layers (pure functions, no IO).

Layer sources are stored with :data:`ORIGIN` in place of the server's address, because
the same state goes to clients that reach the server under different names (localhost,
a reverse proxy): each client gets the placeholder replaced by the address it used, and
state it sends back gets it put back (see :func:`localize` and :func:`canonicalize`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from ilastik_web.abc import MultiscaleVolume
from ilastik_web.server.layers import ServedLayer

#: Stands for the server's external base URL inside stored state.
ORIGIN = "http://ilastik-web.origin"
PRECOMPUTED_PREFIX = "/precomputed"

#: Assumed width of one cross-section panel in screen pixels, to fit the volume in view.
PANEL_PIXELS = 340


def precomputed_path(layer_id: str, version: str) -> str:
    return f"{PRECOMPUTED_PREFIX}/{layer_id}/{version}"


def layer_source(layer_id: str, version: str, *, origin: str = ORIGIN) -> str:
    """``precomputed://<origin>/precomputed/<layer>/<version>``."""
    return f"precomputed://{origin}{precomputed_path(layer_id, version)}"


def _source_prefix(layer_id: str) -> str:
    return f"precomputed://{ORIGIN}{PRECOMPUTED_PREFIX}/{layer_id}/"


def layer_spec(layer: ServedLayer) -> dict[str, Any]:
    """The Neuroglancer layer JSON for ``layer`` at its current version."""
    display = layer.display
    spec: dict[str, Any] = {
        "type": layer.kind,
        "name": layer.name,
        "source": layer_source(layer.layer_id, layer.version),
    }
    if not display.visible:
        spec["visible"] = False
    if display.opacity is not None:
        # Segmentation layers have no "opacity": their cross-section alpha is selectedAlpha.
        spec["opacity" if layer.kind == "image" else "selectedAlpha"] = display.opacity
    if layer.kind == "image":
        if display.shader is not None:
            spec["shader"] = display.shader
        controls = dict(display.shader_controls)
        if display.contrast_range is not None:
            low, high = display.contrast_range
            controls["normalized"] = {"range": [low, high]}
        if controls:
            spec["shaderControls"] = controls
    elif display.segment_colors:
        spec["segmentColors"] = {str(k): v for k, v in display.segment_colors.items()}
    return spec


def _dimensions(voxel_size_zyx: Sequence[float]) -> dict[str, list[Any]]:
    vz, vy, vx = voxel_size_zyx
    return {"x": [vx * 1e-9, "m"], "y": [vy * 1e-9, "m"], "z": [vz * 1e-9, "m"]}


def initial_state(
    layers: Sequence[ServedLayer], reference: MultiscaleVolume | None
) -> dict[str, Any]:
    """The state a new viewer starts from.

    Parameters
    ----------
    layers
        Layers to show, bottom first.
    reference
        The volume whose voxel grid defines the x, y, z dimensions (in nm) and the
        initial view: centred, fitted, cross-sections (only xy for a 2D image).
    """
    ordered = sorted(layers, key=lambda layer: layer.display.on_top)  # stable
    state: dict[str, Any] = {"layers": [layer_spec(layer) for layer in ordered]}
    if reference is None:
        state["layout"] = "4panel"
        return state
    base = reference.base
    z, y, x = base.shape
    vz, vy, vx = base.voxel_size
    state["dimensions"] = _dimensions(base.voxel_size)
    state["position"] = [x / 2, y / 2, z / 2]
    # crossSectionScale is in units of the first (x) dimension per screen pixel.
    extent_x = max(x, y * vy / vx)
    state["crossSectionScale"] = max(extent_x / PANEL_PIXELS, 1e-3)
    state["projectionScale"] = max(x * vx, y * vy, z * vz) / vx * 1.5
    state["layout"] = "xy" if z == 1 else "4panel"
    return state


def _single_url(source: Any) -> str | None:
    if isinstance(source, str):
        return source
    if isinstance(source, dict) and isinstance(source.get("url"), str):
        return source["url"]
    return None


def _source_url(spec: dict[str, Any]) -> str | None:
    """The layer's (last) source URL; a list of sources appears while a client swaps
    versions in place, the newest last."""
    source = spec.get("source")
    if isinstance(source, list):
        urls = [u for u in (_single_url(item) for item in source) if u is not None]
        return urls[-1] if urls else None
    return _single_url(source)


def _set_source_url(spec: dict[str, Any], url: str) -> None:
    source = spec.get("source")
    if isinstance(source, list):
        source = next((item for item in reversed(source) if _single_url(item)), url)
    if isinstance(source, dict):
        spec["source"] = {**source, "url": url}
    else:
        spec["source"] = url


def find_layer(state: dict[str, Any], layer_id: str) -> dict[str, Any] | None:
    """The layer entry of ``state`` showing ``layer_id`` (any version), if any."""
    prefix = _source_prefix(layer_id)
    for spec in state.get("layers", []):
        url = _source_url(spec) if isinstance(spec, dict) else None
        if url is not None and url.startswith(prefix):
            return spec
    return None


def apply_layer_event(
    state: dict[str, Any], event: str, layer: ServedLayer, *, on_top: Sequence[str] = ()
) -> dict[str, Any]:
    """A copy of ``state`` updated for a registry event.

    ``"added"`` appends the layer (unless shown already) — below the layers listed in
    ``on_top`` (ids of layers drawn above the rest) unless it is one of them —
    ``"changed"`` points its source at the current version (adding it if missing),
    ``"removed"`` drops it. Other settings the user made (visibility, shader edits,
    position) are kept.
    """
    new = copy.deepcopy(state)
    layers = new.setdefault("layers", [])
    spec = find_layer(new, layer.layer_id)
    if event == "removed":
        if spec is not None:
            layers.remove(spec)
    elif spec is None:
        above = [find_layer(new, other) for other in on_top if other != layer.layer_id]
        positions = [layers.index(s) for s in above if s is not None]
        if layer.layer_id in on_top or not positions:
            layers.append(layer_spec(layer))
        else:
            layers.insert(min(positions), layer_spec(layer))
    else:
        old = _source_url(spec) or ""
        variant = next((v for v in layer.variants if old.endswith(v)), "")
        _set_source_url(spec, layer_source(layer.layer_id, layer.version) + variant)
    return new


def localize(state_json: str, base_url: str) -> str:
    """Stored state JSON with :data:`ORIGIN` replaced by ``base_url`` for one client."""
    stored = ORIGIN + PRECOMPUTED_PREFIX + "/"
    return state_json.replace(stored, base_url + PRECOMPUTED_PREFIX + "/")


def canonicalize(state: Any, base_url: str) -> Any:
    """State from a client with its ``base_url`` replaced by :data:`ORIGIN` again."""
    text = json.dumps(state)
    text = text.replace(base_url + PRECOMPUTED_PREFIX + "/", ORIGIN + PRECOMPUTED_PREFIX + "/")
    return json.loads(text)


def _rebase_layer(base: dict[str, Any], mine: dict[str, Any],
                  theirs: dict[str, Any]) -> dict[str, Any]:
    """``theirs`` with the settings ``mine`` changed from ``base``; the source follows
    ``theirs`` unless ``mine`` points at another URL."""
    out = copy.deepcopy(theirs)
    for key in set(mine) | set(base):
        if key == "source":
            if _source_url(mine) != _source_url(base):
                out["source"] = mine["source"]
        elif mine.get(key) != base.get(key):
            if key in mine:
                out[key] = mine[key]
            else:
                out.pop(key, None)
    return out


def rebase_state(base: dict[str, Any], mine: dict[str, Any],
                 theirs: dict[str, Any]) -> dict[str, Any]:
    """Three-way merge of viewer states: the changes ``mine`` made to ``base`` applied on
    top of ``theirs`` (the current state, which moved on from ``base`` meanwhile).

    Top-level settings ``mine`` changed win; the rest come from ``theirs``. Layers pair
    up by name: a layer ``mine`` left alone takes ``theirs``'s version (new source URLs
    the server published), one it edited keeps those edits; layers ``mine`` added or
    removed stay added or removed, layers the server added meanwhile are kept.
    """
    out = copy.deepcopy(theirs)
    for key in set(mine) | set(base):
        if key == "layers":
            continue
        if mine.get(key) != base.get(key):
            if key in mine:
                out[key] = mine[key]
            else:
                out.pop(key, None)

    def by_name(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
        layers = state.get("layers")
        return {spec.get("name"): spec for spec in layers if isinstance(spec, dict)} \
            if isinstance(layers, list) else {}

    base_layers, their_layers = by_name(base), by_name(theirs)
    mine_list = [s for s in mine.get("layers") or [] if isinstance(s, dict)]
    layers = []
    for spec in mine_list:
        name = spec.get("name")
        before, now = base_layers.get(name), their_layers.get(name)
        if before is None:
            layers.append(spec)  # added by this client
        elif now is not None:  # (else removed meanwhile)
            layers.append(now if spec == before else _rebase_layer(before, spec, now))
    mine_names = {spec.get("name") for spec in mine_list}
    for name, spec in their_layers.items():
        if name not in base_layers and name not in mine_names:
            layers.append(spec)  # added meanwhile
    if layers or "layers" in theirs or "layers" in mine:
        out["layers"] = layers
    return out
