"""Job outputs stay inside the allowed roots (symlinks followed), are reserved atomically,
never replace a user's file; engines come from the server's configuration only."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hpc.engine_config import EngineRegistry, parse_engine
from ilastik_web.cache import ArrayCache
from ilastik_web.errors import InvalidRequestError
from ilastik_web.server.errors import error_middleware
from ilastik_web.server.layers import LayerRegistry
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routes_jobs import job_routes
from ilastik_web.server.routing import RouteTable

ROI = "0:8,0:32,0:32"


async def _wait_done(client, job_id):
    for _ in range(1200):
        status = await (await client.get(f"/api/projects/p/jobs/{job_id}")).json()
        if status["state"] not in ("PENDING", "RUNNING"):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {status}")


def _run(project, roots, scenario, engines=None):
    async def main():
        registry = LayerRegistry()
        hub = ProjectHub(registry, ArrayCache(1 << 20))
        hub.add("p", project, source_layer_id="raw")
        executor = ThreadPoolExecutor(4)
        app = web.Application(middlewares=[error_middleware])
        RouteTable(job_routes(hub, executor, allowed_roots=roots,
                              engines=engines)).register(app)
        try:
            async with TestClient(TestServer(app)) as client:
                return await scenario(client)
        finally:
            executor.shutdown()

    return asyncio.run(main())


def _submit(client, output, fmt="ome-zarr", **extra):
    return client.post("/api/projects/p/jobs", json={
        "export": "segmentation", "format": fmt, "output": str(output), "roi": ROI, **extra})


@pytest.mark.parametrize("fmt,name", [("ome-zarr", "new.zarr"), ("hdf5", "new.h5")])
def test_a_symlink_out_of_the_root_is_refused(trained_project, tmp_path, fmt, name):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "link_new").symlink_to(outside / name)  # dangling: the job would create it
    (allowed / "dir_link").symlink_to(outside, target_is_directory=True)

    async def scenario(client):
        for target in (allowed / "link_new", allowed / "dir_link" / name):
            response = await _submit(client, target, fmt)
            assert response.status == 403, await response.text()
        response = await _submit(client, str(allowed / name) + "\x00.zarr", fmt)
        assert response.status == 400 and "NUL" in (await response.json())["error"]

    _run(trained_project, [allowed], scenario)
    assert list(outside.iterdir()) == []


@pytest.mark.slow
def test_one_new_output_goes_to_exactly_one_of_two_simultaneous_jobs(trained_project,
                                                                      tmp_path):
    async def scenario(client):
        responses = await asyncio.gather(*[_submit(client, tmp_path / "same.zarr")
                                           for _ in range(2)])
        statuses = sorted(r.status for r in responses)
        assert statuses == [201, 409], [await r.text() for r in responses]
        winner = next(r for r in responses if r.status == 201)
        status = await _wait_done(client, (await winner.json())["id"])
        assert status["state"] == "DONE"
        again = await _submit(client, tmp_path / "same.zarr")
        assert again.status == 409

    _run(trained_project, [tmp_path], scenario)


@pytest.mark.slow
def test_hdf5_export_leaves_the_users_partial_file_alone(trained_project, tmp_path):
    mine = tmp_path / "new.h5.partial"
    mine.write_bytes(b"the user's own file")

    async def scenario(client):
        response = await _submit(client, tmp_path / "new.h5", "hdf5")
        assert response.status == 201, await response.text()
        assert (await _wait_done(client, (await response.json())["id"]))["state"] == "DONE"

    _run(trained_project, [tmp_path], scenario)
    assert mine.read_bytes() == b"the user's own file"
    assert (tmp_path / "new.h5").stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new.h5")]


def test_a_request_cannot_describe_an_engine(trained_project, tmp_path):
    """No request makes the server connect anywhere: an engine object or an unknown name is
    refused before anything is contacted (a listener here would see a handshake)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    contacted = threading.Event()

    def accept():
        try:
            listener.accept()
            contacted.set()
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()

    async def scenario(client):
        for engine in ({"kind": "dask", "address": f"tcp://127.0.0.1:{port}"},
                       f"tcp://127.0.0.1:{port}", "cluster", ["dask"]):
            response = await _submit(client, tmp_path / f"o{len(str(engine))}.zarr",
                                     engine=engine)
            assert response.status == 400, await response.text()
            assert "configured engine" in (await response.json())["error"]
        listing = await (await client.get("/api/engines")).json()
        assert listing == {"engines": [{"name": "local", "kind": "local"}]}

    _run(trained_project, [tmp_path], scenario)
    thread.join()
    listener.close()
    assert not contacted.is_set()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("o")]


def test_engine_configuration_parses_named_engines():
    registry = EngineRegistry.parse(["cluster=dask,address=tcp://sched:8786",
                                     "gpu=slurm,partition=gpu,gpus=1,time=01:00:00"])
    assert registry.names() == ["local", "cluster", "gpu"]
    assert registry.get("cluster").address == "tcp://sched:8786"
    assert registry.get("gpu").gpus == 1 and registry.get(None).kind == "local"
    for bad in ("noequals", "x=dask", "x=local,colour=red", "x=local,workers=many",
                "bad name=local"):
        with pytest.raises(InvalidRequestError):
            parse_engine(bad)


def test_reserved_outputs_are_released_when_the_job_is_refused(trained_project, tmp_path):
    async def scenario(client):
        response = await _submit(client, tmp_path / "big.zarr", level=99)
        assert response.status == 400

    _run(trained_project, [tmp_path], scenario)
    assert not os.path.lexists(tmp_path / "big.zarr")
