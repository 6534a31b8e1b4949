"""``ilastik-web import-ilp`` and ``ilastik-web export-ilp``: desktop ilastik projects in and out.

A problem is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ilastik_web.errors import IlastikWebError

log = logging.getLogger(__name__)

EXIT_USAGE = 2


def add_commands(commands: argparse._SubParsersAction) -> None:
    importer = commands.add_parser(
        "import-ilp",
        help="make a project from a desktop ilastik .ilp",
        description="Make an ilastik-web project folder DIR from a desktop ilastik Pixel "
        "Classification project: its raw data (copied into DIR), classes and colours, label "
        "blocks, feature selection and, when it has one, ilastik's trained forest, which "
        "serves ilastik's predictions until you retrain. Nothing in the .ilp is unpickled.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    importer.add_argument("ilp", type=Path, metavar="PROJECT.ilp", help="the ilastik project")
    importer.add_argument("directory", type=Path, metavar="DIR",
                          help="the new project folder (must not hold a project)")
    importer.add_argument("--data", default=None, metavar="PATH",
                          help="the raw data, when it moved from where the .ilp says "
                               "(an image, .npy, or file.h5/dataset)")
    importer.add_argument("--lane", type=int, default=0, metavar="N",
                          help="which of the project's images (lanes) to import")
    importer.set_defaults(func=run_import)

    exporter = commands.add_parser(
        "export-ilp",
        help="write a project as a desktop ilastik .ilp",
        description="Write the project in DIR as a desktop ilastik 1.4 Pixel Classification "
        "project: its data (referenced, relative to the .ilp when below its folder), classes "
        "and colours, labels and feature selection. No forest is stored: ilastik trains its "
        "own from the labels.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    exporter.add_argument("directory", type=Path, metavar="DIR", help="the project folder")
    exporter.add_argument("ilp", type=Path, metavar="PROJECT.ilp", help="the file to write")
    exporter.set_defaults(func=run_export)


def _fail(message: str) -> int:
    sys.stderr.write(f"ilastik-web: error: {message}\n")
    return EXIT_USAGE


def run_import(args: argparse.Namespace) -> int:
    from ilastik_web.ilp.importer import import_ilp

    try:
        project = import_ilp(args.ilp, args.directory, data=args.data, lane=args.lane)
    except (IlastikWebError, OSError) as exc:
        return _fail(str(exc))
    try:
        shape = "×".join(str(n) for n in project.source.base.shape)
        classifier = ("ilastik's forest serves predictions" if project.generation
                      else "no classifier yet")
        sys.stdout.write(
            f"imported {args.ilp.name} into {args.directory}: {shape} voxels, "
            f"{project.source.base.num_channels} channel(s), {len(project.classes)} classes, "
            f"{len(project.selection)} features, {classifier}\n"
        )
        for note in project.import_notes:
            sys.stdout.write(f"  note: {note}\n")
    finally:
        project.close()
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ilastik_web.ilp.exporter import export_ilp
    from ilastik_web.project import Project

    try:
        project = Project.open(args.directory)
    except (IlastikWebError, OSError) as exc:
        return _fail(str(exc))
    try:
        export_ilp(project, args.ilp)
        sys.stdout.write(f"wrote {args.ilp}: {len(project.classes)} classes, "
                         f"{len(project.selection)} features, labels of revision "
                         f"{project.labels.revision}\n")
    except (IlastikWebError, OSError) as exc:
        return _fail(str(exc))
    finally:
        project.close()
    return 0
