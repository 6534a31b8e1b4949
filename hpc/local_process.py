"""Local jobs a server starts: one worker process at a lower OS priority, not a cluster.

The server must stay interactive while an export runs, so its local jobs do not run in
a thread of the server (which would start a dask ``LocalCluster`` inside it). Instead
:class:`ProcessLauncher` starts ``python -m hpc.local_process JOB_DIR --run N`` with a
``nice`` increment and a thread count (its CPU share). The process computes the job's
missing blocks in order, finalises the output and records the end state in the job
folder itself, so the server only has to reap it.

The process starts a session of its own. Where the kernel groups processes by session
for scheduling (Linux autogroups, on by default), a niced process in the server's own
session competes thread by thread with every busy thread of the server: with 8 viewers
keeping the workers busy an export got 0.23x of its idle throughput. In a session of its
own the export is one group against the server's group, so its ``threads`` threads keep
about their share of the cores (the bound on how much it slows the viewers, who keep the
rest) and its ``nice`` increment applies to the group too.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import hpc
from hpc.job import Job
from hpc.worker import CANCELLED, limit_threads, run_block

log = logging.getLogger(__name__)


class ProcessLauncher:
    """Starts local jobs as niced worker processes and reaps them.

    Parameters
    ----------
    threads
        Threads each job process may use (numba, the forest).
    nice
        ``nice`` increment of the job processes.
    """

    def __init__(self, threads: int = 1, nice: int = 5):
        self.threads = max(1, int(threads))
        self.nice = int(nice)
        self._lock = threading.Lock()
        self._processes: dict[str, subprocess.Popen] = {}

    def start(self, job: Job, run: int) -> int:
        """Start computing ``job``'s run ``run``; returns the process id."""
        root = str(Path(hpc.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                    else "")
        for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(self.threads)
        log_file = open(job.folder / "process.log", "ab")  # noqa: SIM115 - the child owns it
        nice = self.nice
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "hpc.local_process", str(job.folder.resolve()),
                 "--run", str(run), "--threads", str(self.threads)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                preexec_fn=(lambda: lower_priority(nice)) if nice > 0 else None,  # noqa: PLW1509
                start_new_session=True, close_fds=True,
            )
        finally:
            log_file.close()
        with self._lock:
            self._processes[job.id] = process
        return process.pid

    def running(self, job_id: str) -> bool | None:
        """Whether this launcher's process for ``job_id`` still runs (None: not ours)."""
        with self._lock:
            process = self._processes.get(job_id)
            if process is None:
                return None
            if process.poll() is None:
                return True
            del self._processes[job_id]
            return False

    def close(self, timeout: float = 10.0) -> None:
        """Ask running jobs' processes to stop (their jobs can be resumed later)."""
        with self._lock:
            processes = list(self._processes.values())
            self._processes.clear()
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()


def lower_priority(nice: int) -> None:
    """Add ``nice`` to this process's priority and, where the kernel has autogroups, to
    its session's group (this process leads a new session)."""
    os.nice(nice)
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(min(19, nice)))
    except OSError:  # no autogroups (or not allowed): the process nice still applies
        pass


def compute_job(folder: str, run: int, threads: int | None = None) -> None:
    """Compute the missing blocks of run ``run`` in order with ``threads`` threads (default:
    the job's ``engine.threads``), finalise, record the end."""
    from hpc.engines import JobCancelled, JobFailed, missing_blocks
    from hpc.service import JobService

    job = Job(Path(folder))
    service = JobService(job.folder.parent)

    def blocks(job: Job, engine, run: int, on_progress) -> None:
        for index in missing_blocks(job):
            try:
                outcome = run_block(folder, index, run, threads)
            except Exception:
                failures = job.failures()
                raise JobFailed(next(iter(failures.values()), "a block failed")
                                .splitlines()[0]) from None
            if outcome == CANCELLED or job.cancel_requested:
                raise JobCancelled()

    service.run_local(job, job.spec.engine, run, None, runner=blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpc.local_process",
                                     description="Run an ilastik-web job's blocks locally.")
    parser.add_argument("job_dir")
    parser.add_argument("--run", type=int, required=True, help="run number")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads to use (default: the job's engine threads)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit_threads(args.threads or 1)
    compute_job(str(Path(args.job_dir).resolve()), args.run, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
