"""Submitting, running, watching, cancelling and resuming jobs of one job store.

:class:`JobService` is what the CLI and the server use. Local and dask jobs run in a
thread of the submitting process (or in the foreground, for the CLI); Slurm jobs run on
the cluster and their state is derived from the job folder's markers and ``squeue``
whenever asked, so either survives a restart of the process that submitted it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from hpc.engines import (
    JobCancelled,
    JobFailed,
    Progress,
    pid_alive,
    run_dask,
    slurm_alive,
    slurm_cancel,
    submit_slurm,
)
from hpc.job import (
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    SLURM_KINDS,
    TERMINAL,
    EngineSpec,
    Job,
    JobSpec,
    JobStore,
)
from hpc.plan import BlockPlan, block_shape_for_budget, default_chunk_shape
from hpc.worker import finalize
from hpc.writers import (
    OutputLayout,
    OutputStore,
    is_object_output,
    release_output,
    reserve_output,
)
from ilastik_web.abc import Box
from ilastik_web.classify.blockwise import check_output, output_channels, output_dtype
from ilastik_web.classify.features import FeatureComputer
from ilastik_web.classify.forest import PixelClassifier
from ilastik_web.errors import ConflictError, InvalidRequestError
from ilastik_web.ngff import ClassInfo
from ilastik_web.sources.location import check_path_text

log = logging.getLogger(__name__)


def _checked_output(output: str | Path, format: str) -> str:
    """The output as stored with the job: an absolute path, or an ``s3://`` folder; it
    must not exist yet."""
    if is_object_output(output):
        from ilastik_web.sources.location import parse_location
        from ilastik_web.sources.s3 import has_objects

        if format in ("hdf5", "tiff"):
            raise InvalidRequestError("HDF5 and TIFF exports are written to local files only; "
                                      "choose ome-zarr, n5 or precomputed for object storage")
        location = parse_location(str(output))
        if not location.key:
            raise InvalidRequestError(f"{location}: give a folder inside the bucket")
        if has_objects(location.kvstore_spec()):
            raise ConflictError(f"output {location} already exists")
        return location.text
    # Local outputs are reserved atomically by reserve_output once the job is planned.
    return os.path.realpath(check_path_text(str(output)))


def _slurm_submit(job: Job, engine: EngineSpec, run: int) -> list[str]:
    if engine.kind == "slurm-rest":
        from hpc.slurm_rest import submit_slurm_rest

        return submit_slurm_rest(job, engine, run)
    return submit_slurm(job, engine, run)


def _slurm_alive(engine: EngineSpec, ids: list[str]) -> bool:
    if engine.kind == "slurm-rest":
        from hpc.slurm_rest import slurm_rest_alive

        return slurm_rest_alive(engine, ids)
    return slurm_alive(ids)


def _slurm_cancel(engine: EngineSpec, ids: list[str]) -> None:
    if engine.kind == "slurm-rest":
        from hpc.slurm_rest import slurm_rest_cancel

        slurm_rest_cancel(engine, ids)
    else:
        slurm_cancel(ids)


def plan_job(computer: FeatureComputer, classifier: PixelClassifier, *, export: str,
             level: int = 0, roi: Box | None = None, memory_bytes: int = 1 << 30,
             block_shape: Sequence[int] | None = None,
             chunk_shape: Sequence[int] | None = None,
             classes: Sequence[ClassInfo] = (),
             dtype: str | None = None) -> tuple[BlockPlan, OutputLayout]:
    """Blocks sized from ``memory_bytes`` (or given), and the output's layout (with the
    project's ``classes`` for names and colours in its metadata, stored as ``dtype``)."""
    check_output(export)
    if not 0 <= level < len(computer.source):
        raise InvalidRequestError(f"level {level} outside 0..{len(computer.source) - 1}")
    volume = computer.source.levels[level]
    region = roi if roi is not None else Box.from_shape(volume.shape)
    if not Box.from_shape(volume.shape).contains(region) or region.is_empty:
        raise InvalidRequestError(f"region {region} is empty or outside {volume.shape}")
    chunk = tuple(int(c) for c in chunk_shape) if chunk_shape else default_chunk_shape(
        region.shape)
    channels = output_channels(export, classifier)
    if block_shape is None:
        block_shape = block_shape_for_budget(
            region.shape, chunk, computer.halo(level), memory_bytes=memory_bytes,
            feature_channels=computer.num_features, input_channels=volume.num_channels,
            output_channels=channels,
        )
    plan = BlockPlan(region, tuple(int(b) for b in block_shape), chunk)  # type: ignore[arg-type]
    layout = OutputLayout(region.shape, channels, output_dtype(export, dtype).name, chunk,  # type: ignore[arg-type]
                          tuple(volume.voxel_size), export,  # type: ignore[arg-type]
                          classes=tuple(classes),
                          channel_values=tuple(classifier.label_values)
                          if export == "probabilities" else ())
    return plan, layout


