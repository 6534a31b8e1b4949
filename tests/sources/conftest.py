"""Fixtures for source tests: a static HTTP server on 127.0.0.1 for remote formats."""

from __future__ import annotations

import functools
import http.server
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: tensorstore fetches many small chunks

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


@pytest.fixture(scope="session")
def http_server(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """(served folder, its base URL) for the whole session."""
    root = tmp_path_factory.mktemp("served")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def served_place(http_server) -> tuple[Path, Callable[[Path], str]]:
    """A fresh served folder and the mapping from a path in it to its URL."""
    root, base_url = http_server
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    return folder, lambda path: f"{base_url}/{path.relative_to(root).as_posix()}"
