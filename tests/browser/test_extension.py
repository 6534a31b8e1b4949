"""The viewer extension is injected into the served client, pinned to its Neuroglancer."""

from __future__ import annotations

import pytest

from neuroglancer_ext.extension import (
    NEUROGLANCER_VERSION,
    SCRIPT_FILES,
    STATIC_DIR,
    extension_scripts,
    install_extension,
    installed_neuroglancer_version,
)
from neuroglancer_ext.static import StaticClient


def test_pinned_neuroglancer_is_installed():
    # The scripts read client internals: a different client version needs re-checking
    # (run the browser tests, which call ilastikWeb.ng.checkInternals()).
    assert installed_neuroglancer_version() == NEUROGLANCER_VERSION


def test_scripts_are_injected_in_order():
    page = install_extension(StaticClient()).get("index.html").body.decode()
    positions = [page.index(f"ilastik-web extension, part {n}:") for n in (1, 2, 3, 4)]
    assert positions == sorted(positions)
    assert page.index("ilastik-web-style") < positions[0] < page.index("</body>")


@pytest.mark.parametrize("name", SCRIPT_FILES)
def test_missing_file_is_a_clear_error(tmp_path, name):
    for other in (*SCRIPT_FILES, "ilastik.css"):
        if other != name:
            (tmp_path / other).write_text((STATIC_DIR / other).read_text())
    with pytest.raises(Exception, match="viewer extension file missing"):
        extension_scripts(tmp_path)


@pytest.mark.browser
@pytest.mark.slow
def test_internals_the_extension_uses_exist(live_server, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(live_server.url)
    page.wait_for_function("window.ilastikWeb && ilastikWeb.ready", timeout=60_000)
    page.wait_for_function("ilastikWeb.ng.panels().length >= 3", timeout=30_000)
    missing = page.evaluate("ilastikWeb.ng.checkInternals()")
    assert missing == [], f"Neuroglancer internals moved: {missing}"
    assert page.locator("#iw-panel #iw-classes .iw-class").count() == 2
    page.close()
