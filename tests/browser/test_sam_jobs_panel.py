"""The SAM jobs section in the real viewer: headless Chromium, real clicks, the real CLI
with a tiny random SAM and an on-disk embedding cache.

Fine-tune from the panel (a few CPU steps through micro-sam's trainer, a job on the local
engine), watch the row reach done with its step count, click *Use as SAM model* and find
the new model selected in the SAM section; then *Embed volume* for one slice, and a prompt
with the new model on that slice computes no embedding. Quality is never asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import zarr
from paint_helpers import api

pytestmark = [pytest.mark.browser, pytest.mark.slow]

torch = pytest.importorskip("torch")
pytest.importorskip("micro_sam.training")
_SAM_TESTS = str(Path(__file__).resolve().parents[1] / "sam")
if _SAM_TESTS not in sys.path:
    sys.path.append(_SAM_TESTS)
from sam_fixtures import blobs, build_tiny_sam, write_training_set  # noqa: E402


def test_finetune_use_model_embed_then_prompt(serve, browser, artifacts, tmp_path):
    tiny = tmp_path / "tiny.pt"
    torch.save(build_tiny_sam().state_dict(), tiny)
    data = blobs((6, 40, 50))[0]
    array = zarr.create_array(store=str(tmp_path / "raw.zarr"), shape=data.shape,
                              chunks=(1, 40, 50), dtype=data.dtype, zarr_format=2)
    array[...] = data
    training_set = write_training_set(tmp_path)
    served = serve(str(tmp_path / "raw.zarr"), "--sam-model", f"tiny=vit_b:{tiny}",
                   "--sam-device", "cpu", "--sam-cache", str(tmp_path / "embeddings"),
                   project=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(served.url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.samJobs "
                           "&& ilastikWeb.sam && ilastikWeb.sam.model === 'tiny'",
                           timeout=60_000)
    project = page.evaluate("ilastikWeb.project.id")

    page.fill("#iw-sam-job-set", str(training_set))
    page.fill("#iw-sam-job-name", "round2")
    page.fill("#iw-sam-job-steps", "2")
    with page.expect_response(lambda r: r.url.endswith("/jobs/sam-finetune")) as answer:
        page.click("#iw-sam-job-finetune")
    assert answer.value.status == 201, answer.value.text()
    job = answer.value.json()
    assert job["kind"] == "sam-finetune" and job["engine"] == "local"
    row = f'.iw-job[data-job="{job["id"]}"]'
    page.wait_for_selector(f'{row}[data-state="DONE"]', timeout=600_000)
    assert "2 steps done" in page.locator(f"{row} .iw-job-blocks").inner_text()
    assert page.locator(f"{row} .iw-job-open").count() == 0  # not an export
    page.screenshot(path=str(artifacts / "sam-jobs-1-finetuned.png"))

    page.click(f"{row} .iw-job-sam-model")
    page.wait_for_function("ilastikWeb.sam.model === 'round2' && "
                           "document.getElementById('iw-sam-model').value === 'round2'",
                           timeout=30_000)
    models = {m["name"] for m in api(served.base, "/api/sam/models")["models"]}
    assert models == {"tiny", "round2"}

    page.fill("#iw-sam-job-slices", "3")
    with page.expect_response(lambda r: r.url.endswith("/jobs/sam-embeddings")) as answer:
        page.click("#iw-sam-job-embed")
    assert answer.value.status == 201, answer.value.text()
    embed = answer.value.json()
    page.wait_for_selector(f'.iw-job[data-job="{embed["id"]}"][data-state="DONE"]',
                           timeout=600_000)
    before = api(served.base, "/api/sam/status")["embeddings"]
    mask = api(served.base, "/api/sam/prompt", "POST", {
        "project_id": project, "plane": "xy", "points_xyz": [[20.5, 20.5, 3.5]],
        "point_labels": [1], "model": "round2"})
    assert mask["model"] == "round2"
    after = api(served.base, "/api/sam/status")["embeddings"]
    assert after["computed"] == before["computed"]
    assert after["disk_hits"] == before["disk_hits"] + 1
    assert not errors, errors
