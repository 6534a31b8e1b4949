"""OpenID Connect login against a real provider started on loopback.

The provider is the ``django-oidc-provider`` package, run by Django on a free port with
the glue in tests/oidc_provider_site (settings, urls, a login form, users and a client).
``ilastik-web serve --oidc-issuer`` runs as a real process; a real HTTP client with a
cookie jar plays the browser: it is sent to sign in, fills the provider's login form, is
sent back, and is then a signed-in user whose roles come from the operator and from share
links.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

requests = pytest.importorskip("requests")
pytest.importorskip("oidc_provider")

SITE = Path(__file__).resolve().parents[1] / "oidc_provider_site"
CLIENT_ID, CLIENT_SECRET = "ilastik-web-test", "client-secret-for-tests"
USERS = {"alice": "alice-password-1", "bob": "bob-password-2"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=5).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer at {url}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(our base URL, the provider's issuer) with both running."""
    folder = tmp_path_factory.mktemp("oidc")
    op_port, our_port = _free_port(), _free_port()
    op_url = f"http://127.0.0.1:{op_port}"
    base = f"http://127.0.0.1:{our_port}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings", "PYTHONPATH": str(SITE),
           "OP_SECRET_KEY": "test-only-" + os.urandom(8).hex(),
           "OP_DATABASE": str(folder / "op.sqlite3"), "OP_SITE_URL": op_url}
    users = ",".join(f"{u}:{p}" for u, p in USERS.items())
    subprocess.run([sys.executable, str(SITE / "setup_site.py"), users, CLIENT_ID,
                    CLIENT_SECRET, f"{base}/auth/callback"], env=env, check=True,
                   capture_output=True, cwd=SITE)
    provider = subprocess.Popen(
        [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{op_port}", "--noreload"],
        env=env, cwd=SITE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    issuer = f"{op_url}/openid"
    path = folder / "v.tif"
    tifffile.imwrite(path, np.zeros((2, 32, 32), np.uint8), photometric="minisblack")
    ours = None
    try:
        _wait_http(f"{issuer}/.well-known/openid-configuration", provider, "the provider")
        ours = subprocess.Popen(
            [sys.executable, "-m", "ilastik_web", "serve", str(path), "--port", str(our_port),
             "--no-browser", "--project", str(folder / "p"), "--oidc-issuer", issuer,
             "--oidc-client-id", CLIENT_ID, "--oidc-admin", "alice@example.org",
             "--log-level", "INFO"],
            env={**os.environ, "ILASTIK_WEB_OIDC_SECRET": CLIENT_SECRET,
                 "ILASTIK_WEB_DATA": str(folder / "data")},
            stdout=subprocess.DEVNULL, stderr=open(folder / "serve.log", "w"))  # noqa: SIM115
        _wait_http(f"{base}/api/health", ours, "ilastik-web serve")
        yield base, issuer
    finally:
        for process in (ours, provider):
            if process is not None:
                process.terminate()
                process.wait(30)
        log = (folder / "serve.log").read_text() if (folder / "serve.log").exists() else ""
        assert CLIENT_SECRET not in log


def _sign_in(base: str, user: str, password: str, start: str = "/v/main/"):
    """A browser-like session: open a page, get sent to sign in, fill the form, come back."""
    s = requests.Session()
    page = s.get(base + start, headers={"Accept": "text/html"}, allow_redirects=False)
    assert page.status_code == 303
    assert page.headers["Location"].startswith(base + "/auth/login?next=")
    form = s.get(page.headers["Location"], allow_redirects=True)  # provider -> its login form
    assert form.status_code == 200 and "csrfmiddlewaretoken" in form.text
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    nxt = re.search(r'name="next" value="([^"]*)"', form.text).group(1)
    back = s.post(form.url, data={"username": user, "password": password,
                                  "csrfmiddlewaretoken": csrf, "next": nxt.replace("&amp;", "&")},
                  headers={"Referer": form.url}, allow_redirects=True)
    assert back.status_code == 200, back.text[:500]
    assert back.url.startswith(base + "/auth/callback"), back.url
    assert "Signed in" in back.text and f"{base}{start}" in back.text
    return s


def test_sign_in_makes_a_user_and_the_admin_an_operator(servers):
    base, _ = servers
    alice = _sign_in(base, "alice", USERS["alice"])
    me = alice.get(base + "/api/me").json()
    assert me["name"] == "Alice Example" and me["user_id"] and me["admin"] is True
    assert alice.get(base + "/v/main/").status_code == 200
    bob = _sign_in(base, "bob", USERS["bob"])
    me = bob.get(base + "/api/me").json()
    assert me["name"] == "Bob Example" and me["admin"] is False and me["projects"] == {}
    projects = alice.get(base + "/api/projects").json()["projects"]
    project = projects[0]["id"]
    assert bob.get(base + "/api/projects").json()["projects"] == []
    assert bob.get(f"{base}/api/projects/{project}").status_code == 403
    # the operator shares an annotator link; bob opens it while signed in and keeps his name
    origin = {"Origin": base}
    link = alice.post(f"{base}/api/projects/{project}/links", json={"role": "annotator"},
                      headers=origin).json()
    assert bob.get(link["url"]).status_code == 200
    me = bob.get(base + "/api/me").json()
    assert me["name"] == "Bob Example" and me["projects"] == {project: "annotator"}
    stroke = {"points_xyz": [[5.5, 5.5, 0.5]], "radius": 1, "label": 1}
    assert bob.post(f"{base}/api/projects/{project}/strokes", json=stroke,
                    headers=origin).status_code == 200
    # signing out ends the session
    assert bob.post(base + "/api/logout", headers=origin).status_code == 200
    assert bob.get(base + "/api/me").status_code == 401


def test_a_callback_from_elsewhere_is_refused(servers):
    base, _ = servers
    s = requests.Session()
    login = s.get(base + "/auth/login?next=/", allow_redirects=False)
    assert login.status_code == 302
    state = re.search(r"[?&]state=([^&]+)", login.headers["Location"]).group(1)
    # another browser (without the login cookie) brings back the state
    other = requests.get(f"{base}/auth/callback?state={state}&code=x", allow_redirects=False)
    assert other.status_code == 401
    assert requests.get(f"{base}/auth/callback?state=nope&code=x").status_code == 401
    assert requests.get(f"{base}/auth/callback?error=access_denied").status_code == 401


def test_open_redirects_are_not_possible(servers):
    from ilastik_web.server.oidc import safe_next

    assert safe_next("//evil.example/x") == "/"
    assert safe_next("https://evil.example") == "/"
    assert safe_next("/\\evil") == "/"
    assert safe_next("/v/main/?project=p") == "/v/main/?project=p"
