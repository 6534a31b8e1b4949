"""Chunk-serving benchmark: ilastik-web against nginx serving the same chunks from disk.

One run, on loopback only:

1. Start ``ilastik-web serve SOURCE --no-project`` (a subprocess) and list the level-0
   xy chunk grid of its first source from ``info``.
2. Export that grid through our server — the exact bytes, under the exact URL paths it
   serves — into a folder, and start Debian's nginx (a non-daemon subprocess, generated
   config: 127.0.0.1, a free port, ``access_log off``, ``sendfile on``) on that folder.
3. For each encoding (raw: ``Accept-Encoding: identity``; gzip: both servers compress on
   the fly at level 1, as ours does) and each concurrency, fetch one seeded random list
   of chunk URLs from both servers with an aiohttp client: a cold pass (ours freshly
   restarted, so every chunk is read from the source) then a warm pass. Each pass stops
   after ``--requests`` requests or ``--pass-seconds`` seconds, whichever comes first.
4. Print requests/s, MB/s (bytes on the wire), p50/p95/p99 latency per server and pass,
   and the ratio ours/nginx of requests/s; check a sample of chunks is byte-identical.

The client, our server and nginx share this machine's cores, so the figures are
relative: compare the two servers within one run.

Run: ``.venv/bin/python benchmarks/serve.py [--source demo|generated|PATH]``
(``--help`` for every option).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import numpy as np

from ilastik_web.argtypes import positive

try:
    from benchmarks._serving import (
        BenchmarkError,
        free_port,
        get_json,
        ilastik_web_server,
        stop,
        wait_for_port,
    )
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    from _serving import (  # type: ignore[no-redef]
        BenchmarkError,
        free_port,
        get_json,
        ilastik_web_server,
        stop,
        wait_for_port,
    )

NGINX = "/usr/sbin/nginx"
DEFAULT_CONCURRENCY = (1, 4, 16, 64)
GZIP_LEVEL = 1  # what neuroglancer_ext.precomputed uses for chunks

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    types {{ application/json info; }}
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    gzip {gzip};
    gzip_comp_level {gzip_level};
    gzip_min_length 0;
    gzip_vary on;
    gzip_types application/octet-stream application/json;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            add_header Access-Control-Allow-Origin * always;
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
    }}
}}
"""


