"""The openstack/ recipe validates with the tools that will run it: cloud-init's schema,
systemd-analyze, nginx -t; the Heat template's references resolve; the sample config
loads; the backup script archives projects and keeps only recent days."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import OPENSTACK, REPO, need, nginx_main_conf, render_site

from hpc.job import load_engines


def test_user_data_passes_the_cloud_init_schema():
    cloud_init = need("cloud-init")
    user_data = OPENSTACK / "cloud-init" / "user-data.yaml"
    result = subprocess.run([cloud_init, "schema", "--config-file", str(user_data)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout
    text = user_data.read_text()
    assert "scripts/install-system-deps.sh" in text  # the user's own install script
    assert "ilastik-web.service" in text


@pytest.mark.parametrize("unit", ["systemd/ilastik-web.service",
                                  "backup/ilastik-web-backup.service",
                                  "backup/ilastik-web-backup.timer"])
def test_units_pass_systemd_analyze_verify(unit, tmp_path):
    analyze = need("systemd-analyze")
    text = (OPENSTACK / unit).read_text()
    # Installed paths -> this checkout (verify checks that ExecStart is executable).
    executable = Path(sys.executable).parent / "ilastik-web"
    if not executable.exists():
        pytest.skip(f"{executable} is not installed (pip install -e .)")
    text = text.replace("/opt/ilastik-web/.venv/bin/ilastik-web", str(executable))
    text = text.replace("/opt/ilastik-web", str(REPO))
    rendered = tmp_path / Path(unit).name
    rendered.write_text(text)
    if rendered.suffix == ".timer":  # a timer is verified with the unit it starts
        service = OPENSTACK / "backup" / "ilastik-web-backup.service"
        (tmp_path / service.name).write_text(service.read_text().replace(
            "/opt/ilastik-web", str(REPO)))
    result = subprocess.run([analyze, "verify", str(rendered)], capture_output=True,
                            text=True, timeout=300)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if rendered.name in line or "Unknown" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_service_hardening_and_graceful_stop():
    text = (OPENSTACK / "systemd" / "ilastik-web.service").read_text()
    for setting in ("User=ilastik-web", "NoNewPrivileges=yes", "ProtectSystem=strict",
                    "ReadWritePaths=/srv/ilastik-web", "Restart=on-failure",
                    "KillSignal=SIGTERM", "CapabilityBoundingSet=\n", "PrivateTmp=yes"):
        assert setting in text, setting
    assert "MemoryDenyWriteExecute=yes" not in text  # numba JIT needs W+X pages


def test_nginx_site_passes_nginx_t(certificate, tmp_path):
    nginx = need("nginx")
    cert, key = certificate
    site = tmp_path / "ilastik-web.conf"
    site.write_text(render_site((OPENSTACK / "nginx" / "ilastik-web.conf").read_text(),
                                cert=cert, key=key))
    conf = nginx_main_conf(tmp_path, site)
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_heat_template_references_resolve():
    path = OPENSTACK / "heat" / "ilastik-web.yaml"
    template = yaml.safe_load(path.read_text())
    assert str(template["heat_template_version"]) == "2018-08-31"
    parameters, resources = template["parameters"], template["resources"]
    kinds = {r["type"] for r in resources.values()}
    assert {"OS::Nova::Server", "OS::Cinder::Volume", "OS::Neutron::SecurityGroup",
            "OS::Neutron::FloatingIP"} <= kinds

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "get_param":
                    yield "param", value if isinstance(value, str) else value[0]
                elif key == "get_resource":
                    yield "resource", value
                elif key == "get_attr":
                    yield "resource", value[0]
                elif key == "get_file":
                    yield "file", value
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    found = list(walk({"resources": resources, "outputs": template["outputs"]}))
    for kind, name in found:
        if kind == "param":
            assert name in parameters, name
        elif kind == "resource":
            assert name in resources, name
        else:
            assert (path.parent / name).resolve().is_file(), name
    unused = set(parameters) - {name for kind, name in found if kind == "param"}
    assert not unused, unused
    user_data = (OPENSTACK / "cloud-init" / "user-data.yaml").read_text()
    server = resources["server"]["properties"]["user_data"]["str_replace"]["params"]
    for placeholder in server:
        assert placeholder in user_data, placeholder


def test_sample_config_loads():
    engines = load_engines(OPENSTACK / "config" / "engines.json")
    assert engines["hpc"].kind == "slurm-rest" and engines["hpc"].env_file
    assert engines["vm"].kind == "local"
    settings = {}
    for line in (OPENSTACK / "config" / "ilastik-web.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            settings[name] = value
    assert {"ILASTIK_WEB_ARGS", "ILASTIK_WEB_S3_ENDPOINT", "AWS_ACCESS_KEY_ID"} <= set(settings)
    from ilastik_web.cli import build_parser

    args = build_parser().parse_args(["serve", *settings["ILASTIK_WEB_ARGS"].split()])
    assert args.cache_mb == 8192 and args.workers == 8


def _make_project(root: Path, name: str) -> None:
    folder = root / name
    (folder / "exports" / "big.zarr").mkdir(parents=True)
    (folder / "project.json").write_text(json.dumps({"name": name}))
    (folder / "labels.log").write_text('{"stroke": 1}\n')
    (folder / "exports" / "big.zarr" / "0.0.0").write_bytes(b"x" * 1000)


def test_backup_script_archives_projects_and_prunes(tmp_path):
    projects, backups = tmp_path / "projects", tmp_path / "backups"
    _make_project(projects, "alpha")
    _make_project(projects, "beta")
    (projects / "not-a-project").mkdir()
    (backups / "2000-01-01").mkdir(parents=True)  # far older than KEEP_DAYS
    env = {**os.environ, "PROJECTS_DIR": str(projects), "BACKUP_DIR": str(backups),
           "KEEP_DAYS": "3", "BACKUP_DAY": "2026-12-01"}
    env.pop("BACKUP_CONTAINER", None)
    result = subprocess.run(["bash", str(OPENSTACK / "backup" / "ilastik-web-backup.sh")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    day = backups / "2026-12-01"
    assert sorted(p.name for p in day.iterdir()) == ["alpha.tar.gz", "beta.tar.gz"]
    with tarfile.open(day / "alpha.tar.gz") as archive:
        names = archive.getnames()
        assert "alpha/labels.log" in names and "alpha/project.json" in names
        assert not any("exports" in n for n in names)
        assert archive.extractfile("alpha/labels.log").read() == b'{"stroke": 1}\n'
    assert not (backups / "2000-01-01").exists()
