"""Paths and tools for checking the openstack/ recipe on this machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from nginx_site import make_certificate, nginx_main_conf, render_site  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
OPENSTACK = REPO / "openstack"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/install-system-deps.sh installs it)")
    return path


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    need("openssl")
    return make_certificate(tmp_path_factory.mktemp("tls"))
