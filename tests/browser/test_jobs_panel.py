"""The Jobs section of the side panel in the real viewer: headless Chromium, real clicks, the
real CLI on the demo.

Submit a small export of the current classifier from the panel, watch it reach done, open it
as a layer and find the layer in the viewer's layer list, read its logs; cancel a second job
while it runs and resume it to done.
"""

from __future__ import annotations

import pytest
from paint_helpers import api, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROJECT = "demo-project"
ROI = "60:62,0:64,0:64"  # one small block: the export takes seconds (mostly worker start-up)


def _train_classifier(base: str) -> None:
    """Two labelled strokes and one training run, through the API."""
    api(base, f"/api/projects/{PROJECT}/live", "PUT", {"enabled": False})
    for label, y in ((1, 100.5), (2, 300.5)):
        api(base, f"/api/projects/{PROJECT}/strokes", "POST", {
            "points_xyz": [[100.5, y, 60.5], [160.5, y, 60.5]], "radius": 3, "label": label,
            "plane": "xy"})
    assert api(base, f"/api/projects/{PROJECT}/train", "POST")["generation"] == 1


def _job_row(page, job_id: str) -> str:
    return f'.iw-job[data-job="{job_id}"]'


def _submit(page, export: str, fmt: str) -> dict:
    """Fill the Jobs form and click Export; the job the server created."""
    page.select_option("#iw-job-export", export)
    page.select_option("#iw-job-format", fmt)
    page.fill("#iw-job-roi", ROI)
    with page.expect_response(lambda r: r.url.endswith(f"/api/projects/{PROJECT}/jobs")
                              and r.request.method == "POST") as answer:
        page.click("#iw-job-submit")
    assert answer.value.status == 201, answer.value.text()
    return answer.value.json()


def test_jobs_submit_progress_open_cancel_resume(demo_server, browser, artifacts):
    base = demo_server.base
    _train_classifier(base)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(demo_server.url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready && ilastikWeb.jobs",
                           timeout=60_000)
    assert page.locator(".iw-job").count() == 0

    # An export from the panel: the row appears, is polled, and reaches done.
    job = _submit(page, "segmentation", "ome-zarr")
    assert job["export"] == "segmentation" and job["format"] == "ome-zarr"
    assert job["output"].startswith(str(demo_server.project_dir / "exports"))
    row = _job_row(page, job["id"])
    page.wait_for_selector(row, timeout=60_000)
    page.wait_for_selector(f'{row}[data-state="DONE"]', timeout=300_000)
    assert page.locator(f"{row} .iw-job-blocks").inner_text().startswith("1/1 blocks")
    assert page.locator(f"{row} .iw-job-engine").inner_text() == job["engine"] == "local"
    assert page.locator(f"{row} .iw-progress-bar").get_attribute("style") == "width:100%"
    page.screenshot(path=str(artifacts / "jobs-1-done.png"))

    # Open as layer: a new layer in the viewer's layer list.
    page.click(f"{row} .iw-job-open")
    name = f"segmentation {job['id'].rsplit('-', 1)[-1]}"  # short: the layer bar is narrow
    page.wait_for_function(
        "(name) => viewer.layerManager.managedLayers.some((m) => m.name === name)",
        arg=name, timeout=120_000)
    page.wait_for_function(
        "(name) => Array.from(document.querySelectorAll('.neuroglancer-layer-item'))"
        ".some((e) => e.textContent.includes(name))", arg=name, timeout=60_000)
    # in the class colours, not random segment colours
    colors = page.evaluate("""(name) => viewer.state.toJSON().layers
      .find((l) => l.name === name).segmentColors""", name)
    classes = api(base, f"/api/projects/{PROJECT}")["classes"]
    assert colors == {str(c["value"]): c["color"] for c in classes}, colors

    # Its logs.
    page.click(f"{row} .iw-job-logs-button")
    page.wait_for_function("document.getElementById('iw-job-logs').textContent"
                           ".includes('DONE')", timeout=60_000)

    # A second job: cancel it while it runs, then resume it to done.
    second = _submit(page, "probabilities", "n5")
    row2 = _job_row(page, second["id"])
    page.wait_for_selector(f"{row2} .iw-job-cancel", timeout=60_000)
    assert page.locator(f"{row2}").get_attribute("data-state") in ("PENDING", "RUNNING")
    page.click(f"{row2} .iw-job-cancel")
    page.wait_for_selector(f'{row2}[data-state="CANCELLED"]', timeout=120_000)
    assert api(base, f"/api/projects/{PROJECT}/jobs/{second['id']}")["state"] == "CANCELLED"
    page.screenshot(path=str(artifacts / "jobs-2-cancelled.png"))
    page.click(f"{row2} .iw-job-resume")
    page.wait_for_selector(f'{row2}[data-state="DONE"]', timeout=300_000)
    summary = api(base, f"/api/projects/{PROJECT}/jobs/{second['id']}")
    assert summary["state"] == "DONE" and summary["run"] == 2
    assert summary["blocks_done"] == summary["blocks_total"] == 1
    page.screenshot(path=str(artifacts / "jobs-3-resumed.png"))

    # Polling stops once nothing runs.
    wait_for(lambda: not page.evaluate("ilastikWeb.jobs.polling"), 60, "polling to stop")
    assert not errors, errors
    page.close()
