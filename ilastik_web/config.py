"""Server settings, filled from the command line or by a script."""

from __future__ import annotations

import os
from collections.abc import Mapping
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
    memory_bytes
        Memory budget of all caches together, split among them by
        :data:`ilastik_web.resources.CACHE_SHARES`; resident memory stays under it plus a
        fixed overhead (:attr:`ilastik_web.resources.Resources.rss_limit_bytes`).
    threads
        Worker threads in all (chunks, label edits, training); None: the cores this
        process may use.
    viewer_token
        Id of the default viewer session, in its URL ``/v/<viewer_token>/``.
    sam_models
        Segment Anything checkpoints, each ``[name=]model_type:/path/to/checkpoint.pt``;
        nothing is ever downloaded.
    sam_device
        "cpu" or "cuda" for SAM; None: CUDA when present.
    sam_cache_dir
        Where SAM embeddings are cached on disk (None: memory only).
    accounts_path
        JSON file of users, roles and share links (None: memory only).
    user_limits
        Per-person request rate, stroke size and SAM share
        (:class:`ilastik_web.server.limits.UserLimits`; None: its defaults).
    engines
        Batch engines offered to requests by name (name -> :class:`hpc.job.EngineSpec`;
        from ``--engine`` and ``--engines``, see :mod:`hpc.engine_config`); ``local`` is
        always offered.
    oidc_issuer, oidc_client_id, oidc_client_secret
        OpenID Connect sign-in: the provider's issuer URL and this server's registration
        (None: no sign-in; share links and the token still work).
    oidc_admins
        Emails, usernames or subjects of people who become operators when they sign in.
    projects_dir
        Where projects created from the browser get their folders (None: memory only).
    url_hosts
        Hosts (or ``*.domain`` patterns) data URLs may name; empty: any host.
    allow_local_urls
        Let data URLs reach loopback and link-local addresses (refused by default).
    sam_cache_bytes
        Size limit of that disk cache, least recently used embeddings evicted (None: none).
    collection_dir
        A folder of images served as one image collection (annotations beside them).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    allowed_roots: tuple[Path, ...] = field(default_factory=tuple)
    memory_bytes: int = 2 << 30
    threads: int | None = None
    viewer_token: str = "main"
    sam_models: tuple[str, ...] = ()
    sam_device: str | None = None
    sam_cache_dir: Path | None = None
    accounts_path: Path | None = None
    user_limits: object | None = None
    engines: Mapping[str, object] = field(default_factory=dict)
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = field(default=None, repr=False)
    oidc_admins: tuple[str, ...] = ()
    projects_dir: Path | None = None
    url_hosts: tuple[str, ...] = ()
    allow_local_urls: bool = False
    sam_cache_bytes: int | None = None
    collection_dir: Path | None = None

    @staticmethod
    def token_from_env() -> str | None:
        return os.environ.get(TOKEN_ENV) or None
