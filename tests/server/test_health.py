"""GET /api/health: liveness plus readiness of the configured storage, Slurm engines and
SAM models (a real slurmrestd and Swift are checked in tests/hpc)."""

from __future__ import annotations

from pathlib import Path

from hpc.job import EngineSpec
from ilastik_web.config import ServerConfig
from ilastik_web.server.app import create_app


async def test_unconfigured_server_is_ready(aiohttp_client):
    client = await aiohttp_client(create_app(ServerConfig()))
    body = await (await client.get("/api/health")).json()
    assert body["status"] == "ok" and body["ready"] == "ready" and body["checks"] == []


async def test_missing_dependencies_make_it_degraded(aiohttp_client, tmp_path):
    model = tmp_path / "sam.pt"
    model.write_bytes(b"weights")
    config = ServerConfig(
        allowed_roots=(tmp_path, tmp_path / "gone"),
        sam_models=(f"ok=vit_b:{model}", f"lost=vit_b:{tmp_path / 'none.pt'}"),
        engines={"hpc": EngineSpec(kind="slurm-rest", rest_url="http://127.0.0.1:9",
                                   rest_user="lab", rest_token_file=str(model))},
    )
    client = await aiohttp_client(create_app(config))
    response = await client.get("/api/health")
    assert response.status == 200  # liveness stays 200; readiness is in the body
    body = await response.json()
    assert body["status"] == "ok" and body["ready"] == "degraded"
    by_name = {(c["group"], c["name"]): c for c in body["checks"]}
    assert by_name[("storage", str(tmp_path))]["ok"]
    assert not by_name[("storage", str(tmp_path / "gone"))]["ok"]
    assert by_name[("sam", "ok=vit_b")]["ok"]
    assert not by_name[("sam", "lost=vit_b")]["ok"]
    hpc = by_name[("slurm", "hpc")]
    assert not hpc["ok"] and "cannot reach slurmrestd" in hpc["detail"]
    assert "weights" not in str(body)  # the token file's content never shows


async def test_all_present_is_ready(aiohttp_client, tmp_path):
    config = ServerConfig(allowed_roots=(Path(tmp_path),),
                          engines={"vm": EngineSpec(kind="local")})
    client = await aiohttp_client(create_app(config))
    body = await (await client.get("/api/health")).json()
    assert body["ready"] == "ready" and len(body["checks"]) == 2
