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
