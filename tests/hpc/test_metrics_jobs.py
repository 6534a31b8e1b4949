"""/metrics counts a project's batch jobs by state."""

from __future__ import annotations

from conftest import paint_and_train, write_zarr

from hpc.service import JobService
from ilastik_web.config import ServerConfig
from ilastik_web.project import Project
from ilastik_web.server.app import create_app


async def test_metrics_show_job_states(aiohttp_client, blobs, tmp_path):
    image, truth = blobs
    project = Project.create(tmp_path / "project", write_zarr(tmp_path / "raw.zarr", image),
                             classes=["background", "blob"])
    paint_and_train(project, truth)
    service = JobService(tmp_path / "project" / "jobs")
    job = service.submit_from_project(project, output=tmp_path / "out.ome.zarr",
                                      format="ome-zarr", export="segmentation",
                                      background=False)
    assert service.get(job.id)["state"] == "DONE"
    client = await aiohttp_client(create_app(ServerConfig(), projects=[("p", project, "raw")]))
    text = await (await client.get("/metrics")).text()
    assert 'ilastik_web_jobs{project="p",state="DONE"} 1' in text
