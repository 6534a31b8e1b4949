"""Engines: run a job's missing blocks on dask (local or remote) or on Slurm.

A dask task is ``run_block(job_dir, index, run)`` and returns a short string, so the
graph holds block indices, never the volume. Slurm gets one array job over lists of
block indices plus a finalising job that depends on it (``afterok``).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hpc
from hpc.job import EngineSpec, Job
from hpc.worker import CANCELLED, COMPUTED, SKIPPED, run_block
from ilastik_web.errors import InvalidRequestError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class JobFailed(Exception):
    """A block failed; the message is the first failure's one-line error."""


class JobCancelled(Exception):
    """The job's cancel flag was set while it ran."""


def missing_blocks(job: Job) -> list[int]:
    done = job.done_blocks()
    return [i for i in range(job.record()["blocks_total"]) if i not in done]


def run_dask(job: Job, engine: EngineSpec, run: int, on_progress: Progress | None = None) -> None:
    """Compute ``job``'s missing blocks on a dask cluster; return when all are done.

    ``engine.kind == "local"`` starts a cluster of ``engine.workers`` processes with
    ``engine.threads`` threads each and stops it afterwards; ``"dask"`` connects to
    ``engine.address`` (whose workers must see the job folder and the output path).

    Raises
    ------
    JobFailed
        A block raised (its traceback is in the job's ``failed/`` marker and log).
    JobCancelled
        The job's cancel flag appeared; pending tasks were cancelled.
    """
    from distributed import Client, LocalCluster, as_completed

    todo = missing_blocks(job)
    total = job.record()["blocks_total"]
    done = total - len(todo)
    if on_progress is not None:
        on_progress(done, total)
    if not todo:
        return
    cluster = None
    if engine.kind == "local":
        cluster = LocalCluster(
            n_workers=max(1, engine.workers), threads_per_worker=engine.threads,
            processes=True, dashboard_address=":0", memory_limit=0, silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    else:
        client = Client(engine.address, timeout="10s")
    folder = str(job.folder.resolve())
    try:
        futures = [client.submit(run_block, folder, i, run, pure=False, key=f"block-{i}-{run}")
                   for i in todo]
        for future in as_completed(futures):
            if future.status == "error":
                client.cancel(futures)
                failures = job.failures()
                first = next(iter(failures.values()), str(future.exception()))
                raise JobFailed(first.splitlines()[0])
            outcome = future.result()
            if outcome in (COMPUTED, SKIPPED):
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
            if outcome == CANCELLED or job.cancel_requested:
                client.cancel(futures)
                raise JobCancelled()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# -- Slurm --------------------------------------------------------------------------------


def _repo_root() -> Path:
    return Path(hpc.__file__).resolve().parent.parent


def _sbatch(args: list[str]) -> str:
    try:
        result = subprocess.run(["sbatch", "--parsable", *args], capture_output=True,
                                text=True, timeout=60)
    except FileNotFoundError:
        raise InvalidRequestError("sbatch not found: is this a Slurm submit host?") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise InvalidRequestError(f"sbatch failed: {message[-1] if message else result.returncode}")
    return result.stdout.strip().split(";")[0]


def _script(command: list[str], env_file: str | None = None) -> str:
    env = f"export PYTHONPATH={shlex.quote(str(_repo_root()))}${{PYTHONPATH:+:$PYTHONPATH}}"
    threads = "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"
    settings = [f"set -a; . {shlex.quote(env_file)}; set +a"] if env_file else []
    return "\n".join(["#!/bin/bash", "set -e", *settings, env, threads,
                      "exec " + shlex.join(command), ""])


@dataclass(frozen=True)
class SlurmSubmission:
    """One run of a job as Slurm sees it, whichever way it is submitted.

    Attributes
    ----------
    tasks
        Block indices of each array task (empty: only the finaliser runs).
    array_script, final_script
        The batch scripts (also written to the job's ``slurm/`` folder).
    folder
        The job folder (the jobs' working directory; must be shared with the nodes).
    name
        The Slurm job name.
    array_output, final_output
        Output file patterns (``%A``/``%a``/``%j`` as Slurm expands them).
    """

    tasks: list[list[int]]
    array_script: str
    final_script: str
    folder: Path
    name: str
    array_output: str
    final_output: str

    def array_range(self, throttle: int) -> str:
        """The ``--array`` value: all tasks, at most ``throttle`` at once (0: no limit)."""
        limit = f"%{throttle}" if throttle > 0 else ""
        return f"0-{len(self.tasks) - 1}{limit}"


def prepare_slurm(job: Job, engine: EngineSpec, run: int) -> SlurmSubmission:
    """Split the missing blocks into array tasks and write the run's batch scripts."""
    folder = job.folder.resolve()
    slurm_dir = folder / "slurm"
    slurm_dir.mkdir(exist_ok=True)
    todo = missing_blocks(job)
    per = engine.blocks_per_task
    tasks = [todo[i:i + per] for i in range(0, len(todo), per)]
    (slurm_dir / f"run{run}.json").write_text(json.dumps({"tasks": tasks}))
    python = engine.python or sys.executable
    array_script = _script([python, "-m", "hpc.worker", str(folder), "--run", str(run)],
                           engine.env_file)
    final_script = _script([python, "-m", "hpc.worker", str(folder), "--finalize"],
                           engine.env_file)
    (slurm_dir / f"run{run}.sh").write_text(array_script)
    (slurm_dir / "finalize.sh").write_text(final_script)
    return SlurmSubmission(tasks, array_script, final_script, folder,
                           f"ilastik-web-{job.id}",
                           f"{folder}/logs/slurm-run{run}-%A_%a.log",
                           f"{folder}/logs/slurm-finalize-%j.log")


def submit_slurm(job: Job, engine: EngineSpec, run: int) -> list[str]:
    """Submit the missing blocks with ``sbatch`` as one array job and a dependent
    finalising job.

    Returns
    -------
    list of str
        The Slurm job ids (array job first, finaliser last).
    """
    plan = prepare_slurm(job, engine, run)
    slurm_dir = plan.folder / "slurm"
    common = [f"--chdir={plan.folder}", f"--job-name={plan.name}"]
    for flag, value in (("--partition", engine.partition), ("--account", engine.account),
                        ("--time", engine.time), ("--mem", engine.mem)):
        if value:
            common.append(f"{flag}={value}")
    resources = list(common)
    if engine.cpus:
        resources.append(f"--cpus-per-task={engine.cpus}")
    if engine.gpus:
        resources.append(f"--gres=gpu:{engine.gpus}")
    ids = []
    if plan.tasks:
        ids.append(_sbatch([*resources, f"--array={plan.array_range(engine.workers)}",
                            f"--output={plan.array_output}", str(slurm_dir / f"run{run}.sh")]))
    dependency = [f"--dependency=afterok:{ids[0]}"] if ids else []
    ids.append(_sbatch([*common, *dependency, f"--output={plan.final_output}",
                        str(slurm_dir / "finalize.sh")]))
    log.info("job %s run %d: slurm jobs %s (%d tasks)", job.id, run, ids, len(plan.tasks))
    return ids


def slurm_alive(ids: list[str]) -> bool:
    """Whether any of the Slurm jobs ``ids`` is still queued or running."""
    if not ids:
        return False
    result = subprocess.run(["squeue", "-h", "-o", "%F %T"], capture_output=True, text=True,
                            timeout=30)
    if result.returncode != 0:
        raise InvalidRequestError(f"squeue failed: {result.stderr.strip()}")
    active = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    return any(i in active for i in ids)


def slurm_cancel(ids: list[str]) -> None:
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=30)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
