"""A trained project over a chunked zarr input on disk, shared by the batch tests."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from ilastik_web.labels import Stroke
from ilastik_web.project import Project

SHAPE = (24, 64, 64)
CHUNK = (8, 32, 32)


def make_blobs(shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    truth = np.ones(shape, dtype=np.uint8)
    for _ in range(14):
        c = [rng.uniform(4, n - 4) for n in shape]
        r = rng.uniform(4, 7)
        inside = ((zz - c[0]) * 2) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
        truth[inside] = 2
    image = rng.poisson(np.where(truth == 2, 900.0, 300.0)).astype(np.uint16)
    return image, truth


def write_zarr(path, image, chunks=CHUNK):
    array = zarr.create_array(store=str(path), shape=image.shape, chunks=chunks,
                              dtype=image.dtype, zarr_format=2)
    array[...] = image
    return str(path)


def paint_and_train(project: Project, truth: np.ndarray, slices=(6, 17)) -> None:
    for z in slices:
        rng = np.random.default_rng(z)
        for label in (2, 1):
            points = np.argwhere(truth[z] == label)
            for _ in range(3):
                y, x = points[rng.integers(len(points))]
                project.paint(Stroke(((z + 0.5, y + 0.5, x + 0.5),), radius=1.5, label=label))
    project.train()


@pytest.fixture(scope="session")
def blobs():
    return make_blobs()


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, blobs):
    """A project (folder) trained on a zarr volume; do not change it in tests."""
    image, truth = blobs
    root = tmp_path_factory.mktemp("batch")
    source = write_zarr(root / "raw.zarr", image)
    project = Project.create(root / "project", source, classes=["background", "blob"])
    paint_and_train(project, truth)
    yield project
    project.close()


# -- a one-node Slurm cluster of our own --------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_available() -> str | None:
    """None when the daemons can run here, else why not (the skip reason)."""
    if os.geteuid() != 0:
        return "Slurm tests need root (they start munged, slurmctld and slurmd)"
    if all(shutil.which(t) for t in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch")):
        return None
    result = subprocess.run(["bash", str(REPO / "scripts" / "install-system-deps.sh")],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0 or not shutil.which("slurmctld"):
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        return f"cannot install munge/Slurm: {tail}"
    return None


def _start(command: list[str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """munged + slurmctld + slurmd on this machine, configured in a temp dir.

    Sets ``SLURM_CONF`` for the session (sbatch, squeue and the jobs see it) and stops
    exactly the daemons it started.
    """
    reason = _slurm_available()
    if reason is not None:
        pytest.skip(reason)
    # Not under pytest's private temp dir: slurmrestd drops to an unprivileged user and
    # must still read slurm.conf.
    root = Path(tempfile.mkdtemp(prefix="ilastik-web-slurm-"))
    root.chmod(0o755)
    for sub in ("munge", "state", "spool", "log", "run"):
        (root / sub).mkdir()
    (root / "munge").chmod(0o755)
    key = root / "munge.key"
    subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
    key.chmod(0o600)
    socket_path = root / "munge" / "munge.socket"
    jwt_key = root / "state" / "jwt.key"  # slurmctld signs and checks REST tokens with it
    jwt_key.write_bytes(secrets.token_bytes(32))
    jwt_key.chmod(0o600)
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True)
    node_line = node.stdout.splitlines()[0]
    fields = dict(item.split("=", 1) for item in node_line.split())
    memory = max(1000, int(fields["RealMemory"]) - 1000)
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=ilastikweb",
        f"SlurmctldHost={fields['NodeName']}",
        "AuthType=auth/munge",
        f"AuthInfo=socket={socket_path}",
        "AuthAltTypes=auth/jwt",
        f"AuthAltParameters=jwt_key={jwt_key}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
        "DependencyParameters=kill_invalid_depend",
        "DefMemPerCPU=500",
        "MailProg=/bin/true",
        "ReturnToService=2",
        "KillWait=2",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        f"NodeName={fields['NodeName']} CPUs={fields['CPUs']} RealMemory={memory} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    processes = []
    try:
        processes.append(_start(
            ["munged", "--foreground", "--force", f"--socket={socket_path}",
             f"--key-file={key}", f"--pid-file={root / 'run' / 'munged.pid'}",
             f"--log-file={root / 'log' / 'munged.log'}",
             f"--seed-file={root / 'run' / 'munge.seed'}"],
            root / "log" / "munged.out"))
        deadline = time.monotonic() + 20
        while not socket_path.exists():
            if time.monotonic() > deadline or processes[0].poll() is not None:
                pytest.fail(f"munged did not start: {(root / 'log').glob('munged*')}")
            time.sleep(0.1)
        processes.append(_start(["slurmctld", "-D", "-i", "-f", str(conf)],
                                root / "log" / "slurmctld.out"))
        processes.append(_start(["slurmd", "-D", "-f", str(conf)], root / "log" / "slurmd.out"))
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                break
            dead = [p.args[0] for p in processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "".join(p.read_text()[-2000:] for p in (root / "log").iterdir())
                pytest.fail(f"Slurm did not come up (dead: {dead}, sinfo: "
                            f"{state.stdout.strip() or state.stderr.strip()}):\n{logs}")
            time.sleep(0.3)
        yield root
    finally:
        for process in reversed(processes):
            _stop(process)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurmrestd(slurm_cluster):
    """slurmrestd (JWT auth) in front of ``slurm_cluster``, as an unprivileged user.

    Yields ``{"rest_url", "rest_user", "rest_token_file"}``: the EngineSpec fields of the
    ``slurm-rest`` engine. The token comes from ``scontrol token`` and sits in a 0600 file.
    """
    if not shutil.which("slurmrestd"):
        pytest.skip("slurmrestd is not installed (scripts/install-system-deps.sh)")
    port = _free_port()
    env = dict(os.environ, SLURM_JWT="daemon")  # slurmrestd: authenticate clients by JWT
    process = subprocess.Popen(
        ["slurmrestd", "-f", os.environ["SLURM_CONF"], "-a", "rest_auth/jwt",
         "-s", "openapi/v0.0.38", "-u", "nobody", "-g", "nogroup", f"127.0.0.1:{port}"],
        env=env, stdout=open(slurm_cluster / "log" / "slurmrestd.out", "ab"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        token = subprocess.run(["scontrol", "token", "username=root", "lifespan=86400"],
                               capture_output=True, text=True, check=True).stdout.strip()
        token_file = slurm_cluster / "state" / "rest.jwt"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                log = (slurm_cluster / "log" / "slurmrestd.out").read_text()[-2000:]
                pytest.fail(f"slurmrestd did not start:\n{log}")
            time.sleep(0.1)
        yield {"rest_url": f"http://127.0.0.1:{port}", "rest_user": "root",
               "rest_token_file": str(token_file)}
    finally:
        _stop(process)


def slurm_engine(kind: str, rest: dict | None, **options):
    """An EngineSpec of ``kind`` ("slurm" or "slurm-rest", using the slurmrestd fixture)."""
    from hpc.job import EngineSpec

    extra = rest if kind == "slurm-rest" else {}
    return EngineSpec(kind=kind, **extra, **options)


@contextlib.contextmanager
def partition_down(name: str = "debug"):
    """Queue but start nothing while inside (jobs wait with reason PartitionDown)."""
    _scontrol("update", f"PartitionName={name}", "State=DOWN")
    try:
        yield
    finally:
        _scontrol("update", f"PartitionName={name}", "State=UP")


def _scontrol(*args: str) -> None:
    result = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"scontrol {' '.join(args)}: {result.stderr}"


def hold_all_but_first_task(array_id: str) -> None:
    """Hold every task of the pending array job ``array_id`` except task 0."""
    _scontrol("hold", array_id)
    _scontrol("release", f"{array_id}_0")


def wait_for(condition, what: str, timeout: float = 600.0, poll_s: float = 0.1):
    """Poll ``condition()`` until truthy (returned) or fail after a generous ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(poll_s)


@pytest.fixture(scope="session")
def dask_address():
    """A running dask scheduler with one worker process (the "existing scheduler" engine)."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           dashboard_address=":0", memory_limit=0)
    yield cluster.scheduler_address
    cluster.close()


def served(project: Project, export: str, box=None) -> np.ndarray:
    """What the viewer shows for ``export`` (features: the project's feature computer)."""
    from ilastik_web.abc import Box

    generation = project.current_generation()
    box = box or Box.from_shape(project.source.base.shape)
    if export == "features":
        return generation.computer.features(0, box)
    return generation.pyramids[export].base.read(box)


def corrupt_copy(source: str, destination: Path) -> str:
    """A copy of a zarr v2 array with one chunk's bytes replaced by garbage."""
    shutil.copytree(source, destination)
    chunk = destination / "1.1.1"
    assert chunk.exists(), sorted(p.name for p in destination.iterdir())
    chunk.write_bytes(b"not a compressed chunk" * 10)
    return str(destination)
