"""Per-person limits: request rate, stroke size, SAM prompt share."""

from __future__ import annotations

import pytest

from ilastik_web.accounts import Accounts
from ilastik_web.config import ServerConfig
from ilastik_web.errors import InvalidRequestError, TooManyRequestsError
from ilastik_web.project import Project
from ilastik_web.resources import Resources
from ilastik_web.server.app import create_app
from ilastik_web.server.context import CONTEXT_KEY
from ilastik_web.server.layers import StaticLayer
from ilastik_web.server.limits import Limits, UserLimits, stroke_voxels_bound

STROKE = {"points_xyz": [[20.5, 20.5, 5.5]], "radius": 1.0, "label": 1}


def test_bucket_refills_with_time():
    now = [0.0]
    limits = Limits(UserLimits(rate_per_s=2, burst=3), clock=lambda: now[0])
    for _ in range(3):
        limits.charge("a")
    with pytest.raises(TooManyRequestsError):
        limits.charge("a")
    limits.charge("b")  # others are not affected
    now[0] += 0.5
    limits.charge("a")
    with pytest.raises(TooManyRequestsError):
        limits.charge("a")


def test_stroke_bound_and_limit():
    assert stroke_voxels_bound(10, 2.0, "xy") == 10 * 25
    assert stroke_voxels_bound(1, 2.0, "3d") == 125
    limits = Limits(UserLimits(max_stroke_voxels=1000))
    limits.check_stroke(40, 2.0, "xy")
    with pytest.raises(InvalidRequestError, match="stroke too large"):
        limits.check_stroke(1, 5.0, "3d")


def test_sam_slots_are_per_person():
    limits = Limits(UserLimits(sam_prompts=1))
    with limits.sam_slot("a"):
        with pytest.raises(TooManyRequestsError):
            with limits.sam_slot("a"):
                pass
        with limits.sam_slot("b"):
            pass
    with limits.sam_slot("a"):
        pass


async def test_limits_apply_to_link_holders_not_the_operator(aiohttp_client, tmp_path,
                                                             blob_source):
    resources = Resources(64 * 2**20, threads=2)
    raw = StaticLayer("raw", blob_source, cache=resources.cache("sources"))
    project = Project.create(tmp_path / "p", raw.volume("v0"), classes=["a", "b"])
    config = ServerConfig(token="op", user_limits=UserLimits(rate_per_s=0.001, burst=2,
                                                             max_stroke_voxels=2000))
    app = create_app(config, layers=[raw], projects=[("p", project, "raw")], resources=resources)
    client = await aiohttp_client(app)
    accounts: Accounts = app[CONTEXT_KEY].access.accounts
    token = accounts.create_link("p", "annotator")[1]
    auth = {"Authorization": f"Bearer {token}"}
    big = {**STROKE, "radius": 10.0, "plane": "3d"}
    resp = await client.post("/api/projects/p/strokes", json=big, headers=auth)
    assert resp.status == 400 and "stroke too large" in (await resp.json())["error"]
    assert (await client.post("/api/projects/p/strokes", json=STROKE, headers=auth)).status == 200
    resp = await client.post("/api/projects/p/strokes", json=STROKE, headers=auth)
    assert resp.status == 429 and "Retry-After" in resp.headers
    # reads are not counted, and the operator is not limited
    assert (await client.get("/api/projects/p", headers=auth)).status == 200
    operator = {"Authorization": "Bearer op"}
    for _ in range(3):
        resp = await client.post("/api/projects/p/strokes", json=big, headers=operator)
        assert resp.status == 200


def test_sam_task_share_counts_unfinished_tasks():
    from ilastik_web.sam.tasks import Task

    limits = Limits(UserLimits(sam_tasks=2))
    tasks = [Task(f"t{i}", "propagate", {}) for i in range(2)]
    for task in tasks:
        limits.admit_task("a")
        limits.task_started("a", task)
    with pytest.raises(TooManyRequestsError, match="SAM tasks"):
        limits.admit_task("a")
    limits.admit_task("b")
    tasks[0].state = "done"
    limits.admit_task("a")
