"""``ilastik-web sam-segment``: micro-sam's automatic segmentation of every slice of a
volume, exported as one label volume (see :mod:`ilastik_web.sam.export`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ilastik_web.argtypes import non_negative_int, positive

log = logging.getLogger("ilastik_web.cli")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def add_sam_commands(commands: argparse._SubParsersAction) -> None:
    segment = commands.add_parser(
        "sam-segment",
        help="segment every object of every slice with micro-sam (AMG / AIS)",
        description="Run micro-sam's automatic instance segmentation on each slice of a "
        "volume and write one uint32 label volume (zarr). Ids are unique across slices; "
        "rerunning with the same options resumes an interrupted export.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    segment.add_argument("source", metavar="SRC", help="volume to segment (any readable format)")
    segment.add_argument("--output", required=True, type=Path, metavar="OUT.zarr",
                         help="zarr array to write (created; resumed if it holds this export)")
    segment.add_argument("--sam-model", required=True, metavar="[NAME=]TYPE:PATH",
                         help="SAM / micro-sam checkpoint, e.g. vit_b_lm:/models/vit_b_lm.pt "
                              "(never downloaded)")
    segment.add_argument("--sam-device", choices=["cpu", "cuda"], default=None,
                         help="device (default: CUDA when present, else CPU)")
    segment.add_argument("--method", choices=["auto", "amg", "ais"], default="auto",
                         help="amg: point-grid mask generation; ais: the checkpoint's instance "
                              "decoder; auto: ais when the checkpoint has a decoder")
    segment.add_argument("--plane", choices=["xy", "xz", "yz"], default="xy",
                         help="slices to segment")
    segment.add_argument("--start", type=non_negative_int, default=0, help="first slice")
    segment.add_argument("--stop", type=positive(int), default=None,
                         help="slice after the last (default: the volume's end)")
    segment.add_argument("--points-per-side", type=positive(int), default=32,
                         help="AMG: point grid side")
    segment.add_argument("--pred-iou-thresh", type=_fraction, default=0.88,
                         help="AMG: minimum predicted IoU of a mask")
    segment.add_argument("--stability-score-thresh", type=_fraction, default=0.95,
                         help="AMG: minimum stability of a mask")
    segment.add_argument("--foreground-threshold", type=_fraction, default=0.5,
                         help="AIS: foreground probability threshold")
    segment.add_argument("--min-size", type=non_negative_int, default=0,
                         help="drop objects smaller than this many pixels")
    segment.add_argument("--allow-root", action="append", default=[], metavar="DIR", type=Path,
                         help="only open sources under DIR (repeatable; default: anywhere)")
    segment.add_argument("--log-level", default="INFO",
                         choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity")
    segment.set_defaults(func=run_sam_segment)

    export = commands.add_parser(
        "collection-export",
        help="write a collection's annotations as a training set",
        description="Export the annotated items of an image folder (annotations in its "
        "annotations/ folder) as image/label pairs, split into train and val by item, with "
        "a manifest.json (item, author, time, classes, source of each object).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    export.add_argument("folder", type=Path, help="the collection's image folder")
    export.add_argument("--output", required=True, type=Path, metavar="DIR",
                        help="new folder for the training set")
    export.add_argument("--layout", choices=["tiff", "cellpose", "ome-zarr"], default="tiff",
                        help="tiff: images/ + labels/ (micro-sam, torch-em); cellpose: "
                             "<item>.tif + <item>_masks.tif; ome-zarr: labels/instances")
    export.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of the items held out for validation")
    export.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    export.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity")
    export.set_defaults(func=run_collection_export)

    tune = commands.add_parser(
        "sam-finetune",
        help="fine-tune a SAM model on a training set (micro-sam's trainer)",
        description="Fine-tune a SAM / micro-sam checkpoint on a tiff-layout training set "
        "(from collection-export) with micro-sam's training code, on CUDA when present, "
        "else the CPU. Writes one checkpoint: serve it with --sam-model NAME=TYPE:OUTPUT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    tune.add_argument("training_set", type=Path, metavar="DIR", help="tiff-layout training set")
    tune.add_argument("--sam-model", required=True, metavar="[NAME=]TYPE:PATH",
                      help="the checkpoint to start from (never downloaded)")
    tune.add_argument("--output", required=True, type=Path, metavar="OUT.pt",
                      help="the fine-tuned checkpoint to write")
    tune.add_argument("--iterations", type=positive(int), default=1000,
                      help="optimiser steps")
    tune.add_argument("--patch", type=positive(int), default=256, help="patch side, pixels")
    tune.add_argument("--batch-size", type=positive(int), default=1, help="patches per step")
    tune.add_argument("--lr", type=float, default=1e-5, help="learning rate")
    tune.add_argument("--objects", type=positive(int), default=25,
                      help="objects sampled per batch")
    tune.add_argument("--sam-device", choices=["cpu", "cuda"], default=None,
                      help="device (default: CUDA when present, else CPU; in this process "
                           "only, a job's worker picks CUDA when its node has it)")
    tune.add_argument("--engine", default=None, metavar="KIND[,KEY=VALUE...]",
                      help="run as a batch job on this engine (local, dask, slurm, "
                           "slurm-rest, with hpc.job.EngineSpec fields, e.g. "
                           "slurm,partition=gpu,gpus=1) and wait for it; default: in this "
                           "process")
    tune.add_argument("--jobs", type=Path, default=None, metavar="DIR",
                      help="with --engine: the job folder store (e.g. a project's jobs/; "
                           "default: jobs/ beside --output)")
    tune.add_argument("--log-level", default="INFO",
                      choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity")
    tune.set_defaults(func=run_sam_finetune)


def run_sam_segment(args: argparse.Namespace) -> int:
    import json
    import sys

    from tqdm import tqdm

    from ilastik_web.cli import CommandError
    from ilastik_web.errors import IlastikWebError
    from ilastik_web.sam import ModelSpec, load_model
    from ilastik_web.sam.automatic import AutoParams
    from ilastik_web.sam.export import export_automatic
    from ilastik_web.sources import open_source

    roots = [root.resolve() for root in args.allow_root] or None
    try:
        volume = open_source(args.source, allowed_roots=roots)
        model = load_model(ModelSpec.parse(args.sam_model), device=args.sam_device)
        params = AutoParams(method=args.method, points_per_side=args.points_per_side,
                            pred_iou_thresh=args.pred_iou_thresh,
                            stability_score_thresh=args.stability_score_thresh,
                            foreground_threshold=args.foreground_threshold,
                            min_size=args.min_size)
        with tqdm(desc="sam-segment", unit="slice") as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            result = export_automatic(volume.base, model, params, args.output,
                                      plane=args.plane, start=args.start, stop=args.stop,
                                      progress=progress)
    except (IlastikWebError, OSError, ValueError) as exc:
        raise CommandError(str(exc) or type(exc).__name__) from None
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def run_collection_export(args: argparse.Namespace) -> int:
    import json
    import sys

    from ilastik_web.cli import CommandError
    from ilastik_web.collections import Collection
    from ilastik_web.collections.trainingset import export_training_set
    from ilastik_web.errors import IlastikWebError

    try:
        manifest = export_training_set(Collection.from_folder(args.folder), args.output,
                                       layout=args.layout, val_fraction=args.val_fraction,
                                       seed=args.seed)
    except (IlastikWebError, OSError, ValueError) as exc:
        raise CommandError(str(exc) or type(exc).__name__) from None
    splits = [entry["split"] for entry in manifest["items"]]
    sys.stdout.write(json.dumps({"output": str(args.output), "train": splits.count("train"),
                                 "val": splits.count("val"),
                                 "classes": manifest["classes"]}) + "\n")
    return 0


def run_sam_finetune(args: argparse.Namespace) -> int:
    import json
    import sys

    from tqdm import tqdm

    from ilastik_web.cli import CommandError
    from ilastik_web.errors import IlastikWebError
    from ilastik_web.sam import ModelSpec
    from ilastik_web.sam.finetune import FinetuneSettings, finetune

    try:
        settings = FinetuneSettings(iterations=args.iterations,
                                    patch_shape=(args.patch, args.patch),
                                    batch_size=args.batch_size, lr=args.lr,
                                    n_objects_per_batch=args.objects)
        if args.engine is not None:
            result = _finetune_job(args, settings)
            sys.stdout.write(json.dumps(result) + "\n")
            return 0
        with tqdm(desc="sam-finetune", unit="step", total=args.iterations) as bar:
            def progress(done: int, total: int) -> None:
                bar.n = done
                bar.refresh()

            result = finetune(ModelSpec.parse(args.sam_model), args.training_set, args.output,
                              settings, device=args.sam_device, progress=progress)
    except (IlastikWebError, OSError, ValueError) as exc:
        raise CommandError(str(exc) or type(exc).__name__) from None
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _finetune_job(args: argparse.Namespace, settings) -> dict:
    """``sam-finetune --engine``: submit the job, follow its steps, return its result."""
    import time

    from tqdm import tqdm

    from hpc.engine_config import parse_engine
    from hpc.job import DONE, TERMINAL
    from hpc.sam_jobs import submit_finetune
    from hpc.service import JobService
    from ilastik_web.cli import CommandError
    from ilastik_web.sam import ModelSpec

    _, engine = parse_engine(f"cli={args.engine}")
    model = ModelSpec.parse(args.sam_model)
    jobs = JobService(args.jobs or Path(args.output).resolve().parent / "jobs")
    job = submit_finetune(jobs, model, args.training_set, args.output, settings,
                          name=Path(args.output).stem, engine=engine, background=True)
    with tqdm(desc=f"sam-finetune job {job.id}", unit="step", total=args.iterations) as bar:
        while (summary := jobs.get(job.id))["state"] not in TERMINAL:
            progress = summary.get("progress") or {}
            bar.n = int(progress.get("step", 0))
            if progress.get("loss") is not None:
                bar.set_postfix(loss=f"{progress['loss']:.4f}")
            bar.refresh()
            time.sleep(0.5)
    if summary["state"] != DONE:
        raise CommandError(f"job {job.id} {summary['state'].lower()}: {summary['message']} "
                           f"(logs in {job.logs_dir})")
    return {**summary["result"], "job": job.id}
