"""Slurm through ``slurmrestd``: submit, poll and cancel from outside the cluster.

A web server on a cloud VM is no Slurm submit host: it has no ``sbatch``, no munge key and
no slurm.conf. It reaches ``slurmrestd`` over HTTP(S) with a JSON Web Token instead
(``auth/jwt`` in slurm.conf; ``scontrol token username=U lifespan=S`` issues one). The
jobs are the same as the ``sbatch`` engine's (:func:`hpc.engines.prepare_slurm`): one
array job over the missing blocks and a finaliser depending on it, writing to the job
folder, which the cluster nodes must see at the same path (shared storage).

The token comes from the ``SLURM_JWT`` environment variable or from
``EngineSpec.rest_token_file`` (re-read at every call, so a cron job may rotate it). It
is sent in a header only, and never logged or stored with the job.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hpc.engines import prepare_slurm
from hpc.job import EngineSpec, Job
from ilastik_web.errors import InvalidRequestError

log = logging.getLogger(__name__)

TOKEN_ENV = "SLURM_JWT"
#: Slurm job states in which a job may still run (or is being cleaned up).
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING",
                           "REQUEUED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
                           "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
#: The environment of the batch scripts (which set PYTHONPATH and threads themselves).
SCRIPT_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class SlurmRestError(InvalidRequestError):
    """slurmrestd refused a request or could not be reached (one line, no token)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def unknown_job(self) -> bool:
        """Slurm no longer knows the job (purged after MinJobAge, or never existed)."""
        text = str(self)
        return self.status == 404 or "Invalid job id" in text or "Unable to find" in text


