"""The stock Neuroglancer client from the ``neuroglancer`` package, served offline.

Files are read from the package's ``static/client/`` directory once, kept in memory
with a gzipped copy, and ``index.html`` can carry extension scripts (the brush UI) that
are inserted before ``</body>`` without forking the client.
"""

from __future__ import annotations

import gzip
import importlib.resources
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from ilastik_web.errors import NotFoundError, SourceError

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\.(?:js|map|css|wasm|html)$")
MIME_TYPES = {
    ".css": "text/css",
    ".js": "application/javascript",
    ".html": "text/html",
    ".map": "application/json",
    ".wasm": "application/wasm",
}
_COMPRESSIBLE = {".css", ".js", ".html", ".map"}


def default_client_dir() -> Path:
    """The compiled client inside the installed ``neuroglancer`` package."""
    return Path(str(importlib.resources.files("neuroglancer").joinpath("static", "client")))


@dataclass(frozen=True)
class StaticFile:
    """One file of the client, ready to send."""

    body: bytes
    gzipped: bytes | None
    content_type: str
    #: Hashed bundle names never change content; index.html does.
    immutable: bool


class StaticClient:
    """Serves the client's files, with extension scripts injected into ``index.html``.

    Parameters
    ----------
    directory
        Directory holding ``index.html`` and the bundles (default: the package's).
    """

    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory is not None else default_client_dir()
        if not (self.directory / "index.html").is_file():
            raise SourceError(f"no Neuroglancer client in {self.directory} (index.html missing)")
        self._lock = threading.Lock()
        self._files: dict[str, StaticFile] = {}
        self._scripts: list[str] = []

    def inject_script(self, source: str) -> None:
        """Add a JavaScript snippet to ``index.html``, run after the client's bundles."""
        with self._lock:
            self._scripts.append(source)
            self._files.pop("index.html", None)

    def get(self, name: str) -> StaticFile:
        """The file ``name`` ('' means index.html).

        Raises
        ------
        NotFoundError
            No such file, or a name outside the client directory.
        """
        name = name or "index.html"
        if not _FILE_NAME.match(name):
            raise NotFoundError(f"no client file {name!r}")
        with self._lock:
            cached = self._files.get(name)
        if cached is not None:
            return cached
        path = self.directory / name
        if not path.is_file():
            raise NotFoundError(f"no client file {name!r}")
        body = path.read_bytes()
        if name == "index.html":
            body = self._with_scripts(body)
        suffix = path.suffix
        gzipped = gzip.compress(body, compresslevel=6, mtime=0) if suffix in _COMPRESSIBLE else None
        file = StaticFile(body, gzipped, MIME_TYPES[suffix], immutable=name != "index.html")
        with self._lock:
            self._files[name] = file
        return file

    def _with_scripts(self, body: bytes) -> bytes:
        with self._lock:
            scripts = list(self._scripts)
        if not scripts:
            return body
        # Deferred bundles run before DOMContentLoaded; our scripts wait for that too.
        tags = "".join(
            "<script>window.addEventListener('DOMContentLoaded',function(){"
            f"{_script_safe(s)}"
            "});</script>"
            for s in scripts
        )
        text = body.decode("utf-8")
        marker = "</body>"
        if marker in text:
            text = text.replace(marker, tags + marker, 1)
        else:
            text += tags
        return text.encode("utf-8")


def _script_safe(source: str) -> str:
    """Keep a script from closing its own <script> element early."""
    return source.replace("</", "<\\/")

