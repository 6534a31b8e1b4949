"""The job HTTP routes on a minimal app, and the predict/jobs CLI."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import served

from hpc.cli import main
from ilastik_web.abc import Box
from ilastik_web.cache import ArrayCache
from ilastik_web.server.errors import error_middleware
from ilastik_web.server.layers import LayerRegistry
from ilastik_web.server.projects import ProjectHub
from ilastik_web.server.routes_jobs import job_routes
from ilastik_web.server.routing import RouteTable
from ilastik_web.sources import open_source


async def _exercise_routes(project, tmp_path):
    registry = LayerRegistry()
    hub = ProjectHub(registry, ArrayCache(1 << 20))
    hub.add("p", project, source_layer_id="raw")
    executor = ThreadPoolExecutor(2)
    app = web.Application(middlewares=[error_middleware])
    RouteTable(job_routes(hub, executor, allowed_roots=[tmp_path])).register(app)
    async with TestClient(TestServer(app)) as client:
        bad = await client.post("/api/projects/p/jobs", json={"export": "edges"})
        assert bad.status == 400 and "export" in (await bad.json())["error"]
        outside = await client.post("/api/projects/p/jobs",
                                    json={"export": "segmentation", "output": "/etc/x.zarr"})
        assert outside.status == 403
        missing = await client.get("/api/projects/p/jobs/nope")
        assert missing.status == 404
        response = await client.post("/api/projects/p/jobs", json={
            "export": "segmentation", "format": "n5", "output": str(tmp_path / "api.n5"),
            "roi": "0:16,0:64,0:64", "engine": "local"})
        assert response.status == 201, await response.text()
        job = await response.json()
        for _ in range(600):
            status = await (await client.get(f"/api/projects/p/jobs/{job['id']}")).json()
            if status["state"] not in ("PENDING", "RUNNING"):
                break
            await asyncio.sleep(0.2)
        assert status["state"] == "DONE"
        assert status["blocks_done"] == status["blocks_total"] > 0
        listing = await (await client.get("/api/projects/p/jobs")).json()
        # The trained project is shared by the session's tests, which submit jobs too.
        listed = {j["id"]: j for j in listing["jobs"]}
        assert listed[job["id"]]["state"] == "DONE"
        logs = await client.get(f"/api/projects/p/jobs/{job['id']}/logs")
        assert "DONE" in await logs.text()
        layer = await client.post(f"/api/projects/p/jobs/{job['id']}/layer")
        assert layer.status == 201, await layer.text()
        layer_id = (await layer.json())["layer_id"]
        resumed = await client.post(f"/api/projects/p/jobs/{job['id']}/resume")
        assert resumed.status == 400
    executor.shutdown()
    return registry.get(layer_id)


def test_job_routes_submit_watch_and_open_layer(trained_project, tmp_path):
    layer = asyncio.run(_exercise_routes(trained_project, tmp_path))
    assert layer is not None
    result = open_source(str(tmp_path / "api.n5")).base
    box = Box((0, 0, 0), (16, 64, 64))
    np.testing.assert_array_equal(result.read(box), served(trained_project, "segmentation", box))


def test_cli_predict_then_jobs_commands(trained_project, tmp_path, capsys):
    project = str(trained_project.directory)
    output = tmp_path / "cli.tif"
    code = main(["predict", "--project", project, "--output", str(output), "--export",
                 "uncertainty", "--roi", "4:20,:,10:60", "--quiet"])
    assert code == 0, capsys.readouterr().err
    box = Box((4, 0, 10), (20, 64, 60))
    np.testing.assert_array_equal(open_source(str(output)).base.read(Box.from_shape(box.shape)),
                                  served(trained_project, "uncertainty", box))
    capsys.readouterr()
    assert main(["jobs", "--project", project, "list"]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if str(output) in s][0]
    job_id = line.split()[0]
    assert line.split()[1:3] == ["DONE", "local"]  # state, then the engine that ran it
    assert main(["jobs", "--project", project, "status", job_id]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "DONE"
    assert main(["jobs", "--project", project, "logs", job_id]) == 0
    assert "DONE" in capsys.readouterr().out


@pytest.mark.parametrize("argv,fragment", [
    (["predict", "--project", "P", "--output", "o.zarr"], "--export"),
    (["predict", "--project", "P", "--output", "o.zarr", "--export", "x"], "invalid choice"),
    (["predict", "--project", "P", "--output", "o.zarr", "--export", "features",
      "--format", "jpeg"], "invalid choice"),
    (["predict", "--project", "P", "--output", "o", "--export", "features",
      "--memory", "lots"], "not a size"),
    (["predict", "--project", "{tmp}/none", "--output", "o.zarr", "--export", "features"],
     "no project"),
    (["predict", "--project", "{project}", "--output", "{tmp}/o.zarr", "--export",
      "features", "--roi", "0:99,:,:"], "--roi"),
    (["predict", "--project", "{project}", "--output", "{tmp}/o.weird", "--export",
      "features"], "--format"),
    (["predict", "--project", "{project}", "--input", "a", "b", "--output", "{tmp}/o.zarr",
      "--export", "features"], "{name}"),
    (["predict", "--project", "{project}", "--output", "{tmp}/o.zarr", "--export",
      "features", "--engine", "dask"], "address"),
    (["jobs", "--project", "{project}", "status", "nope"], "no job"),
    (["jobs", "--project", "{project}", "fly"], "invalid choice"),
])
def test_cli_bad_arguments_give_one_line_and_exit_2(trained_project, tmp_path, capsys, argv,
                                                     fragment):
    argv = [a.replace("{project}", str(trained_project.directory)).replace("{tmp}",
                                                                            str(tmp_path))
            for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert fragment in err
