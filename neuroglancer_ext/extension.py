"""The ilastik-web extension of the stock Neuroglancer client (brush, side panel, live layers).

The scripts in ``neuroglancer_ext/static/`` are plain JavaScript, run in this order after the
client's own bundles (each inside its own function, sharing ``window.ilastikWeb``):

1. ``ng_internals.js`` — every use of Neuroglancer internals, with a self-check;
2. ``state_sync.js`` — merges server state pushes without view jumps, the view in the URL;
3. ``brush.js`` — paint mode, strokes, the overlay and the brush cursor;
4. ``panel.js`` — the side panel (classes, brush, layers, training, features) and shortcuts;
5. ``sam.js`` — SAM mode: click, shift-click and drag prompts, preview, accept, 3D propagation;
6. ``jobs.js`` — the Jobs section: submit exports, progress, cancel, resume, logs, open as layer;
7. ``notices.js`` — notices about the data: unreadable chunks (shown empty), source warnings;
8. ``brush_ui.js`` — the paint-mode badge, and the brush kept across reloads;
9. ``channels.js`` — the channel panel of multichannel images (visibility, colour, range);
10. ``labels_ui.js`` — the labels' own opacity and per-class show/hide;
11. ``export_box.js`` — draw the export region as a box in the viewer.

``ilastik.css`` is added as a ``<style>`` element by a small leading script. The scripts
reach into the client's internals, so they are pinned to :data:`NEUROGLANCER_VERSION`.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path

from ilastik_web.errors import SourceError
from neuroglancer_ext.static import StaticClient

log = logging.getLogger(__name__)

#: The client version the extension's use of internals was written and tested against.
NEUROGLANCER_VERSION = "2.41.2"
STATIC_DIR = Path(__file__).resolve().parent / "static"
SCRIPT_FILES = ("ng_internals.js", "state_sync.js", "brush.js", "panel.js", "sam.js", "jobs.js",
                "people.js", "notices.js", "exports.js", "brush_ui.js", "channels.js",
                "labels_ui.js", "export_box.js", "sam_auto.js", "collection.js",
                "instance_tools.js", "sam_jobs.js", "readout.js")
STYLE_FILE = "ilastik.css"


def installed_neuroglancer_version() -> str | None:
    """The version of the installed ``neuroglancer`` package, if it is installed."""
    try:
        return importlib.metadata.version("neuroglancer")
    except importlib.metadata.PackageNotFoundError:
        return None


def extension_scripts(directory: Path = STATIC_DIR) -> list[str]:
    """The extension's JavaScript sources in injection order, the stylesheet first.

    Raises
    ------
    SourceError
        A file of the extension is missing (a broken installation).
    """
    try:
        style = (directory / STYLE_FILE).read_text(encoding="utf-8")
        scripts = [(directory / name).read_text(encoding="utf-8") for name in SCRIPT_FILES]
    except OSError as exc:
        raise SourceError(f"viewer extension file missing: {exc}") from None
    style_script = (
        "var s=document.createElement('style');s.id='ilastik-web-style';"
        f"s.textContent={json.dumps(style)};document.head.appendChild(s);"
    )
    return [style_script, *scripts]


def install_extension(client: StaticClient) -> StaticClient:
    """Inject the extension into ``client``'s ``index.html``; return ``client``.

    Logs a warning (and still installs) when the installed ``neuroglancer`` is not the
    pinned version: the browser-side self-check then reports what moved.
    """
    version = installed_neuroglancer_version()
    if version is not None and version != NEUROGLANCER_VERSION:
        log.warning("neuroglancer %s is installed; the viewer extension is pinned to %s",
                    version, NEUROGLANCER_VERSION)
    for source in extension_scripts():
        client.inject_script(source)
    return client
