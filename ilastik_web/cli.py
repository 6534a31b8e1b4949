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

from ilastik_web.argtypes import byte_size, positive
from ilastik_web.config import TOKEN_ENV, ServerConfig
from ilastik_web.errors import IlastikWebError
from ilastik_web.resources import DEFAULT_MEMORY_BYTES, FIXED_OVERHEAD_BYTES, Resources

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
    from ilastik_web.ilp.cli import add_commands as add_ilp_commands

    add_ilp_commands(commands)

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
    serve.add_argument("--memory", type=byte_size, default=None, metavar="SIZE",
                       help="memory budget of all caches (source blocks, features, predictions, "
                            "encoded chunks), e.g. 2G or 512M; resident memory stays under it "
                            f"plus about {FIXED_OVERHEAD_BYTES >> 20} MiB and 256 MiB per thread "
                            f"(default: {DEFAULT_MEMORY_BYTES >> 30}G)")
    serve.add_argument("--threads", type=positive(int), default=None, metavar="N",
                       help="worker threads in all, shared by label edits, chunks and training "
                            "(interactive work first); the forest, the filters and exports are "
                            "kept within them (default: the cores available)")
    serve.add_argument("--cache-mb", type=positive(int), default=None, metavar="N",
                       help="older spelling of --memory in MiB")
    serve.add_argument("--workers", type=positive(int), default=None, metavar="N",
                       help="older spelling of --threads")
    serve.add_argument("--project", type=Path, default=None, metavar="DIR",
                       help="project folder (classes, labels, classifier) for painting and live "
                            "training on the first PATH; created if missing. Default: one folder "
                            "per source under $ILASTIK_WEB_DATA (~/.local/share/ilastik-web); "
                            "the demo has its own")
    serve.add_argument("--ilp", type=Path, default=None, metavar="PROJECT.ilp",
                       help="start from a desktop ilastik project: import it (data, classes, "
                            "labels, features, ilastik's forest) into --project DIR, or a folder "
                            "per .ilp under $ILASTIK_WEB_DATA, and serve it; reused when "
                            "imported before. Replaces PATH")
    serve.add_argument("--ilp-data", default=None, metavar="PATH",
                       help="with --ilp: the raw data, when it moved from where the .ilp says")
    serve.add_argument("--no-project", action="store_true",
                       help="only browse the data: no labels, no training")
    serve.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity")
    serve.add_argument("--sam-model", action="append", default=[], metavar="[NAME=]TYPE:PATH",
                       help="a Segment Anything checkpoint for the SAM tools, e.g. "
                            "vit_b:/models/sam_vit_b.pth or lm=vit_b_lm:/models/vit_b_lm.pt "
                            "(repeatable; never downloaded)")
    serve.add_argument("--engine", action="append", default=[],
                       metavar="NAME=KIND[,KEY=VALUE...]",
                       help="offer a batch engine to jobs under NAME, e.g. "
                            "cluster=dask,address=tcp://host:8786 or "
                            "gpu=slurm,partition=gpu,gpus=1 (repeatable; 'local' is always "
                            "offered). Requests pick one by name and can never give an "
                            "address of their own")
    serve.add_argument("--sam-device", choices=["cpu", "cuda"], default=None,
                       help="device for SAM (default: CUDA when present, else CPU)")
    serve.add_argument("--sam-cache", type=Path, default=None, metavar="DIR",
                       help="folder caching SAM embeddings on disk (default: memory only)")
    serve.add_argument("--oidc-issuer", default=None, metavar="URL",
                       help="sign people in with this OpenID Connect provider (its issuer URL); "
                            "without it, share links and --token give access")
    serve.add_argument("--oidc-client-id", default=None, metavar="ID",
                       help="this server's client id at the OpenID Connect provider")
    serve.add_argument("--oidc-client-secret", default=None, metavar="SECRET",
                       help="the client secret (default: $ILASTIK_WEB_OIDC_SECRET; the "
                            "variable keeps it out of the process list)")
    serve.add_argument("--oidc-admin", action="append", default=[], metavar="WHO",
                       help="email, username or subject of a person who becomes an operator "
                            "(owner of every project) on signing in (repeatable)")
    serve.add_argument("--allow-url-host", action="append", default=[], metavar="HOST",
                       help="host (or *.domain) that data URLs of new projects may name "
                            "(repeatable; default: any host)")
    serve.add_argument("--allow-local-urls", action="store_true",
                       help="let data URLs of new projects reach loopback and link-local "
                            "addresses (refused by default: server-side request forgery)")
    serve.add_argument("--log-format", choices=["text", "json"], default="text",
                       help="log lines as text, or one JSON object per line (for log "
                            "pipelines)")
    serve.add_argument("--engines", type=Path, default=None, metavar="FILE",
                       help="JSON file of named batch engines jobs may use, e.g. "
                            '{"hpc": {"kind": "slurm-rest", "rest_url": ..., "rest_user": ...}}')
    serve.add_argument("--sam-cache-mb", type=positive(int), default=None, metavar="N",
                       help="size limit of --sam-cache in MiB; least recently used embeddings "
                            "are removed beyond it (default: no limit)")
    serve.add_argument("--collection", type=Path, default=None, metavar="DIR",
                       help="serve the images of DIR as one image collection, one item at a "
                            "time: annotators move between items, SAM objects are saved to "
                            "DIR/annotations/ (the images are never written), training sets "
                            "are exported to DIR/annotations/training-sets/. Without PATH no "
                            "demo is served")
    serve.set_defaults(func=run_serve)


