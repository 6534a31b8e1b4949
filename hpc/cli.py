"""The ``predict`` and ``jobs`` subcommands of ``ilastik-web``.

``ilastik-web predict --project P --output DEST --export segmentation`` freezes the
project's classifier, plans blocks within the memory bound and runs them on the chosen
engine with a progress bar; ``ilastik-web jobs --project P list|status|logs|cancel|
resume|wait`` manages the project's jobs (those submitted from the server too).

Bad arguments give one line on stderr and exit code 2; a job that fails or is cancelled
exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import types
from pathlib import Path

from hpc.job import DONE, ENGINE_KINDS, FORMATS, SLURM_KINDS, TERMINAL, EngineSpec
from hpc.plan import parse_roi
from ilastik_web.argtypes import non_negative_int, positive
from ilastik_web.classify.blockwise import OUTPUTS
from ilastik_web.errors import IlastikWebError

log = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_USAGE = 2
_SUFFIX_FORMATS = ((".ome.zarr", "ome-zarr"), (".zarr", "ome-zarr"), (".n5", "n5"),
                   (".h5", "hdf5"), (".hdf5", "hdf5"), (".hdf", "hdf5"), (".tif", "tiff"),
                   (".tiff", "tiff"), (".precomputed", "precomputed"))


def _out(text: str) -> None:
    sys.stdout.write(f"{text}\n")


def _err(text: str) -> None:
    sys.stderr.write(f"{text}\n")


class UsageError(Exception):
    """A bad argument found after parsing."""


def _one_line_error(parser: argparse.ArgumentParser, message: str) -> None:
    sys.stderr.write(f"{parser.prog}: error: {message}\n")
    raise SystemExit(EXIT_USAGE)


def _terse(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.error = types.MethodType(_one_line_error, parser)  # type: ignore[method-assign]
    return parser


def parse_bytes(text: str) -> int:
    """``"512M"``, ``"2G"``, ``"1.5GiB"`` or plain bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 512M or 2G)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    return int(float(match.group(1)) * scale[match.group(2).lower()])


def format_of(output: str, given: str | None) -> str:
    if given:
        return given
    lower = output.lower().rstrip("/")
    for suffix, name in _SUFFIX_FORMATS:
        if lower.endswith(suffix):
            return name
    raise UsageError(f"cannot tell the format of {output!r} from its suffix; pass --format")


def add_commands(subparsers) -> None:
    """Add ``predict`` and ``jobs`` to an argparse subparsers object.

    Each sets ``func`` (parsed args -> exit code) through ``set_defaults``.
    """
    predict = _terse(subparsers.add_parser(
        "predict", help="predict a whole volume blockwise and export it",
        description="Apply a project's classifier to whole volumes, blockwise, on this "
                    "machine (dask), a dask scheduler or Slurm."))
    predict.add_argument("--project", required=True, help="project folder (trained)")
    predict.add_argument("--input", nargs="+", metavar="SRC",
                         help="input locations (default: the project's source)")
    predict.add_argument("--output", required=True, metavar="DEST",
                         help="output path; with several inputs it must contain {name}")
    predict.add_argument("--export", required=True, choices=OUTPUTS)
    predict.add_argument("--format", choices=FORMATS,
                         help="output format (default: from the output's suffix; .ome.zarr is "
                              "OME-Zarr 0.4, which ilastik, BigDataViewer and MoBIE read; "
                              "ome-zarr-0.5 writes zarr v3)")
    predict.add_argument("--roi", help="region z0:z1,y0:y1,x0:x1 (voxels of --level)")
    predict.add_argument("--level", type=non_negative_int, default=0, help="pyramid level")
    predict.add_argument("--memory", type=parse_bytes, default=1 << 30,
                         help="memory per block computation (default 1G)")
    predict.add_argument("--engine", choices=ENGINE_KINDS, default="local",
                         help="where blocks run: local dask, a dask --scheduler, Slurm by "
                              "sbatch (on a submit host) or slurm-rest (slurmrestd at "
                              "--rest-url; the JWT from $SLURM_JWT or --rest-token-file)")
    predict.add_argument("--workers", type=positive(int), default=1,
                         help="local dask workers, or concurrent Slurm tasks (0: no limit)")
    predict.add_argument("--threads", type=positive(int), default=1,
                         help="threads per worker")
    predict.add_argument("--scheduler", help="dask scheduler address (--engine dask)")
    for flag in ("--partition", "--account", "--time", "--mem"):
        predict.add_argument(flag, help=f"Slurm {flag[2:]}")
    predict.add_argument("--cpus", type=positive(int), help="Slurm CPUs per task")
    predict.add_argument("--gpus", type=positive(int), help="Slurm GPUs per task")
    predict.add_argument("--blocks-per-task", type=positive(int), default=1,
                         help="blocks per Slurm array task")
    predict.add_argument("--python", help="Python interpreter on the Slurm nodes "
                                           "(default: this one)")
    predict.add_argument("--env-file", help="Slurm: NAME=value file the batch scripts load "
                                             "on the nodes (storage keys)")
    predict.add_argument("--rest-url", help="slurmrestd base URL (--engine slurm-rest)")
    predict.add_argument("--rest-user", help="Slurm user the JWT was issued for")
    predict.add_argument("--rest-token-file", help="file holding the JWT (default: "
                                                   "$SLURM_JWT)")
    predict.add_argument("--detach", action="store_true",
                         help="Slurm: submit and return without waiting")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(func=run_predict)

    jobs = _terse(subparsers.add_parser("jobs", help="list and manage batch jobs"))
    jobs.add_argument("--project", required=True, help="project folder")
    actions = jobs.add_subparsers(dest="action", required=True)
    _terse(actions.add_parser("list", help="all jobs, oldest first"))
    for name, text in (("status", "one job's state and progress"), ("logs", "a job's logs"),
                       ("cancel", "stop a job"), ("resume", "restart a failed/cancelled job"),
                       ("wait", "wait until a job ends")):
        action = _terse(actions.add_parser(name, help=text))
        action.add_argument("job_id")
    jobs.set_defaults(func=run_jobs)


