"""``serve --ilp`` and the export routes the side panel's buttons call."""

from __future__ import annotations

import json

import pytest
import pytest_asyncio
from ilp_fixtures import extract_api_projects

from ilastik_web.cli import build_parser, open_layers
from ilastik_web.config import ServerConfig
from ilastik_web.ilp import import_ilp, read_ilp
from ilastik_web.resources import Resources
from ilastik_web.server.app import create_app
from ilastik_web.server.layers import StaticLayer


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    return extract_api_projects(tmp_path_factory.mktemp("ilastik"))


def test_serve_ilp_imports_once_then_reuses_the_project(api, tmp_path) -> None:
    argv = ["serve", "--ilp", str(api / "PixelClass3D.ilp"), "--project", str(tmp_path / "p"),
            "--no-browser"]
    for attempt in range(2):
        args = build_parser().parse_args(argv)
        layers, projects = open_layers(args, Resources(64 << 20, threads=2))
        try:
            assert layers[0].volume(layers[0].version).base.shape == (64, 64, 64)
            _, project, layer_id = projects[0]
            assert layer_id == layers[0].layer_id
            assert project.generation == 1  # ilastik's forest, saved at import, served
            assert [c.name for c in project.classes][:2] == ["Label 1", "Label 2"]
            if attempt == 0:
                project.add_class("added in the viewer")
        finally:
            for _, project, _ in projects:
                project.close()
    assert [c.name for c in project.classes][-1] == "added in the viewer"  # reused


def test_serve_ilp_with_paths_is_a_usage_error(api, tmp_path, capsys) -> None:
    from ilastik_web.cli import main

    code = main(["serve", "--ilp", str(api / "PixelClass3D.ilp"), str(tmp_path / "x.h5"),
                 "--no-browser"])
    assert code == 2 and "--ilp replaces PATH" in capsys.readouterr().err


@pytest_asyncio.fixture
async def served(aiohttp_client, api, tmp_path):
    project = import_ilp(api / "PixelClass3D.ilp", tmp_path / "p")
    resources = Resources(64 << 20, threads=2)
    raw = StaticLayer("raw", project.source, cache=resources.cache("sources"))
    app = create_app(ServerConfig(), layers=[raw], projects=[("p", project, "raw")],
                     resources=resources)
    client = await aiohttp_client(app)
    yield client, project
    project.close()


async def test_ilp_download(served, tmp_path) -> None:
    client, project = served
    response = await client.get("/api/projects/p/export.ilp")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Disposition"] == 'attachment; filename="p.ilp"'
    path = tmp_path / "downloaded.ilp"
    path.write_bytes(await response.read())
    ilp = read_ilp(path)
    assert ilp.class_names == [c.name for c in project.classes]
    assert ilp.selection == project.selection
    missing = await client.get("/api/projects/nope/export.ilp")
    assert missing.status == 404


async def test_labels_export_route(served, tmp_path) -> None:
    client, project = served
    response = await client.post("/api/projects/p/exports/labels")
    assert response.status == 200, await response.text()
    path = (await response.json())["path"]
    assert path.startswith(str(project.directory / "exports"))
    label = json.loads(open(f"{path}/labels/annotations/.zattrs").read())
    assert [c["label-value"] for c in label["image-label"]["colors"]] == [1, 2]
    again = await client.post("/api/projects/p/exports/labels", json={"output": path})
    assert again.status == 400 and "already exists" in (await again.json())["error"]