def default_data_dir() -> Path:
    """``$ILASTIK_WEB_DATA`` or ``$XDG_DATA_HOME/ilastik-web`` (``~/.local/share/...``)."""
    configured = os.environ.get("ILASTIK_WEB_DATA")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "ilastik-web"


def open_project(args: argparse.Namespace, source_layer, location: str,
                 class_names: Sequence[str], default_dir: Path,
                 resources: Resources | None = None) -> tuple[str, Project, str]:
    """Open (or create) the project painting on ``source_layer``: (id, project, layer id)."""
    from ilastik_web.project import PROJECT_FILE, Project

    directory = args.project or default_dir
    source = source_layer.volume(source_layer.version)
    if (directory / PROJECT_FILE).exists():
        project = Project.open(directory, source=source, live=True, debounce_s=LIVE_DEBOUNCE_S,
                               resources=resources)
    else:
        project = Project.create(directory, source, classes=class_names, location=location,
                                 live=True, debounce_s=LIVE_DEBOUNCE_S, resources=resources)
    project_id = re.sub(r"[^A-Za-z0-9_-]+", "-", directory.name).strip("-_")[:64] or "project"
    log.info("project %r at %s (generation %d, %d label edits)", project_id, directory,
             project.generation, project.labels.revision)
    return project_id, project, source_layer.layer_id


def import_for_serving(args: argparse.Namespace) -> tuple[list[str], Path]:
    """``--ilp``: the imported project's folder (importing it the first time) and its data."""
    from ilastik_web.ilp.importer import RAW_DATASET, RAW_FILE, import_ilp
    from ilastik_web.project import PROJECT_FILE

    if args.paths:
        raise CommandError("--ilp replaces PATH: give one or the other")
    ilp = args.ilp.resolve()
    digest = hashlib.sha1(str(ilp).encode()).hexdigest()[:8]
    directory = args.project or default_data_dir() / "projects" / f"{ilp.stem}-ilp-{digest}"
    if (directory / PROJECT_FILE).exists():
        log.info("serving %s, imported from %s before", directory, ilp.name)
    else:
        import_ilp(ilp, directory, data=args.ilp_data).close()
    return [str(directory / RAW_FILE / RAW_DATASET)], directory


def open_layers(args: argparse.Namespace, resources: Resources) -> tuple[list, list]:
    """StaticLayers for the requested paths, or for the demo when there are none, and the
    project painting on the first of them (unless ``--no-project``)."""
    if getattr(args, "ilp", None) is not None:
        args.paths, args.project = import_for_serving(args)
    from ilastik_web.server.display import LayerDisplay, class_colors
    from ilastik_web.server.layers import StaticLayer, make_layer_id
    from ilastik_web.sources import open_source

    roots = [root.resolve() for root in args.allow_root] or None
    cache = resources.cache("sources")
    layers: list[StaticLayer] = []
    taken: list[str] = []

    def add(location: Path | str, voxel_size, **kwargs) -> StaticLayer:
        volume = open_source(
            str(location), voxel_size=voxel_size, allowed_roots=roots, cache=cache
        )
        name = volume.name or Path(str(location)).stem
        layer_id = make_layer_id(name, taken)
        taken.append(layer_id)
        warnings = []
        if voxel_size is None and volume.base.voxel_size == (1.0, 1.0, 1.0):
            warnings.append(f"{location}: no voxel size in the metadata, shown as 1 nm; "
                            "pass --voxel-size z,y,x (nm) to set it")
            log.warning("%s", warnings[-1])
        layer = StaticLayer(layer_id, volume, cache=cache, location=str(location),
                            warnings=tuple(warnings), **kwargs)
        log.info("serving %s as %r: %r", location, layer_id, volume)
        layers.append(layer)
        return layer

    projects: list[tuple[str, Project, str]] = []
    if not args.paths and getattr(args, "collection", None) is not None:
        return layers, projects  # the collection is the data
    if args.paths:
        for path in args.paths:
            add(path, args.voxel_size)
        if not args.no_project:
            location = str(args.paths[0])
            digest = hashlib.sha1(location.encode()).hexdigest()[:8]
            default_dir = default_data_dir() / "projects" / f"{layers[0].layer_id}-{digest}"
            projects.append(open_project(args, layers[0], location, DEFAULT_CLASSES, default_dir,
                                         resources))
        return layers, projects
    from ilastik_web.demo import ensure_demo

    demo = ensure_demo()
    voxel_size = args.voxel_size or demo.voxel_size
    raw = add(demo.raw_path, voxel_size)
    if demo.labels_path is not None:
        names = demo.class_names
        num_classes = max(names) if isinstance(names, dict) and names else len(names)
        # Hidden at start: at full view it looks like a finished segmentation.
        display = LayerDisplay(segment_colors=class_colors(num_classes), opacity=0.35,
                               visible=False)
        add(demo.labels_path, voxel_size, kind="segmentation", name="ground truth",
            display=display)
    if not args.no_project:
        names = [demo.class_names[v] for v in sorted(demo.class_names)]
        projects.append(open_project(args, raw, str(demo.raw_path), names,
                                     demo.raw_path.parent / "demo-project", resources))
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
    resources: Resources,
) -> None:
    from ilastik_web.server.app import create_app, serve
    from ilastik_web.server.lifecycle import StopSignals

    app = create_app(config, layers=layers, projects=projects, resources=resources)
    stop = StopSignals()
    try:
        runner = await serve(app, config.host, config.port)
    except OSError as exc:
        stop.close()
        reason = "port in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise CommandError(f"cannot listen on {config.host}:{config.port}: {reason}") from None
    port = config.port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            port = address[1]
            break
    url = viewer_url(config.host, port, config.viewer_token, config.token)
    # The token goes to stdout for the user only, never into the log.
    log.info("viewer at %s%s", viewer_url(config.host, port, config.viewer_token, None),
             " (?token=… on stdout)" if config.token else "")
    sys.stdout.write(url + "\n")
    sys.stdout.flush()
    if not args.no_browser:
        webbrowser.open(url)
    try:
        await stop.wait()  # SIGTERM (systemd) or Ctrl-C
    finally:
        await runner.cleanup()