class JobService:
    """The jobs of one store, and the threads running this process's local jobs.

    Parameters
    ----------
    store
        The job store (or its folder).
    launcher
        Runs background local jobs in niced worker processes (a server's); without one
        they run in a thread of this process on a dask ``LocalCluster``.
    """

    def __init__(self, store: JobStore | str | Path, *, launcher=None):
        self.store = store if isinstance(store, JobStore) else JobStore(store)
        self.launcher = launcher
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        # Object-store outputs being given to a job right now (see _reserve_object_output).
        self._object_outputs: set[str] = set()

    # -- submission ----------------------------------------------------------------------------

    def _reserve_object_output(self, output: str) -> None:
        """Claim an object-store output for a job being created.

        Object stores (Swift's S3 API) have no exclusive create, so the claim is this
        service's: an output some job of the store already writes, or that another
        submission is claiming at this moment, is refused. Two servers sharing a bucket
        path are not guarded against.
        """
        with self._lock:
            if output in self._object_outputs or any(
                    job.spec.output == output for job in self.store.list()):
                raise ConflictError(f"output {output} belongs to another job")
            self._object_outputs.add(output)

    def create(self, *, classifier: PixelClassifier, computer: FeatureComputer, source: str,
               output: str | Path, format: str, export: str, level: int = 0,
               roi: Box | None = None, engine: EngineSpec | None = None,
               voxel_size: Sequence[float] | None = None, project: str | None = None,
               generation: int = 0, memory_bytes: int = 1 << 30,
               block_shape: Sequence[int] | None = None,
               chunk_shape: Sequence[int] | None = None,
               classes: Sequence[ClassInfo] = (), dtype: str | None = None) -> Job:
        """A PENDING job with the classifier frozen (copied into the job folder).

        The output is reserved atomically (created empty, exclusively), so of two jobs
        asking for one new output exactly one gets it, and nothing that exists is reused.

        Raises
        ------
        InvalidRequestError
            Bad export, format, level or region, a budget too small for one chunk, a
            missing output folder, or a classifier that does not fit the feature selection.
        ConflictError
            The output path exists (or another job just reserved it).
        """
        if tuple(classifier.feature_names) != tuple(computer.channel_names):
            raise InvalidRequestError("the classifier was trained on other features")
        output_text = _checked_output(output, format)
        spec = JobSpec(source=source, output=output_text, format=format, export=export,
                       level=level, voxel_size=tuple(voxel_size) if voxel_size else None,
                       engine=engine or EngineSpec(), project=project, generation=generation,
                       memory_bytes=memory_bytes, feature_channels=computer.channels,
                       dtype=output_dtype(export, dtype).name)
        plan, layout = plan_job(computer, classifier, export=export, level=level, roi=roi,
                                memory_bytes=memory_bytes, block_shape=block_shape,
                                chunk_shape=chunk_shape, classes=classes, dtype=dtype)
        local = None if is_object_output(output_text) else Path(output_text)
        if local is not None:
            reserve_output(local, format)
        else:
            self._reserve_object_output(output_text)
        try:
            job = self.store.create(spec, plan, classifier=classifier,
                                    selection=computer.selection)
        except BaseException:
            if local is not None:
                release_output(local)
            raise
        finally:
            if local is None:
                with self._lock:
                    self._object_outputs.discard(output_text)
        job.update(layout=layout.to_json())
        job.append_log("driver", f"created: {len(plan)} blocks of {plan.block_shape} "
                                 f"over {plan.roi}, {export} as {format}")
        return job

    def submit_from_project(self, project, *, output: str | Path, format: str, export: str,
                            level: int = 0, roi: Box | None = None,
                            engine: EngineSpec | None = None, memory_bytes: int = 1 << 30,
                            source: str | None = None, background: bool = True,
                            dtype: str | None = None) -> Job:
        """Freeze ``project``'s current classifier and start a job over its source
        (or over ``source``, another volume of the same kind)."""
        generation = project.current_generation()
        location = source or project.source_location
        if location is None:
            raise InvalidRequestError("the project's source is in memory; give a source path")
        computer = generation.computer
        voxel_size = project.voxel_size_override
        if source is not None:
            from ilastik_web.sources import open_source

            computer = FeatureComputer(open_source(source), computer.selection, computer.cache,
                                       channels=computer.channels)
            voxel_size = None
        job = self.create(classifier=generation.classifier, computer=computer, source=location,
                          output=output, format=format, export=export, level=level, roi=roi,
                          engine=engine, voxel_size=voxel_size,
                          project=str(project.directory) if project.directory else None,
                          generation=generation.number, memory_bytes=memory_bytes,
                          classes=[ClassInfo(c.value, c.name, c.color) for c in project.classes],
                          dtype=dtype)
        self.start(job, background=background)
        return job

    def submit_task(self, spec: JobSpec, blocks_total: int, *,
                    background: bool = True) -> Job:
        """Create and start a task job (see :mod:`hpc.sam_jobs`) on ``spec.engine``."""
        job = self.store.create_task(spec, blocks_total)
        job.append_log("driver", f"created: {spec.kind}, {blocks_total} blocks")
        self.start(job, background=background)
        return job

    # -- running ---------------------------------------------------------------------------------

    def start(self, job: Job, *, background: bool = True,
              on_progress: Progress | None = None) -> Job:
        """Run ``job``'s missing blocks (a new run) on its engine.

        Local and dask jobs run in a thread (``background``) or before this returns;
        Slurm jobs are submitted and this returns at once.
        """
        record = job.record()
        if record["state"] == RUNNING:
            raise InvalidRequestError(f"job {job.id} is already running")
        if record["state"] == DONE:
            raise InvalidRequestError(f"job {job.id} is already done")
        spec = JobSpec.from_json(record["spec"])
        run = int(record.get("run", 0)) + 1
        job.clear_cancel()
        job.clear_failures()
        if spec.kind == "export":
            store = OutputStore(spec.format, spec.output, job.staging_path,
                                OutputLayout.from_json(record["layout"]))
            store.create()
        handles: dict = {"owner_pid": os.getpid()}
        job.update(state=RUNNING, run=run, started=time.time(), finished=None,
                   message="running", handles=handles, blocks_at_start=job.blocks_done())
        job.append_log("driver", f"run {run} on {spec.engine.kind}: "
                                 f"{job.blocks_done()} of {record['blocks_total']} blocks done")
        if spec.engine.kind in SLURM_KINDS:
            try:
                handles["slurm"] = _slurm_submit(job, spec.engine, run)
            except Exception as exc:
                self._end(job, FAILED, str(exc))
                raise
            job.update(handles=handles)
            return job
        if not background:
            self.run_local(job, spec.engine, run, on_progress)
            return job
        if self.launcher is not None and spec.engine.kind == "local":
            handles["owner_pid"] = self.launcher.start(job, run)
            job.update(handles=handles)
            return job
        thread = threading.Thread(target=self.run_local, args=(job, spec.engine, run, None),
                                  name=f"job-{job.id}", daemon=True)
        with self._lock:
            self._threads[job.id] = thread
        thread.start()
        return job

    def run_local(self, job: Job, engine: EngineSpec, run: int,
                  on_progress: Progress | None, runner=run_dask) -> None:
        """Compute the job's missing blocks with ``runner``, finalise, record the end."""
        try:
            runner(job, engine, run, on_progress)
            finalize(str(job.folder))
        except JobCancelled:
            self._end(job, CANCELLED, "cancelled")
        except JobFailed as exc:
            self._end(job, FAILED, str(exc))
        except Exception as exc:  # the engine itself broke: still a clear job state
            log.exception("job %s failed", job.id)
            self._end(job, FAILED, f"{type(exc).__name__}: {exc}")
        else:
            self._end(job, DONE, "done")
        finally:
            with self._lock:
                self._threads.pop(job.id, None)

    def _end(self, job: Job, state: str, message: str) -> None:
        job.update(state=state, message=message, finished=time.time())
        job.append_log("driver", f"{state}: {message}")

    # -- state -----------------------------------------------------------------------------------

    def refresh(self, job: Job) -> dict:
        """Bring a RUNNING job's state up to date and return its summary."""
        record = job.record()
        if record["state"] != RUNNING:
            return job.to_json()
        spec = JobSpec.from_json(record["spec"])
        handles = record.get("handles") or {}
        if spec.engine.kind in SLURM_KINDS:
            ids = handles.get("slurm", [])
            if job.finished:
                self._end(job, DONE, "done")
            elif job.failures():
                _slurm_cancel(spec.engine, ids)
                first = next(iter(job.failures().values()))
                self._end(job, FAILED, first.splitlines()[0])
            elif not _slurm_alive(spec.engine, ids):
                if job.cancel_requested:
                    self._end(job, CANCELLED, "cancelled")
                else:
                    self._end(job, FAILED, "Slurm jobs ended before finishing; see the logs")
        else:
            owner = int(handles.get("owner_pid", 0))
            ours = self.launcher.running(job.id) if self.launcher is not None else None
            if ours is not None:
                running = ours
            elif owner == os.getpid():
                with self._lock:
                    running = job.id in self._threads
            else:
                running = owner > 0 and pid_alive(owner)
            if not running and job.state == RUNNING:
                self._end(job, FAILED, "interrupted (its process stopped); resume to continue")
        return job.to_json()

    def get(self, job_id: str) -> dict:
        return self.refresh(self.store.get(job_id))

    def list(self) -> list[dict]:
        return [self.refresh(job) for job in self.store.list()]

    def cancel(self, job_id: str) -> dict:
        """Ask a job to stop; Slurm jobs are scancelled, local workers stop between blocks."""
        job = self.store.get(job_id)
        record = job.record()
        if record["state"] in TERMINAL:
            return job.to_json()
        job.request_cancel()
        if record["state"] == PENDING:
            self._end(job, CANCELLED, "cancelled before it started")
        elif (engine := JobSpec.from_json(record["spec"]).engine).kind in SLURM_KINDS:
            _slurm_cancel(engine, (record.get("handles") or {}).get("slurm", []))
            job.append_log("driver", f"cancel requested ({engine.kind})")
        else:
            job.append_log("driver", "cancel requested")
        return self.refresh(job)

    def resume(self, job_id: str, *, background: bool = True,
               on_progress: Progress | None = None) -> dict:
        """Start a FAILED or CANCELLED job again; finished blocks are not recomputed."""
        job = self.store.get(job_id)
        self.refresh(job)
        if job.state not in (FAILED, CANCELLED, PENDING):
            raise InvalidRequestError(f"job {job_id} is {job.state}; only failed or cancelled "
                                      "jobs resume")
        self.start(job, background=background, on_progress=on_progress)
        return self.refresh(job)

    def wait(self, job_id: str, *, timeout: float | None = None, poll_s: float = 0.5,
             on_progress: Progress | None = None) -> dict:
        """Block until the job ends (or ``timeout``); returns its summary."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            summary = self.get(job_id)
            if on_progress is not None:
                on_progress(summary["blocks_done"], summary["blocks_total"])
            if summary["state"] in TERMINAL:
                return summary
            if deadline is not None and time.monotonic() > deadline:
                return summary
            time.sleep(poll_s)

    def logs(self, job_id: str) -> str:
        return self.store.get(job_id).logs()

    def output_source(self, job_id: str):
        """The finished output opened as a multiscale volume, ready to serve as a layer."""
        from ilastik_web.sources import open_source

        job = self.store.get(job_id)
        if self.refresh(job)["state"] != DONE:
            raise InvalidRequestError(f"job {job_id} is not done")
        return open_source(job.spec.output)
