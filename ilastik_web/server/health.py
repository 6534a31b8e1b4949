"""Readiness: what the server depends on, checked off the event loop.

``GET /api/health`` stays a cheap liveness answer (``"status": "ok"``) and adds
``"ready": "ready" | "degraded"`` with one entry per dependency the configuration names:

- storage: every ``--allow-root`` (local folders readable; ``s3://`` prefixes answer an
  authenticated request),
- slurm: every configured engine of kind ``slurm-rest`` (slurmrestd answers a ping with
  its token) or ``slurm`` (``sbatch`` on the PATH),
- sam: every ``--sam-model`` checkpoint (a readable file).

Checks run in their own threads (never the chunk workers, which may all be busy) and
their result is kept for :data:`CACHE_S` seconds, so probes cannot load the server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path

from ilastik_web.config import ServerConfig

CACHE_S = 10.0
CHECK_TIMEOUT_S = 15.0


def _storage(root: Path) -> tuple[bool, str]:
    text = str(root)
    if text.startswith("s3:/"):
        from ilastik_web.sources.location import parse_location

        location = parse_location("s3://" + text[len("s3:/"):].lstrip("/"))
        import tensorstore as ts

        try:
            store = ts.KvStore.open(location.kvstore_spec()).result()
            store.read(".ilastik-web-health").result()  # missing is fine; errors are not
        except Exception as exc:
            return False, f"{location}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return True, str(location)
    if not root.is_dir():
        return False, f"{root}: not a folder"
    if not os.access(root, os.R_OK | os.X_OK):
        return False, f"{root}: not readable"
    return True, str(root)


def _engine(engine) -> tuple[bool, str]:
    if engine.kind == "slurm-rest":
        from hpc.slurm_rest import SlurmRestClient, SlurmRestError

        try:
            SlurmRestClient.for_engine(engine).ping()
        except SlurmRestError as exc:
            return False, str(exc)
        return True, f"slurmrestd at {engine.rest_url}"
    if engine.kind == "slurm":
        return (True, "sbatch") if shutil.which("sbatch") else (False, "sbatch not found")
    return True, engine.kind


def _sam(text: str) -> tuple[bool, str]:
    from ilastik_web.sam import ModelSpec

    spec = ModelSpec.parse(text)
    if not spec.checkpoint.is_file():
        return False, f"{spec.name}: no checkpoint at {spec.checkpoint}"
    if not os.access(spec.checkpoint, os.R_OK):
        return False, f"{spec.name}: {spec.checkpoint} is not readable"
    return True, spec.name


def run_checks(config: ServerConfig) -> list[dict]:
    """One ``{"group", "name", "ok", "detail"}`` per configured dependency."""
    checks = []

    def add(group: str, name: str, fn, *args) -> None:
        try:
            ok, detail = fn(*args)
        except Exception as exc:  # a check must report, never raise
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        checks.append({"group": group, "name": name, "ok": ok, "detail": detail})

    for root in config.allowed_roots:
        add("storage", str(root), _storage, Path(root))
    for name, engine in sorted(config.engines.items()):
        add("slurm" if engine.kind.startswith("slurm") else "engine", name, _engine, engine)
    for text in config.sam_models:
        add("sam", text.split(":", 1)[0], _sam, text)
    return checks


class Readiness:
    """Cached readiness of one server's configuration."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self._lock = threading.Lock()
        self._at = -CACHE_S
        self._checks: list[dict] = []

    def _refresh(self) -> list[dict]:
        with self._lock:
            if time.monotonic() - self._at >= CACHE_S:
                self._checks = run_checks(self.config)
                self._at = time.monotonic()
            return self._checks

    async def report(self) -> dict:
        """``{"ready": "ready"|"degraded", "checks": [...]}``."""
        if not (self.config.allowed_roots or self.config.engines or self.config.sam_models):
            return {"ready": "ready", "checks": []}
        try:
            checks = await asyncio.wait_for(asyncio.to_thread(self._refresh), CHECK_TIMEOUT_S)
        except TimeoutError:
            checks = [{"group": "health", "name": "checks", "ok": False,
                       "detail": f"checks took over {CHECK_TIMEOUT_S:.0f} s"}]
        ready = all(c["ok"] for c in checks)
        return {"ready": "ready" if ready else "degraded", "checks": checks}
