"""The ``ilastik-web`` command line.

``ilastik-web serve [PATH ...]`` opens the sources and serves them with the viewer on
one port; more subcommands (predict, jobs) add themselves to :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import hashlib
import logging
import os
import re
import socket
import sys
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ilastik_web.argtypes import positive
from ilastik_web.cache import ArrayCache
from ilastik_web.config import TOKEN_ENV, ServerConfig
from ilastik_web.errors import IlastikWebError

if TYPE_CHECKING:
    from ilastik_web.project import Project

log = logging.getLogger("ilastik_web.cli")

EXIT_USAGE = 2
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: Classes of a new project on a user's data (ilastik's default names).
DEFAULT_CLASSES = ("Label 1", "Label 2")
#: Quiet time after a label edit before retraining: one drag is one stroke, so short.
LIVE_DEBOUNCE_S = 0.1


class CommandError(Exception):
    """A problem to report as one line, exiting with status 2."""


def _voxel_size(text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected three positive numbers Z,Y,X in nanometres, got {text!r}"
        )
    return (values[0], values[1], values[2])


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ilastik-web",
        description="Interactive ilastik-style pixel classification in the browser, "
        "through Neuroglancer, for volumes larger than memory.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_serve_command(commands)
    from hpc.cli import add_commands

    add_commands(commands)
    from ilastik_web.cli_sam import add_sam_commands

    add_sam_commands(commands)
    return parser


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve volumes with the Neuroglancer viewer",
        description="Open each PATH and serve it, with the viewer, API and data on one port. "
        "Prints the viewer URL. Without PATH, serves the built-in demo volume and its "
        "ground-truth labels.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument(
        "paths", nargs="*", metavar="PATH",
        help="volumes to open (any format the sources support: zarr, N5, HDF5, TIFF, ...); "
        "none: the built-in demo",
    )
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind; anything but loopback should use --token")
    serve.add_argument("--port", type=_port, default=8000, help="port to listen on (0: any free)")
    serve.add_argument("--no-browser", action="store_true",
                       help="do not open a browser on the viewer URL")
    serve.add_argument("--token", default=None,
                       help=f"require this access token (default: ${TOKEN_ENV} if set, else none)")
    serve.add_argument("--allow-root", action="append", default=[], metavar="DIR", type=Path,
                       help="only open sources under DIR (repeatable; default: anywhere)")
    serve.add_argument("--voxel-size", type=_voxel_size, default=None, metavar="Z,Y,X",
                       help="voxel size in nanometres, overriding the files' metadata")
    serve.add_argument("--cache-mb", type=positive(int), default=1024, metavar="N",
                       help="memory budget of the data cache in MiB")
    serve.add_argument("--workers", type=positive(int), default=4, metavar="N",
                       help="threads reading and encoding chunks")
    serve.add_argument("--project", type=Path, default=None, metavar="DIR",
                       help="project folder (classes, labels, classifier) for painting and live "
                            "training on the first PATH; created if missing. Default: one folder "
                            "per source under $ILASTIK_WEB_DATA (~/.local/share/ilastik-web); "
                            "the demo has its own")
    serve.add_argument("--no-project", action="store_true",
                       help="only browse the data: no labels, no training")
    serve.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity")
    serve.add_argument("--sam-model", action="append", default=[], metavar="[NAME=]TYPE:PATH",
                       help="a Segment Anything checkpoint for the SAM tools, e.g. "
                            "vit_b:/models/sam_vit_b.pth or lm=vit_b_lm:/models/vit_b_lm.pt "
                            "(repeatable; never downloaded)")
    serve.add_argument("--sam-device", choices=["cpu", "cuda"], default=None,
                       help="device for SAM (default: CUDA when present, else CPU)")
    serve.add_argument("--sam-cache", type=Path, default=None, metavar="DIR",
                       help="folder caching SAM embeddings on disk (default: memory only)")
    serve.add_argument("--sam-cache-mb", type=positive(int), default=None, metavar="N",
                       help="size limit of --sam-cache in MiB; least recently used embeddings "
                            "are removed beyond it (default: no limit)")
    serve.set_defaults(func=run_serve)


def default_data_dir() -> Path:
    """``$ILASTIK_WEB_DATA`` or ``$XDG_DATA_HOME/ilastik-web`` (``~/.local/share/...``)."""
    configured = os.environ.get("ILASTIK_WEB_DATA")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "ilastik-web"


def open_project(args: argparse.Namespace, source_layer, location: str,
                 class_names: Sequence[str], default_dir: Path) -> tuple[str, Project, str]:
    """Open (or create) the project painting on ``source_layer``: (id, project, layer id)."""
    from ilastik_web.project import PROJECT_FILE, Project

    directory = args.project or default_dir
    source = source_layer.volume(source_layer.version)
    if (directory / PROJECT_FILE).exists():
        project = Project.open(directory, source=source, live=True, debounce_s=LIVE_DEBOUNCE_S)
    else:
        project = Project.create(directory, source, classes=class_names, location=location,
                                 live=True, debounce_s=LIVE_DEBOUNCE_S)
    project_id = re.sub(r"[^A-Za-z0-9_-]+", "-", directory.name).strip("-_")[:64] or "project"
    log.info("project %r at %s (generation %d, %d label edits)", project_id, directory,
             project.generation, project.labels.revision)
    return project_id, project, source_layer.layer_id


def open_layers(args: argparse.Namespace, cache: ArrayCache) -> tuple[list, list]:
    """StaticLayers for the requested paths, or for the demo when there are none, and the
    project painting on the first of them (unless ``--no-project``)."""
    from ilastik_web.server.display import LayerDisplay, class_colors
    from ilastik_web.server.layers import StaticLayer, make_layer_id
    from ilastik_web.sources import open_source

    roots = [root.resolve() for root in args.allow_root] or None
    layers: list[StaticLayer] = []
    taken: list[str] = []

    def add(location: Path | str, voxel_size, **kwargs) -> StaticLayer:
        volume = open_source(
            str(location), voxel_size=voxel_size, allowed_roots=roots, cache=cache
        )
        name = volume.name or Path(str(location)).stem
        layer_id = make_layer_id(name, taken)
        taken.append(layer_id)
        layer = StaticLayer(layer_id, volume, cache=cache, location=str(location), **kwargs)
        log.info("serving %s as %r: %r", location, layer_id, volume)
        layers.append(layer)
        return layer

    projects: list[tuple[str, Project, str]] = []
    if args.paths:
        for path in args.paths:
            add(path, args.voxel_size)
        if not args.no_project:
            location = str(args.paths[0])
            digest = hashlib.sha1(location.encode()).hexdigest()[:8]
            default_dir = default_data_dir() / "projects" / f"{layers[0].layer_id}-{digest}"
            projects.append(open_project(args, layers[0], location, DEFAULT_CLASSES, default_dir))
        return layers, projects
    from ilastik_web.demo import ensure_demo

    demo = ensure_demo()
    voxel_size = args.voxel_size or demo.voxel_size
    raw = add(demo.raw_path, voxel_size)
    if demo.labels_path is not None:
        names = demo.class_names
        num_classes = max(names) if isinstance(names, dict) and names else len(names)
        display = LayerDisplay(segment_colors=class_colors(num_classes), opacity=0.35)
        add(demo.labels_path, voxel_size, kind="segmentation", name="ground truth",
            display=display)
    if not args.no_project:
        names = [demo.class_names[v] for v in sorted(demo.class_names)]
        projects.append(open_project(args, raw, str(demo.raw_path), names,
                                     demo.raw_path.parent / "demo-project"))
    return layers, projects


def viewer_url(host: str, port: int, viewer_token: str, token: str | None) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    elif ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{port}/v/{viewer_token}/"
    return f"{url}?token={token}" if token else url


async def _serve(
    args: argparse.Namespace, config: ServerConfig, layers: list, projects: list,
    cache: ArrayCache,
) -> None:
    from ilastik_web.server.app import create_app, serve

    app = create_app(config, layers=layers, projects=projects, cache=cache)
    try:
        runner = await serve(app, config.host, config.port)
    except OSError as exc:
        reason = "port in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise CommandError(f"cannot listen on {config.host}:{config.port}: {reason}") from None
    port = config.port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            port = address[1]
            break
    url = viewer_url(config.host, port, config.viewer_token, config.token)
    log.info("viewer at %s", url)
    sys.stdout.write(url + "\n")
    sys.stdout.flush()
    if not args.no_browser:
        webbrowser.open(url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_serve(args: argparse.Namespace) -> int:
    token = args.token or ServerConfig.token_from_env()
    if args.host not in LOOPBACK and not token:
        log.warning("listening on %s without --token: anyone who can reach it has access",
                    args.host)
    cache = ArrayCache(args.cache_mb * 1024 * 1024)
    try:
        layers, projects = open_layers(args, cache)
    except (IlastikWebError, OSError, ValueError) as exc:
        raise CommandError(str(exc) or type(exc).__name__) from None
    config = ServerConfig(
        host=args.host,
        port=args.port,
        token=token,
        allowed_roots=tuple(args.allow_root),
        cache_bytes=args.cache_mb * 1024 * 1024,
        workers=args.workers,
        sam_models=tuple(args.sam_model),
        sam_device=args.sam_device,
        sam_cache_dir=args.sam_cache,
        sam_cache_bytes=args.sam_cache_mb * (1 << 20) if args.sam_cache_mb else None,
    )
    try:
        asyncio.run(_serve(args, config, layers, projects, cache))
    except KeyboardInterrupt:
        log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except CommandError as exc:
        sys.stderr.write(f"ilastik-web: error: {exc}\n")
        return EXIT_USAGE
