"""Server settings, filled from the command line or by a script."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Environment variable read for the access token when none is given explicitly.
TOKEN_ENV = "ILASTIK_WEB_TOKEN"


@dataclass(frozen=True)
class ServerConfig:
    """How one server runs.

    Attributes
    ----------
    host, port
        Where to listen; the default binds to this machine only.
    token
        Shared access token; None means no authentication (fine on 127.0.0.1).
    allowed_roots
        Directories sources may be opened from (empty: anywhere).
    cache_bytes
        Memory budget of the array cache (source blocks, computed pyramid levels).
    workers
        Threads reading and encoding chunks.
    viewer_token
        Id of the default viewer session, in its URL ``/v/<viewer_token>/``.
    sam_models
        Segment Anything checkpoints, each ``[name=]model_type:/path/to/checkpoint.pt``;
        nothing is ever downloaded.
    sam_device
        "cpu" or "cuda" for SAM; None: CUDA when present.
    sam_cache_dir
        Where SAM embeddings are cached on disk (None: memory only).
    sam_cache_bytes
        Size limit of that disk cache, least recently used embeddings evicted (None: none).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    allowed_roots: tuple[Path, ...] = field(default_factory=tuple)
    cache_bytes: int = 1024 * 1024 * 1024
    workers: int = 4
    viewer_token: str = "main"
    sam_models: tuple[str, ...] = ()
    sam_device: str | None = None
    sam_cache_dir: Path | None = None
    sam_cache_bytes: int | None = None

    @staticmethod
    def token_from_env() -> str | None:
        return os.environ.get(TOKEN_ENV) or None