class SlurmRestClient:
    """The few slurmrestd calls the engine needs.

    Parameters
    ----------
    url
        Base URL of slurmrestd (``https://slurm.example.org:6820``).
    user
        The Slurm user name the token was issued for (jobs run as this user).
    token_file
        File holding the token (``SLURM_JWT=...`` as ``scontrol token`` prints it, or
        the bare token); None: the ``SLURM_JWT`` environment variable.
    api
        The OpenAPI plugin version (``v0.0.38`` in Slurm 22.05).
    timeout
        Seconds per HTTP request.
    """

    def __init__(self, url: str, user: str, *, token_file: str | None = None,
                 api: str = "v0.0.38", timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.user = user
        self.token_file = token_file
        self.api = api
        self.timeout = timeout

    @classmethod
    def for_engine(cls, engine: EngineSpec) -> SlurmRestClient:
        if not engine.rest_url or not engine.rest_user:
            raise InvalidRequestError("the slurm-rest engine needs rest_url and rest_user")
        return cls(engine.rest_url, engine.rest_user, token_file=engine.rest_token_file,
                   api=engine.rest_api)

    def _token(self) -> str:
        if self.token_file:
            try:
                text = Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise SlurmRestError(f"cannot read the Slurm token file {self.token_file}: "
                                     f"{exc.strerror}") from None
        else:
            text = os.environ.get(TOKEN_ENV, "").strip()
        if text.startswith(f"{TOKEN_ENV}="):
            text = text[len(TOKEN_ENV) + 1:]
        if not text:
            where = self.token_file or f"${TOKEN_ENV}"
            raise SlurmRestError(f"no Slurm JWT in {where} (issue one with `scontrol token`)")
        return text

    def request(self, method: str, path: str, body: Any = None) -> dict:
        """One call; returns the decoded answer, raising SlurmRestError on any error."""
        url = f"{self.url}/slurm/{self.api}/{path.lstrip('/')}"
        data = None if body is None else json.dumps(body).encode()
        headers = {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self._token(),
                   "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            answer = _decode(payload)
            errors = _errors(answer)
            if errors is None:
                errors = f"HTTP {exc.code}"
            raise SlurmRestError(f"slurmrestd {method} {path}: {errors}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SlurmRestError(f"cannot reach slurmrestd at {self.url}: {reason}") from None
        answer = _decode(payload)
        errors = _errors(answer)
        if errors is not None:
            raise SlurmRestError(f"slurmrestd {method} {path}: {errors}")
        return answer

    # -- calls ---------------------------------------------------------------------------

    def ping(self) -> dict:
        """slurmctld's answer to a ping (raises when unreachable or the token is bad)."""
        return self.request("GET", "ping")

    def submit(self, script: str, job: dict[str, Any]) -> str:
        """Submit a batch ``script`` with job properties ``job``; returns the job id."""
        properties = {"environment": SCRIPT_ENVIRONMENT, **job}
        answer = self.request("POST", "job/submit", {"script": script, "job": properties})
        job_id = answer.get("job_id")
        if job_id is None:
            raise SlurmRestError("slurmrestd accepted the job but returned no job id")
        return str(job_id)

    def states(self, job_id: str) -> list[str]:
        """States of the job (every task of an array job); [] once Slurm forgot it."""
        try:
            answer = self.request("GET", f"job/{job_id}")
        except SlurmRestError as exc:
            if exc.unknown_job:
                return []
            raise
        return [str(j.get("job_state", "")) for j in answer.get("jobs", [])]

    def cancel(self, job_id: str) -> None:
        """Cancel the job (all tasks of an array job); a job already gone is fine."""
        try:
            self.request("DELETE", f"job/{job_id}")
        except SlurmRestError as exc:
            if not exc.unknown_job and "already completed" not in str(exc):
                raise


def _decode(payload: bytes) -> dict:
    try:
        value = json.loads(payload or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        text = payload[:200].decode(errors="replace").strip()
        raise SlurmRestError(f"slurmrestd sent no JSON: {text!r}") from None
    return value if isinstance(value, dict) else {}


def _errors(answer: dict) -> str | None:
    errors = [e for e in answer.get("errors") or [] if isinstance(e, dict) and
              (e.get("error_number") or e.get("error_code") or e.get("error"))]
    if not errors:
        return None
    return "; ".join(str(e.get("description") or e.get("error") or e.get("error_number"))
                     for e in errors)


def _minutes(text: str | None) -> int | None:
    """Slurm ``[days-]hours:minutes:seconds`` (or minutes) as whole minutes, rounded up."""
    if not text:
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        minutes = parts[0]
    else:
        while len(parts) < 3:
            parts.insert(0, 0)
        hours, mins, secs = parts
        minutes = hours * 60 + mins + (1 if secs else 0)
    return minutes + int(days or 0) * 24 * 60


def _megabytes(text: str | None) -> int | None:
    """Slurm memory (``"512M"``, ``"4G"``, plain megabytes) in megabytes."""
    if not text:
        return None
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    unit = text[-1].upper()
    if unit in scale:
        return max(1, int(float(text[:-1]) * scale[unit]))
    return int(text)


def submit_slurm_rest(job: Job, engine: EngineSpec, run: int) -> list[str]:
    """The ``sbatch`` engine's array job and finaliser, submitted through slurmrestd.

    Returns
    -------
    list of str
        The Slurm job ids (array job first, finaliser last).
    """
    client = SlurmRestClient.for_engine(engine)
    plan = prepare_slurm(job, engine, run)
    common: dict[str, Any] = {"name": plan.name, "current_working_directory": str(plan.folder)}
    for key, value in (("partition", engine.partition), ("account", engine.account),
                       ("time_limit", _minutes(engine.time)),
                       ("memory_per_node", _megabytes(engine.mem))):
        if value:
            common[key] = value
    resources = dict(common)
    if engine.cpus:
        resources["cpus_per_task"] = engine.cpus
    if engine.gpus:
        resources["gres"] = f"gpu:{engine.gpus}"
    ids = []
    if plan.tasks:
        ids.append(client.submit(plan.array_script, {
            **resources, "array": plan.array_range(engine.workers),
            "standard_output": plan.array_output, "standard_error": plan.array_output}))
    final = {**common, "standard_output": plan.final_output,
             "standard_error": plan.final_output}
    if ids:
        final["dependency"] = f"afterok:{ids[0]}"
    try:
        ids.append(client.submit(plan.final_script, final))
    except SlurmRestError:
        for job_id in ids:
            client.cancel(job_id)
        raise
    log.info("job %s run %d: slurm jobs %s via %s (%d tasks)", job.id, run, ids, client.url,
             len(plan.tasks))
    return ids


def slurm_rest_alive(engine: EngineSpec, ids: list[str]) -> bool:
    """Whether any of the Slurm jobs ``ids`` may still run."""
    client = SlurmRestClient.for_engine(engine)
    return any(state in ACTIVE_STATES for job_id in ids for state in client.states(job_id))


def slurm_rest_cancel(engine: EngineSpec, ids: list[str]) -> None:
    client = SlurmRestClient.for_engine(engine)
    for job_id in ids:
        client.cancel(job_id)