def run_serve(args: argparse.Namespace) -> int:
    token = args.token or ServerConfig.token_from_env()
    if args.host not in LOOPBACK and not token:
        log.warning("listening on %s without --token: anyone who can reach it has access",
                    args.host)
    if args.oidc_issuer and not args.oidc_client_id:
        raise CommandError("--oidc-issuer needs --oidc-client-id")
    memory = args.memory or (args.cache_mb << 20 if args.cache_mb else DEFAULT_MEMORY_BYTES)
    threads = args.threads or args.workers
    # Sources and projects open before the app exists; the app takes this one over.
    resources = Resources(memory, threads)
    log.info("memory budget %d MiB (resident under %d MiB), %d threads", memory >> 20,
             resources.rss_limit_bytes >> 20, resources.threads)
    try:
        layers, projects = open_layers(args, resources)
    except (IlastikWebError, OSError, ValueError) as exc:
        resources.close()
        raise CommandError(str(exc) or type(exc).__name__) from None
    if args.collection is not None:
        from ilastik_web.collections import Collection

        try:
            Collection.from_folder(args.collection)  # say what is wrong before serving
        except IlastikWebError as exc:
            resources.close()
            raise CommandError(f"--collection: {exc}") from None
    from hpc.engine_config import parse_engine
    from hpc.job import load_engines

    try:
        # One registry of named engines: a JSON file and NAME=KIND,... options (these win).
        engines = {**(load_engines(args.engines) if args.engines else {}),
                   **dict(parse_engine(text) for text in args.engine)}
    except IlastikWebError as exc:
        raise CommandError(str(exc)) from None
    config = ServerConfig(
        host=args.host,
        port=args.port,
        token=token,
        allowed_roots=tuple(args.allow_root),
        memory_bytes=memory,
        threads=resources.threads,
        sam_models=tuple(args.sam_model),
        sam_device=args.sam_device,
        sam_cache_dir=args.sam_cache,
        accounts_path=default_data_dir() / "accounts.json",
        engines=engines,
        oidc_issuer=args.oidc_issuer,
        oidc_client_id=args.oidc_client_id,
        oidc_client_secret=args.oidc_client_secret or os.environ.get("ILASTIK_WEB_OIDC_SECRET"),
        oidc_admins=tuple(args.oidc_admin),
        projects_dir=default_data_dir() / "projects",
        url_hosts=tuple(args.allow_url_host),
        allow_local_urls=args.allow_local_urls,
        sam_cache_bytes=args.sam_cache_mb * (1 << 20) if args.sam_cache_mb else None,
        collection_dir=args.collection,
    )
    try:
        asyncio.run(_serve(args, config, layers, projects, resources))
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
    if getattr(args, "log_format", "text") == "json":
        from ilastik_web.server.logformat import use_json_logs

        use_json_logs()
    try:
        return args.func(args)
    except CommandError as exc:
        sys.stderr.write(f"ilastik-web: error: {exc}\n")
        return EXIT_USAGE