def _engine(args) -> EngineSpec:
    return EngineSpec(
        kind=args.engine, workers=args.workers, threads=max(1, args.threads),
        address=args.scheduler, partition=args.partition, account=args.account,
        time=args.time, mem=args.mem, cpus=args.cpus, gpus=args.gpus,
        blocks_per_task=max(1, args.blocks_per_task), python=args.python,
        env_file=args.env_file,
        rest_url=args.rest_url, rest_user=args.rest_user,
        rest_token_file=args.rest_token_file,
    )


def _progress_bar(total: int, quiet: bool, label: str):
    from tqdm import tqdm

    bar = tqdm(total=total, unit="block", desc=label, disable=quiet, file=sys.stderr)

    def update(done: int, total_now: int) -> None:
        bar.total = total_now
        bar.n = done
        bar.refresh()

    return bar, update


def run_predict(args) -> int:
    """Handler of ``predict``; returns the exit code."""
    from hpc.service import JobService
    from ilastik_web.project import Project

    prog = "ilastik-web predict"
    try:
        inputs = args.input or [None]
        if len(inputs) > 1 and "{name}" not in args.output:
            raise UsageError("with several inputs, --output must contain {name}")
        engine = _engine(args)
        project = Project.open(args.project)
        try:
            service = JobService(Path(args.project) / "jobs")
            jobs = []
            for source in inputs:
                name = Path(str(source or project.source_location or "output")).name
                name = name.split(".")[0] or "output"
                output = args.output.replace("{name}", name)
                fmt = format_of(output, args.format)
                level_shape = (project.source.levels[args.level].shape
                               if args.level < len(project.source) else (1, 1, 1))
                roi = parse_roi(args.roi, level_shape) if args.roi else None
                job = service.submit_from_project(
                    project, output=output, format=fmt, export=args.export, level=args.level,
                    roi=roi, engine=engine, memory_bytes=args.memory, source=source,
                    background=True,
                )
                jobs.append(job)
                _err(f"job {job.id}: {output}")
                if engine.kind in SLURM_KINDS and args.detach:
                    continue
                summary = _wait_with_bar(service, job.id, args.quiet, name)
                if summary["state"] != DONE:
                    _err(f"{prog}: job {job.id} {summary['state']}: {summary['message']}")
                    return EXIT_FAILED
            return 0
        finally:
            project.close()
    except (UsageError, IlastikWebError, ValueError) as exc:
        _err(f"{prog}: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err(f"{prog}: interrupted; resume with `ilastik-web jobs --project {args.project} "
              "resume ID`")
        return EXIT_FAILED


def _wait_with_bar(service, job_id: str, quiet: bool, label: str) -> dict:
    summary = service.get(job_id)
    bar, update = _progress_bar(summary["blocks_total"], quiet, label)
    try:
        try:
            return service.wait(job_id, on_progress=update, poll_s=0.25)
        except KeyboardInterrupt:
            service.cancel(job_id)
            service.wait(job_id, timeout=60)
            raise
    finally:
        bar.close()


def run_jobs(args) -> int:
    """Handler of ``jobs``; returns the exit code."""
    from hpc.service import JobService

    prog = f"ilastik-web jobs {args.action}"
    try:
        folder = Path(args.project)
        if not (folder / "project.json").exists():
            raise UsageError(f"no project at {folder}")
        service = JobService(folder / "jobs")
        if args.action == "list":
            for summary in service.list():
                _out(f"{summary['id']}  {summary['state']:<9}  {summary['engine']:<10}  "
                      f"{summary['blocks_done']}/{summary['blocks_total']}  "
                      f"{summary['export']} -> {summary['output']}")
            return 0
        if args.action == "logs":
            sys.stdout.write(service.logs(args.job_id))
            return 0
        if args.action == "status":
            summary = service.get(args.job_id)
        elif args.action == "cancel":
            summary = service.cancel(args.job_id)
        elif args.action == "resume":
            service.resume(args.job_id, background=True)
            summary = _wait_with_bar(service, args.job_id, False, args.job_id)
        else:
            summary = _wait_with_bar(service, args.job_id, False, args.job_id)
        _out(json.dumps(summary, indent=2))
        if args.action in ("resume", "wait") and summary["state"] in TERMINAL:
            return 0 if summary["state"] == DONE else EXIT_FAILED
        return 0
    except (UsageError, IlastikWebError, ValueError) as exc:
        _err(f"{prog}: error: {exc}")
        return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m hpc.cli``) until the main CLI wires these in."""
    parser = _terse(argparse.ArgumentParser(prog="ilastik-web"))
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
