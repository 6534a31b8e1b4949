"""The shipped nginx site (openstack/nginx/ilastik-web.conf) rendered for this machine:
a self-signed certificate, free loopback ports, state in a temp folder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

SITE = Path(__file__).resolve().parents[1] / "openstack" / "nginx" / "ilastik-web.conf"


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 in ``folder``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def render_site(site: str, *, cert: Path, key: Path, http_port: int | None = None,
                https_port: int | None = None, upstream_port: int | None = None) -> str:
    """The shipped site with the certificate swapped in and, where given, the ports moved
    to loopback ones (IPv6 listeners dropped)."""
    site = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", site)
    site = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", site)
    if http_port is not None:
        site = re.sub(r"^\s*listen \[::\]:\d+.*\n", "", site, flags=re.M)
        site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
        site = site.replace("listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl")
    if upstream_port is not None:
        site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")
    return site


def nginx_main_conf(folder: Path, site_path: Path) -> Path:
    """A minimal nginx.conf (state in ``folder``) including the site, as Debian's does."""
    for sub in ("client", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / sub).mkdir(exist_ok=True)
    conf = folder / "nginx.conf"
    conf.write_text("\n".join([
        "user root;", "worker_processes 1;", f"pid {folder / 'nginx.pid'};",
        f"error_log {folder / 'error.log'} warn;", "events { worker_connections 256; }",
        "http {", "  include /etc/nginx/mime.types;", "  access_log off;",
        f"  client_body_temp_path {folder / 'client'};",
        f"  proxy_temp_path {folder / 'proxy'};", f"  fastcgi_temp_path {folder / 'fastcgi'};",
        f"  uwsgi_temp_path {folder / 'uwsgi'};", f"  scgi_temp_path {folder / 'scgi'};",
        f"  include {site_path};", "}", "",
    ]))
    return conf