@dataclass
class PassResult:
    """One pass of one server: counts, throughput and latency percentiles (ms)."""

    server: str
    encoding: str
    concurrency: int
    phase: str
    requests: int
    errors: int
    seconds: float
    wire_bytes: int
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def megabytes_per_s(self) -> float:
        return self.wire_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def nginx_server(root: Path, workdir: Path, *, gzip: bool, workers: int) -> Iterator[str]:
    """Run Debian's nginx in the foreground on ``root``; yields its base URL."""
    if not Path(NGINX).exists():
        raise BenchmarkError(f"{NGINX} not found: install Debian's nginx package")
    port = free_port()
    prefix = workdir / f"nginx-{'gzip' if gzip else 'raw'}"
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, prefix=prefix, port=port, root=root,
                                      gzip="on" if gzip else "off", gzip_level=GZIP_LEVEL))
    process = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf),
                                "-e", str(prefix / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_for_port(port, process, 30, "nginx")
        except BenchmarkError:
            err = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
            reason = err.splitlines()[-1] if err else "?"
            raise BenchmarkError(f"nginx failed to start: {reason}") from None
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def xy_chunk_paths(precomputed_path: str, info: dict) -> list[str]:
    """URL paths of every chunk of the level-0 xy grid (``chunk_sizes[0]``)."""
    scale = info["scales"][0]
    size_x, size_y, size_z = scale["size"]
    chunk_x, chunk_y, chunk_z = scale["chunk_sizes"][0]
    paths = []
    for z0 in range(0, size_z, chunk_z):
        for y0 in range(0, size_y, chunk_y):
            for x0 in range(0, size_x, chunk_x):
                name = (f"{x0}-{min(x0 + chunk_x, size_x)}_{y0}-{min(y0 + chunk_y, size_y)}_"
                        f"{z0}-{min(z0 + chunk_z, size_z)}")
                paths.append(f"{precomputed_path}/{scale['key']}/{name}")
    return paths


async def _export(base_url: str, paths: Sequence[str], root: Path, concurrency: int) -> int:
    queue = list(paths)
    total = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Accept-Encoding": "identity"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal total
            while queue:
                path = queue.pop()
                async with session.get(base_url + path) as response:
                    if response.status != 200:
                        raise BenchmarkError(f"export: GET {path}: HTTP {response.status}")
                    body = await response.read()
                target = root / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(body)
                total += len(body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total


async def _timed_pass(base_url: str, paths: Sequence[str], *, concurrency: int, gzip: bool,
                      deadline_s: float, request_timeout_s: float) -> dict:
    """Fetch ``paths`` in order with ``concurrency`` workers; stop at the deadline."""
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    latencies: list[float] = []
    state = {"next": 0, "errors": 0, "bytes": 0, "encoded": 0}
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout,
                                     auto_decompress=False) as session:
        start = time.perf_counter()
        stop_at = start + deadline_s

        async def worker() -> None:
            while state["next"] < len(paths) and time.perf_counter() < stop_at:
                path = paths[state["next"]]
                state["next"] += 1
                began = time.perf_counter()
                try:
                    async with session.get(base_url + path) as response:
                        body = await response.read()
                        ok = response.status == 200
                        state["encoded"] += response.headers.get("Content-Encoding") == "gzip"
                except (TimeoutError, aiohttp.ClientError):
                    ok, body = False, b""
                if ok:
                    latencies.append(time.perf_counter() - began)
                    state["bytes"] += len(body)
                else:
                    state["errors"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return {"latencies": latencies, "seconds": seconds, **state}


def run_pass(server: str, base_url: str, paths: Sequence[str], *, encoding: str,
             concurrency: int, phase: str, deadline_s: float) -> PassResult:
    gzip = encoding == "gzip"
    raw = asyncio.run(_timed_pass(base_url, paths, concurrency=concurrency, gzip=gzip,
                                  deadline_s=deadline_s, request_timeout_s=max(30, deadline_s)))
    done = len(raw["latencies"])
    if done and gzip != (raw["encoded"] == done):
        raise BenchmarkError(f"{server}: {raw['encoded']} of {done} responses gzipped in the "
                             f"{encoding} run; the gzip policies differ")
    ms = np.asarray(raw["latencies"]) * 1000 if done else np.zeros(1)
    p50, p95, p99 = (float(v) for v in np.percentile(ms, [50, 95, 99]))
    return PassResult(server, encoding, concurrency, phase, done, raw["errors"], raw["seconds"],
                      raw["bytes"], p50, p95, p99)


def check_identical(ours: str, nginx: str, paths: Sequence[str], sample: int, seed: int) -> int:
    """Byte-compare a sample of raw chunks from both servers; returns how many matched."""
    chosen = random.Random(seed).sample(list(paths), min(sample, len(paths)))

    async def compare() -> int:
        headers = {"Accept-Encoding": "identity"}
        async with aiohttp.ClientSession(headers=headers) as session:
            for path in chosen:
                bodies = []
                for base in (ours, nginx):
                    async with session.get(base + path) as response:
                        bodies.append(await response.read())
                if bodies[0] != bodies[1]:
                    raise BenchmarkError(f"{path}: our bytes differ from the exported file")
        return len(chosen)

    return asyncio.run(compare())


def generated_source(folder: Path, shape: Sequence[int], seed: int) -> Path:
    """A smooth uint16 volume as an uncompressed (memory-mapped) TIFF."""
    import tifffile
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random(tuple(shape), dtype=np.float32), 3)
    span = float(noise.max() - noise.min()) or 1.0
    data = ((noise - noise.min()) / span * 60000).astype(np.uint16)
    path = folder / "generated.tif"
    tifffile.imwrite(path, data)
    return path


def format_table(results: Sequence[PassResult]) -> str:
    header = (f"{'encoding':8} {'conc':>4} {'pass':5} {'server':6} {'req':>6} {'err':>4} "
              f"{'req/s':>9} {'MB/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
              f"{'ours/nginx':>10}")
    lines = [header, "-" * len(header)]
    by_key = {(r.encoding, r.concurrency, r.phase, r.server): r for r in results}
    for r in results:
        ratio = ""
        if r.server == "ours":
            other = by_key.get((r.encoding, r.concurrency, r.phase, "nginx"))
            if other and other.requests_per_s > 0:
                ratio = f"{r.requests_per_s / other.requests_per_s:.3f}"
        lines.append(
            f"{r.encoding:8} {r.concurrency:>4} {r.phase:5} {r.server:6} {r.requests:>6} "
            f"{r.errors:>4} {r.requests_per_s:>9.1f} {r.megabytes_per_s:>8.1f} "
            f"{r.p50_ms:>8.2f} {r.p95_ms:>8.2f} {r.p99_ms:>8.2f} {ratio:>10}"
        )
    return "\n".join(lines)


def _concurrency_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 or v > 1024 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers between 1 and 1024, got {text!r}"
        )
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Throughput and latency of raw chunk requests: ilastik-web against "
        "nginx serving the same level-0 chunks from disk, on loopback.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--source", default="demo",
                        help="'demo' (the built-in uint16 OME-Zarr, generated once into the "
                             "cache), 'generated' (a uint16 TIFF written to a temp folder) or "
                             "any path ilastik-web opens")
    parser.add_argument("--generated-shape", default="32,1024,1024", metavar="Z,Y,X",
                        help="shape of the 'generated' source")
    parser.add_argument("--concurrency", type=_concurrency_list,
                        default=list(DEFAULT_CONCURRENCY), metavar="N,N,...",
                        help="concurrent client connections to test")
    parser.add_argument("--requests", type=positive(int), default=1000,
                        help="requests per pass (a seeded random list of level-0 chunks)")
    parser.add_argument("--pass-seconds", type=positive(float), default=20.0,
                        help="stop a pass after this many seconds")
    parser.add_argument("--encoding", choices=["raw", "gzip", "both"], default="both",
                        help="raw (Accept-Encoding: identity), gzip (both servers compress "
                             "on the fly), or both")
    parser.add_argument("--workers", type=positive(int), default=4,
                        help="our server's chunk threads (--workers of ilastik-web serve)")
    parser.add_argument("--nginx-workers", type=positive(int), default=os.cpu_count() or 1,
                        help="nginx worker processes")
    parser.add_argument("--cache-mb", type=positive(int), default=1024,
                        help="our server's cache budget")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request order")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write every pass as JSON to FILE")
    return parser


