"""A single-node OpenStack Swift ("all in one") on loopback, for object-storage tests.

Debian's swift packages, configured in a temp folder: one directory device, one replica,
tempauth with one user, and the s3api middleware so S3 clients (tensorstore's ``s3``
kvstore) reach it. Every server binds 127.0.0.1 on a free port; the processes started
here are the only ones stopped.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("memcached", "swift-proxy-server", "swift-account-server", "swift-container-server",
            "swift-object-server", "swift-ring-builder")
ACCOUNT, USER, KEY = "test", "tester", "testing"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Swift:
    """A running Swift: its S3 endpoint and the tempauth user's S3 credentials."""

    root: Path
    proxy_port: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    #: S3 access key (tempauth's ``account:user``) and secret (the user's key).
    access_key: str = f"{ACCOUNT}:{USER}"
    secret_key: str = KEY

    def auth_token(self) -> tuple[str, str]:
        """(storage URL, token) from tempauth's native v1 auth."""
        request = urllib.request.Request(f"{self.endpoint}/auth/v1.0", headers={
            "X-Auth-User": f"{ACCOUNT}:{USER}", "X-Auth-Key": KEY})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.headers["X-Storage-Url"], response.headers["X-Auth-Token"]

    def create_container(self, name: str) -> None:
        """Make a container (an S3 bucket) through the native API."""
        url, token = self.auth_token()
        request = urllib.request.Request(f"{url}/{name}", method="PUT",
                                         headers={"X-Auth-Token": token})
        with urllib.request.urlopen(request, timeout=30):
            pass

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
        shutil.rmtree(self.root, ignore_errors=True)


def unavailable() -> str | None:
    """Why Swift cannot run here (None: it can)."""
    missing = [b for b in BINARIES if not shutil.which(b)]
    return f"Swift is not installed (missing {', '.join(missing)})" if missing else None


def _server_conf(kind: str, port: int, root: Path) -> str:
    return "\n".join([
        "[DEFAULT]", "bind_ip = 127.0.0.1", f"bind_port = {port}", "workers = 0",
        f"devices = {root / 'node'}", "mount_check = false", f"swift_dir = {root}",
        f"user = {_user()}", "log_name = swift-" + kind, "log_level = WARNING", "",
        "[pipeline:main]", f"pipeline = {kind}-server", "",
        f"[app:{kind}-server]", f"use = egg:swift#{kind}", "",
        # Single node: nothing to replicate, audit or update in the background.
        f"[{kind}-replicator]", "", f"[{kind}-auditor]", "",
        *(["[object-updater]", ""] if kind == "object" else []), "",
    ])


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _proxy_conf(port: int, root: Path, memcache_port: int) -> str:
    return "\n".join([
        "[DEFAULT]", "bind_ip = 127.0.0.1", f"bind_port = {port}", "workers = 0",
        f"swift_dir = {root}", f"user = {_user()}", "log_name = swift-proxy",
        "log_level = WARNING", "",
        "[pipeline:main]",
        "pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats "
        "s3api tempauth copy slo dlo proxy-logging proxy-server", "",
        "[app:proxy-server]", "use = egg:swift#proxy", "account_autocreate = true", "",
        "[filter:s3api]", "use = egg:swift#s3api", "location = us-east-1",
        "s3_acl = false", "check_bucket_owner = false", "",
        "[filter:tempauth]", "use = egg:swift#tempauth",
        f"user_{ACCOUNT}_{USER} = {KEY} .admin", "",
        "[filter:cache]", "use = egg:swift#memcache",
        f"memcache_servers = 127.0.0.1:{memcache_port}", "",
        *[f"[filter:{name}]\nuse = egg:swift#{name.replace('-', '_')}\n"
          for name in ("catch_errors", "gatekeeper", "healthcheck", "proxy-logging",
                       "listing_formats", "copy", "slo", "dlo")],
        "",
    ])


def start(root: Path) -> Swift:
    """Configure and start Swift in ``root`` (a fresh folder); raise if it cannot start."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "node" / "d1").mkdir(parents=True)
    (root / "swift.conf").write_text("\n".join([
        "[swift-hash]", f"swift_hash_path_suffix = {secrets.token_hex(8)}",
        f"swift_hash_path_prefix = {secrets.token_hex(8)}", "",
        "[storage-policy:0]", "name = gold", "default = yes", "",
    ]))
    ports = {kind: _free_port()
             for kind in ("account", "container", "object", "proxy", "memcache")}
    for kind in ("account", "container", "object"):
        builder = str(root / f"{kind}.builder")
        for args in (["create", "8", "1", "1"],
                     ["add", f"r1z1-127.0.0.1:{ports[kind]}/d1", "100"],
                     ["rebalance"]):
            result = subprocess.run(["swift-ring-builder", builder, *args],
                                    capture_output=True, text=True, timeout=120)
            if result.returncode not in (0, 1):  # 1: rebalance warnings
                raise RuntimeError(f"swift-ring-builder {args}: {result.stdout}{result.stderr}")
        (root / f"{kind}-server.conf").write_text(_server_conf(kind, ports[kind], root))
    (root / "proxy-server.conf").write_text(_proxy_conf(ports["proxy"], root,
                                                        ports["memcache"]))
    swift = Swift(root, ports["proxy"])
    logs = root / "logs"
    logs.mkdir()
    try:
        # tempauth keeps its tokens in memcache, as a real proxy does.
        swift.processes.append(subprocess.Popen(
            ["memcached", "-l", "127.0.0.1", "-p", str(ports["memcache"]), "-U", "0",
             "-m", "64", "-u", _user()],
            stdout=open(logs / "memcached.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True))
        for kind in ("account", "container", "object", "proxy"):
            out = open(logs / f"{kind}.log", "ab")
            swift.processes.append(subprocess.Popen(
                [f"swift-{kind}-server", str(root / f"{kind}-server.conf"), "--verbose"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_ready(swift, logs)
    except BaseException:
        swift.stop()
        raise
    return swift


def _wait_ready(swift: Swift, logs: Path, timeout: float = 120.0) -> None:
    """Until tempauth answers and a container can be made (all four servers up)."""
    deadline = time.monotonic() + timeout
    while True:
        dead = [p.args[0] for p in swift.processes if p.poll() is not None]
        if dead:
            text = "".join(p.read_text()[-1500:] for p in logs.iterdir())
            raise RuntimeError(f"Swift servers died: {dead}\n{text}")
        try:
            swift.create_container("ready-probe")
            return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            text = "".join(p.read_text()[-1500:] for p in logs.iterdir())
            raise RuntimeError(f"Swift did not come up:\n{text}")
        time.sleep(0.2)
