"""A page on another port of 127.0.0.1 cannot write to the server nor read its API.

Real ``ilastik-web serve`` processes (with and without ``--token``), a real second HTTP
server for the attacker's page, and headless Chromium. SameSite cookies do not separate
ports, so only the server's Origin and content-type checks and its CORS rules stand in
the way. The same requests from the server's own origin work (the control).
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import tifffile
from server_process import stop_server

pytestmark = pytest.mark.browser

ATTACKS = """
async (target) => {
  const results = {};
  const stroke = JSON.stringify({points_xyz: [[10.5, 10.5, 1.5]], radius: 3, label: 1});
  async function attempt(name, fn) {
    try { const r = await fn(); results[name] = r.type === "opaque" ? "opaque" : r.status; }
    catch (e) { results[name] = "blocked"; }
  }
  await attempt("plain_class", () => fetch(target + "/api/projects/p/classes", {
    method: "POST", mode: "no-cors", credentials: "include",
    headers: {"Content-Type": "text/plain"}, body: JSON.stringify({name: "pwned"})}));
  await attempt("plain_stroke", () => fetch(target + "/api/projects/p/strokes", {
    method: "POST", mode: "no-cors", credentials: "include", body: stroke}));
  await attempt("json_stroke", () => fetch(target + "/api/projects/p/strokes", {
    method: "POST", credentials: "include",
    headers: {"Content-Type": "application/json"}, body: stroke}));
  await attempt("undo", () => fetch(target + "/api/projects/p/undo", {
    method: "POST", mode: "no-cors", credentials: "include"}));
  await attempt("read_project", async () => {
    const r = await fetch(target + "/api/projects/p", {credentials: "include"});
    results.read_body = await r.text();
    return r;
  });
  // A classic form post, into a frame.
  const frame = document.createElement("iframe");
  frame.name = "sink";
  document.body.appendChild(frame);
  const form = document.createElement("form");
  form.method = "POST"; form.target = "sink"; form.enctype = "text/plain";
  form.action = target + "/api/projects/p/classes";
  const input = document.createElement("input");
  input.name = '{"name": "form", "x": "'; input.value = '"}';
  form.appendChild(input);
  document.body.appendChild(form);
  const loaded = new Promise((resolve) => frame.addEventListener("load", resolve));
  form.submit();
  await loaded;
  results.form = "submitted";
  return results;
}
"""

OWN_ORIGIN_WRITE = """
async () => {
  const r = await fetch("/api/projects/p/classes", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({name: "own"})});
  return r.status;
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        body = b"<!doctype html><html><body><p>somewhere else</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def attacker() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module", params=[None, "xsite-token"], ids=["open", "token"])
def server(request, tmp_path_factory) -> Iterator[tuple[str, str | None]]:
    folder = tmp_path_factory.mktemp("xsite")
    path = folder / "v.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (4, 64, 64), np.uint8),
                     photometric="minisblack")
    port = _free_port()
    argv = [sys.executable, "-m", "ilastik_web", "serve", str(path), "--port", str(port),
            "--no-browser", "--project", str(folder / "p"), "--log-level", "WARNING"]
    if request.param:
        argv += ["--token", request.param]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True,
                               env={**os.environ,
                                    "ILASTIK_WEB_DATA": str(folder / "data")})
    try:
        url = process.stdout.readline().strip()
        if not url:
            pytest.fail(f"server exited with {process.wait(10)}")
        yield f"http://127.0.0.1:{port}", request.param
    finally:
        stop_server(process)


def _project(base: str, token: str | None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(base + "/api/projects/p", headers=headers)
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def test_page_on_another_port_is_refused(browser, server, attacker):
    base, token = server
    before = _project(base, token)
    context = browser.new_context()
    page = context.new_page()
    try:
        if token:  # the user opened the server's link: the session cookie is in the browser
            page.goto(f"{base}/v/main/?token={token}")
            assert token not in page.url
            assert any(c["name"] == "ilastik_web_session" for c in context.cookies())
        page.goto(attacker)
        results = page.evaluate(ATTACKS, base)
        after = _project(base, token)
        assert [c["name"] for c in after["classes"]] == [c["name"] for c in before["classes"]]
        assert after["label_revision"] == before["label_revision"]
        # No response could be read either.
        assert results["json_stroke"] == "blocked"
        assert results["read_project"] == "blocked"
        assert "classes" not in results.get("read_body", "")
        # Control: the same kind of write from the server's own origin works.
        page.goto(f"{base}/api/health")
        assert page.evaluate(OWN_ORIGIN_WRITE) == 201
        assert "own" in [c["name"] for c in _project(base, token)["classes"]]
    finally:
        context.close()