def resolve_source(text: str, workdir: Path, generated_shape: str, seed: int) -> str:
    if text == "demo":
        from ilastik_web.demo import ensure_demo

        return str(ensure_demo().raw_path)
    if text == "generated":
        try:
            shape = [int(v) for v in generated_shape.split(",")]
        except ValueError:
            shape = []
        if len(shape) != 3 or min(shape) < 1:
            raise BenchmarkError(f"--generated-shape needs three positive integers, "
                                 f"got {generated_shape!r}")
        return str(generated_source(workdir, shape, seed))
    if not text.startswith("procedural:") and not Path(text).exists():
        raise BenchmarkError(f"{text}: no such file or directory")
    return str(Path(text).resolve()) if Path(text).exists() else text


def benchmark(args: argparse.Namespace, workdir: Path) -> list[PassResult]:
    source = resolve_source(args.source, workdir, args.generated_shape, args.seed)
    encodings = ["raw", "gzip"] if args.encoding == "both" else [args.encoding]
    export_root = workdir / "export"
    with ilastik_web_server(source, workers=args.workers, cache_mb=args.cache_mb) as (ours, _):
        listed = get_json(f"{ours}/api/sources")["sources"]
        if not listed:
            raise BenchmarkError(f"{source}: the server lists no source")
        precomputed_url = listed[0]["precomputed"]
        precomputed_path = precomputed_url[len(ours):]
        info = get_json(f"{precomputed_url}/info")
        grid = xy_chunk_paths(precomputed_path, info)
        started = time.perf_counter()
        exported = asyncio.run(_export(ours, grid, export_root, concurrency=4))
        print(f"source: {source}")
        print(f"level 0: size (x, y, z) {info['scales'][0]['size']}, {info['data_type']} x "
              f"{info['num_channels']}, xy chunks {info['scales'][0]['chunk_sizes'][0]}: "
              f"{len(grid)} chunks, {exported / 1e6:.1f} MB exported in "
              f"{time.perf_counter() - started:.1f} s")
    export_root.chmod(0o755)  # nginx workers run as an unprivileged user
    workdir.chmod(0o755)
    paths = random.Random(args.seed).choices(grid, k=args.requests)
    results: list[PassResult] = []
    for encoding in encodings:
        with nginx_server(export_root, workdir, gzip=encoding == "gzip",
                          workers=args.nginx_workers) as nginx:
            for concurrency in args.concurrency:
                # A fresh server per cold pass: nothing of ours is cached yet.
                with ilastik_web_server(source, workers=args.workers,
                                        cache_mb=args.cache_mb) as (ours, _):
                    if encoding == encodings[0] and concurrency == args.concurrency[0]:
                        checked = check_identical(ours, nginx, grid, 20, args.seed)
                        print(f"{checked} sampled chunks byte-identical on both servers")
                    for phase in ("cold", "warm"):
                        for name, base in (("ours", ours), ("nginx", nginx)):
                            result = run_pass(name, base, paths, encoding=encoding,
                                              concurrency=concurrency, phase=phase,
                                              deadline_s=args.pass_seconds)
                            results.append(result)
                            print(f"  {encoding} c={concurrency} {phase} {name}: "
                                  f"{result.requests_per_s:.0f} req/s", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ilastik-web-serve-bench-"))
    try:
        results = benchmark(args, workdir)
    except BenchmarkError as exc:
        sys.stderr.write(f"serve.py: error: {exc}\n")
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
