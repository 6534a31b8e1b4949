"""What runs on a worker: compute blocks of a job folder, and finalise its output.

Local and remote dask tasks call :func:`run_block`; Slurm array tasks run
``python -m hpc.worker JOB_DIR --run N --task T`` (the blocks listed for task T of run
N) and the finalising job ``python -m hpc.worker JOB_DIR --finalize``. A worker needs
only the job folder: the classifier, feature selection, source location, plan and
output layout are all in it. Finished blocks are skipped, so reruns resume.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpc.job import Job, JobSpec
from hpc.plan import BlockPlan
from hpc.writers import OutputLayout, OutputStore
from ilastik_web.cache import ArrayCache
from ilastik_web.classify.blockwise import predict_block
from ilastik_web.classify.features import FeatureComputer
from ilastik_web.classify.forest import PixelClassifier
from ilastik_web.sources import open_source

log = logging.getLogger(__name__)

#: Outcomes of :func:`run_block`.
COMPUTED, SKIPPED, CANCELLED = "computed", "skipped", "cancelled"


@dataclass
class WorkerContext:
    """A job folder opened for computing blocks (one per process and run)."""

    job: Job
    spec: JobSpec
    plan: BlockPlan
    classifier: PixelClassifier
    computer: FeatureComputer
    store: OutputStore


def output_store(job: Job) -> OutputStore:
    record = job.record()
    spec = JobSpec.from_json(record["spec"])
    layout = OutputLayout.from_json(record["layout"])
    return OutputStore(spec.format, spec.output, job.staging_path, layout)


def limit_threads(threads: int) -> None:
    """Keep numba, torch and the forest to ``threads`` so workers do not oversubscribe."""
    try:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    except (ImportError, ValueError):  # pragma: no cover - numba is a dependency
        pass
    try:
        import torch

        torch.set_num_threads(threads)
    except (ImportError, RuntimeError):  # pragma: no cover
        pass


@functools.lru_cache(maxsize=4)
def open_context(folder: str, run: int, threads: int | None = None) -> WorkerContext:
    """Load a job folder once per process and run (``run`` only keys the cache).

    ``threads`` (default: the job's ``engine.threads``) is what this process may use: a
    server's export process gets the server's CPU share for exports instead.
    """
    job = Job(Path(folder))
    spec = job.spec
    threads = max(1, int(threads if threads is not None else spec.engine.threads))
    limit_threads(threads)
    classifier = PixelClassifier.load(job.classifier_path)
    classifier.forest.set_params(n_jobs=threads)
    selection = [tuple(s) for s in json.loads(job.features_path.read_text())]
    source = open_source(spec.source, voxel_size=spec.voxel_size)
    # No feature cache: each block is computed once, and memory stays bounded.
    computer = FeatureComputer(source, selection, ArrayCache(0), channels=spec.feature_channels)
    return WorkerContext(job, spec, job.plan, classifier, computer, output_store(job))


def run_block(folder: str, index: int, run: int, threads: int | None = None) -> str:
    """Compute and write block ``index`` of the job in ``folder`` unless already done
    (with ``threads`` threads, default the job's ``engine.threads``).

    Returns
    -------
    str
        :data:`COMPUTED`, :data:`SKIPPED` (done before) or :data:`CANCELLED`.

    Raises
    ------
    Exception
        Whatever failed; the traceback is kept in the job's ``failed/<index>`` marker and
        its worker log first.
    """
    job = Job(Path(folder))
    if job.is_done(index):
        return SKIPPED
    if job.cancel_requested:
        return CANCELLED
    try:
        started = time.perf_counter()
        spec = job.spec
        if spec.kind != "export":
            from hpc.sam_jobs import run_task_block

            if not run_task_block(job, spec, index):
                job.append_log(f"worker-{os.getpid()}", f"block {index}: cancelled")
                return CANCELLED
        else:
            context = open_context(folder, run, threads)
            box = context.plan.source_box(index)
            data = predict_block(context.classifier, context.computer, box,
                                 output=context.spec.export, level=context.spec.level,
                                 dtype=context.spec.dtype)
            context.store.write(context.plan.output_box(index), np.ascontiguousarray(data))
        job.mark_done(index, run)
        seconds = time.perf_counter() - started
        log.debug("block %d in %.2f s", index, seconds)
        job.append_log(f"worker-{os.getpid()}", progress_line(job, index, seconds))
        return COMPUTED
    except Exception as exc:
        error = f"block {index}: {type(exc).__name__}: {exc}"
        job.append_log(f"worker-{os.getpid()}", error)
        job.mark_failed(index, f"{error}\n{traceback.format_exc()}")
        raise


def format_duration(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 05 s`` or ``12 s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def progress_line(job: Job, index: int, seconds: float) -> str:
    """The log line after block ``index``: its time, blocks done of all, and an ETA from the
    rate of this run (blocks done since it started, over the time since)."""
    record = job.record()
    total = int(record["blocks_total"])
    done = job.blocks_done()
    line = f"block {index} done in {seconds:.1f} s: {done}/{total} blocks"
    started, before = record.get("started"), int(record.get("blocks_at_start") or 0)
    if started and done > before and done < total:
        rate = (done - before) / max(time.time() - float(started), 1e-3)
        line += f", ETA {format_duration((total - done) / rate)}"
    return line


def run_blocks(folder: str, indices: list[int], run: int) -> dict[str, int]:
    """Run :func:`run_block` over ``indices`` in order; stop at a cancel or a failure."""
    counts = {COMPUTED: 0, SKIPPED: 0, CANCELLED: 0}
    for index in indices:
        outcome = run_block(folder, index, run)
        counts[outcome] += 1
        if outcome == CANCELLED:
            break
    return counts


def finalize(folder: str) -> None:
    """Pyramid / conversion once every block is done, then the ``finished`` marker."""
    job = Job(Path(folder))
    if job.finished:
        return
    total = job.record()["blocks_total"]
    done = job.blocks_done()
    if done < total:
        raise RuntimeError(f"cannot finalise: {done} of {total} blocks done")
    started = time.perf_counter()
    if job.spec.kind == "export":
        output_store(job).finalize()
    job.mark_finished()
    job.append_log("driver", f"output finalised in {time.perf_counter() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpc.worker",
                                     description="Compute blocks of an ilastik-web job.")
    parser.add_argument("job_dir")
    parser.add_argument("--run", type=int, default=1, help="run number (for done markers)")
    parser.add_argument("--task", type=int, default=None,
                        help="array task index (default: $SLURM_ARRAY_TASK_ID)")
    parser.add_argument("--finalize", action="store_true", help="finalise the output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    folder = str(Path(args.job_dir).resolve())
    try:
        if args.finalize:
            finalize(folder)
            return 0
        task = args.task if args.task is not None else int(os.environ["SLURM_ARRAY_TASK_ID"])
        tasks = json.loads((Path(folder) / "slurm" / f"run{args.run}.json").read_text())
        indices = tasks["tasks"][task]
        counts = run_blocks(folder, indices, args.run)
        log.info("task %d: %s", task, counts)
        return 0
    except Exception as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        log.debug("%s", traceback.format_exc())
        return 1


if __name__ == "__main__":
    sys.exit(main())
