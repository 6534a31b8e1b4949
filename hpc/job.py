"""Jobs on disk: a job folder holds everything a worker needs, and the job's state.

Layout of ``<store>/<id>/``::

    job.json        id, state, spec, timestamps, message, run number, engine handles
    plan.json       the block plan
    classifier.pkl  the classifier frozen at submission
    features.json   the feature selection it was trained with
    done/<i>        one marker per finished block (holds the run that computed it)
    failed/<i>      the traceback of a block that failed
    logs/           worker and driver logs
    cancel          present once a cancel was requested
    finished        present once the output is complete (pyramid, conversion)
    staging.zarr    blocks of HDF5/TIFF exports before conversion

Everything is written atomically (temp file + rename), so any process may read at any
time and a job survives the process that submitted it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpc.plan import BlockPlan
from ilastik_web.errors import InvalidRequestError, NotFoundError

log = logging.getLogger(__name__)

PENDING = "PENDING"
RUNNING = "RUNNING"
DONE = "DONE"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED)
TERMINAL = (DONE, FAILED, CANCELLED)
FORMATS = ("ome-zarr", "ome-zarr-0.5", "n5", "precomputed", "hdf5", "tiff")
ENGINE_KINDS = ("local", "dask", "slurm", "slurm-rest")
#: What a job computes: a blockwise prediction export, or one of the SAM tasks of
#: :mod:`hpc.sam_jobs` (whose blocks are training runs or groups of slices to embed).
JOB_KINDS = ("export", "sam-finetune", "sam-embeddings")
#: Engines whose blocks run as Slurm array jobs (state from the cluster, not a thread).
SLURM_KINDS = ("slurm", "slurm-rest")


@dataclass(frozen=True)
class EngineSpec:
    """Where a job's blocks run.

    Attributes
    ----------
    kind
        ``"local"`` (a dask cluster on this machine), ``"dask"`` (an existing scheduler
        at ``address``), ``"slurm"`` (sbatch array jobs, from a submit host) or
        ``"slurm-rest"`` (the same array jobs through ``slurmrestd`` at ``rest_url``, from
        anywhere that reaches it; see :mod:`hpc.slurm_rest`).
    workers
        Local dask worker processes, or Slurm array tasks running at once (0: no limit).
    threads
        Threads per worker (forest and filters).
    address
        Scheduler address for ``"dask"``.
    partition, account, time, mem, cpus, gpus
        Slurm resources per array task (``time`` like ``"01:00:00"``, ``mem`` like
        ``"4G"``); None leaves Slurm's default.
    blocks_per_task
        Blocks each Slurm array task computes.
    python
        The Python interpreter on the cluster nodes (default: this process's).
    env_file
        Slurm engines: a file of ``NAME=value`` lines the batch scripts load first, on
        the nodes (object-storage settings and keys for the workers; keep it 0600).
    rest_url, rest_user, rest_token_file, rest_api
        ``"slurm-rest"`` only: slurmrestd's base URL, the Slurm user jobs run as, a file
        holding a JWT for that user (``scontrol token``; read at each call, so it may be
        rotated; default: the ``SLURM_JWT`` environment variable) and the OpenAPI
        version. The token itself is never stored with the job.
    """

    kind: str = "local"
    workers: int = 1
    threads: int = 1
    address: str | None = None
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    mem: str | None = None
    cpus: int | None = None
    gpus: int | None = None
    blocks_per_task: int = 1
    python: str | None = None
    env_file: str | None = None
    rest_url: str | None = None
    rest_user: str | None = None
    rest_token_file: str | None = None
    rest_api: str = "v0.0.38"

    def __post_init__(self) -> None:
        if self.kind not in ENGINE_KINDS:
            raise InvalidRequestError(f"unknown engine {self.kind!r}; choose one of "
                                      f"{', '.join(ENGINE_KINDS)}")
        if self.kind == "slurm-rest" and not (self.rest_url and self.rest_user):
            raise InvalidRequestError("the slurm-rest engine needs rest_url and rest_user")
        if self.kind == "dask" and not self.address:
            raise InvalidRequestError("the dask engine needs a scheduler address")
        if self.workers < 0 or self.threads < 1 or self.blocks_per_task < 1:
            raise InvalidRequestError("workers >= 0, threads >= 1 and blocks_per_task >= 1")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> EngineSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def load_engines(path: str | Path) -> dict[str, EngineSpec]:
    """Named engines from a JSON file ``{"name": {"kind": ..., EngineSpec fields}}``.

    The server offers only these (besides ``local``), so a request names an engine and
    never sets a URL, a token file or an interpreter itself.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"{path}: cannot read engines: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise InvalidRequestError(f"{path}: expected {{name: {{kind: ..., ...}}}}")
    engines = {}
    for name, fields in data.items():
        unknown = set(fields) - set(EngineSpec.__dataclass_fields__)
        if unknown:
            raise InvalidRequestError(f"{path}: engine {name!r}: unknown keys {sorted(unknown)}")
        engines[name] = EngineSpec(**fields)
    return engines


@dataclass(frozen=True)
class JobSpec:
    """What a job computes.

    Attributes
    ----------
    source
        Location of the input (anything :func:`ilastik_web.sources.open_source` opens).
    output
        Path of the result.
    format
        One of :data:`FORMATS`.
    export
        ``probabilities``, ``segmentation``, ``uncertainty`` or ``features``.
    level
        Pyramid level of the source to predict at.
    voxel_size
        Voxel size override (nm, z, y, x), as the project opened the source.
    engine
        Where it runs.
    project
        The project folder it was submitted from, if any.
    generation
        The classifier generation frozen at submission.
    memory_bytes
        Budget per block computation the plan was sized for.
    kind
        One of :data:`JOB_KINDS`; SAM jobs keep what they compute in ``params``.
    params
        The task's parameters (``kind != "export"``), as :mod:`hpc.sam_jobs` reads them.
    feature_channels
        The source's channels that feed the features (the project's choice); None: all.
    dtype
        How the output is stored (see :data:`hpc.writers.OUTPUT_DTYPES`); None: the
        export's default (uint8 as the viewer shows it, float32 features).
    """

    source: str
    output: str
    format: str
    export: str
    level: int = 0
    voxel_size: tuple[float, float, float] | None = None
    engine: EngineSpec = field(default_factory=EngineSpec)
    project: str | None = None
    generation: int = 0
    memory_bytes: int = 1 << 30
    kind: str = "export"
    params: dict | None = None
    feature_channels: tuple[int, ...] | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise InvalidRequestError(f"unknown job kind {self.kind!r}")
        if self.kind == "export" and self.format not in FORMATS:
            raise InvalidRequestError(
                f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}"
            )

    def to_json(self) -> dict:
        data = asdict(self)
        data["engine"] = self.engine.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> JobSpec:
        data = dict(data)
        data["engine"] = EngineSpec.from_json(data.get("engine") or {})
        for key in ("voxel_size", "feature_channels"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Job:
    """One job folder. Cheap to construct; every property reads the disk."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.id = self.folder.name

    # -- files ----------------------------------------------------------------------------

    @property
    def record_path(self) -> Path:
        return self.folder / "job.json"

    @property
    def classifier_path(self) -> Path:
        return self.folder / "classifier.pkl"

    @property
    def features_path(self) -> Path:
        return self.folder / "features.json"

    @property
    def logs_dir(self) -> Path:
        return self.folder / "logs"

    @property
    def staging_path(self) -> Path:
        return self.folder / "staging.zarr"

    @property
    def progress_path(self) -> Path:
        return self.folder / "progress.json"

    @property
    def result_path(self) -> Path:
        return self.folder / "result.json"

    def _read_optional(self, path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):  # absent, or being replaced
            return None

    def progress(self) -> dict | None:
        """What a running task last reported (steps, loss, ...); None for exports."""
        return self._read_optional(self.progress_path)

    def result(self) -> dict | None:
        """A finished task's result (e.g. the checkpoint a fine-tuning wrote)."""
        return self._read_optional(self.result_path)

    def record(self) -> dict:
        try:
            return json.loads(self.record_path.read_text())
        except FileNotFoundError:
            raise NotFoundError(f"no job {self.id}") from None
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"job {self.id}: job.json is corrupt: {exc}") from None

    def update(self, **changes: Any) -> dict:
        """Merge ``changes`` into job.json (atomically) and return the new record."""
        record = self.record()
        record.update(changes)
        write_json_atomic(self.record_path, record)
        return record

    @property
    def spec(self) -> JobSpec:
        return JobSpec.from_json(self.record()["spec"])

    @property
    def plan(self) -> BlockPlan:
        return BlockPlan.from_json(json.loads((self.folder / "plan.json").read_text()))

    @property
    def state(self) -> str:
        return self.record()["state"]

    # -- blocks ---------------------------------------------------------------------------

    def is_done(self, index: int) -> bool:
        return (self.folder / "done" / str(index)).exists()

    def mark_done(self, index: int, run: int) -> None:
        write_text_atomic(self.folder / "done" / str(index), f"{run}\n")

    def done_blocks(self) -> dict[int, int]:
        """Finished block index -> the run that computed it."""
        out = {}
        for marker in (self.folder / "done").iterdir():
            if marker.name.isdigit():
                try:
                    out[int(marker.name)] = int(marker.read_text().strip() or 0)
                except (OSError, ValueError):
                    continue
        return out

    def blocks_done(self) -> int:
        return sum(1 for m in (self.folder / "done").iterdir() if m.name.isdigit())

    def mark_failed(self, index: int, error: str) -> None:
        write_text_atomic(self.folder / "failed" / str(index), error)

    def failures(self) -> dict[int, str]:
        out = {}
        for marker in sorted((self.folder / "failed").iterdir()):
            if marker.name.isdigit():
                out[int(marker.name)] = marker.read_text()
        return out

    def clear_failures(self) -> None:
        for marker in (self.folder / "failed").iterdir():
            marker.unlink(missing_ok=True)

    # -- flags ----------------------------------------------------------------------------

    def request_cancel(self) -> None:
        (self.folder / "cancel").touch()

    @property
    def cancel_requested(self) -> bool:
        return (self.folder / "cancel").exists()

    def clear_cancel(self) -> None:
        (self.folder / "cancel").unlink(missing_ok=True)

    def mark_finished(self) -> None:
        (self.folder / "finished").touch()

    @property
    def finished(self) -> bool:
        return (self.folder / "finished").exists()

    # -- logs -----------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def append_log(self, name: str, line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_path(name), "a") as f:
            f.write(f"{stamp} {line.rstrip()}\n")

    def logs(self, max_bytes: int = 256 * 1024) -> str:
        """All logs, oldest file first, each headed by its name; the tail if long."""
        parts = []
        files = sorted(self.logs_dir.glob("*.log"), key=lambda p: (p.stat().st_mtime, p.name))
        for path in files:
            parts.append(f"==> {path.name} <==\n{path.read_text(errors='replace')}")
        text = "\n".join(parts)
        return text[-max_bytes:]

    # -- summary --------------------------------------------------------------------------

    def to_json(self) -> dict:
        """What the API and the CLI show."""
        record = self.record()
        total = record.get("blocks_total", 0)
        spec = record["spec"]
        return {
            "id": self.id,
            "state": record["state"],
            "message": record.get("message", ""),
            "blocks_done": self.blocks_done(),
            "blocks_total": total,
            "created": record.get("created"),
            "started": record.get("started"),
            "finished": record.get("finished"),
            "run": record.get("run", 0),
            "source": spec["source"],
            "output": spec["output"],
            "format": spec["format"],
            "export": spec["export"],
            "engine": spec["engine"]["kind"],
            "generation": spec.get("generation", 0),
            "kind": spec.get("kind", "export"),
            "progress": self.progress(),
            "result": self.result(),
            "dtype": spec.get("dtype"),
            "feature_channels": spec.get("feature_channels"),
        }


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class JobStore:
    """The jobs of one folder (a project's ``jobs/``).

    Parameters
    ----------
    root
        Folder holding one subfolder per job; made if missing.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, spec: JobSpec, plan: BlockPlan, *, classifier, selection) -> Job:
        """A new PENDING job with its frozen classifier, selection and block plan."""
        job_id = new_job_id()
        folder = self.root / job_id
        tmp = self.root / f".{job_id}.creating"
        for sub in ("done", "failed", "logs"):
            (tmp / sub).mkdir(parents=True)
        classifier.save(tmp / "classifier.pkl")
        write_json_atomic(tmp / "features.json",
                          [[s.feature_id, s.sigma, s.in_2d] for s in selection])
        write_json_atomic(tmp / "plan.json", plan.to_json())
        write_json_atomic(tmp / "job.json", {
            "id": job_id,
            "state": PENDING,
            "message": "",
            "spec": spec.to_json(),
            "blocks_total": len(plan),
            "created": time.time(),
            "started": None,
            "finished": None,
            "run": 0,
            "handles": {},
        })
        os.replace(tmp, folder)  # a job appears complete or not at all
        return Job(folder)

    def create_task(self, spec: JobSpec, blocks_total: int) -> Job:
        """A new PENDING job of a task kind (no classifier, no block plan): its
        ``blocks_total`` units of work are described by ``spec.params``."""
        if spec.kind == "export" or blocks_total < 1:
            raise InvalidRequestError("a task job has a task kind and at least one block")
        job_id = new_job_id()
        folder = self.root / job_id
        tmp = self.root / f".{job_id}.creating"
        for sub in ("done", "failed", "logs"):
            (tmp / sub).mkdir(parents=True)
        write_json_atomic(tmp / "job.json", {
            "id": job_id, "state": PENDING, "message": "", "spec": spec.to_json(),
            "blocks_total": int(blocks_total), "created": time.time(), "started": None,
            "finished": None, "run": 0, "handles": {},
        })
        os.replace(tmp, folder)
        return Job(folder)

    def get(self, job_id: str) -> Job:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise NotFoundError(f"no job {job_id!r}")
        job = Job(self.root / job_id)
        if not job.record_path.exists():
            raise NotFoundError(f"no job {job_id!r}")
        return job

    def list(self) -> list[Job]:
        """Jobs, oldest first."""
        jobs = [Job(p) for p in self.root.iterdir()
                if not p.name.startswith(".") and (p / "job.json").exists()]
        return sorted(jobs, key=lambda j: j.id)
