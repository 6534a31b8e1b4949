"""Memory while a viewer walks across terabyte volumes, with and without a native pyramid.

Two walks, each against an ``ilastik-web serve --no-project`` subprocess on loopback:

1. ``procedural``: the procedural source (default ``procedural:``, 16384 x 65536 x 65536
   uint8, about 70 TB), which computes every level, its own pyramid included, per block.
2. ``no-pyramid``: a zarr v3 array written lazily with tensorstore (default 2D,
   1048576 x 1048576 uint8, about 1.1 TB: only the metadata and a 2048 x 2048 patch
   at the origin are stored, the rest reads as the fill value, as in a sparse
   acquisition). It has no pyramid, so the server builds one: each coarser level
   computed block by block from the next finer one and cached under the cache budget.

At each zoom level (pyramid level) the client fetches, with 6 connections like a
browser, the xy chunk grid of a 1024 x 1024-voxel viewport at successive positions along
the volume's diagonal (and through its depth), while a thread samples the server's RSS
(psutil) every 100 ms. Printed per walk: the cache budget, RSS at rest before the walk,
per level chunks/s and peak RSS, the overall peak and final RSS, and for computed
levels a lower bound of the bytes of finer computed levels the server had to produce
(so peak RSS minus rest well below it means the cache really evicts).

Run: ``.venv/bin/python benchmarks/scale_walk.py`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import psutil

from ilastik_web.argtypes import positive

try:
    from benchmarks._serving import BenchmarkError, get_json, ilastik_web_server
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    from _serving import BenchmarkError, get_json, ilastik_web_server  # type: ignore[no-redef]

VIEWPORT = 1024
BROWSER_CONNECTIONS = 6
SAMPLE_INTERVAL_S = 0.1
MIB = 2**20


@dataclass
class LevelStats:
    """What one zoom level of a walk fetched, how fast, and the RSS peak meanwhile."""

    level: int
    computed: bool
    positions: int = 0
    chunks: int = 0
    errors: int = 0
    seconds: float = 0.0
    bytes: int = 0
    peak_rss: int = 0
    finer_computed_bytes: int = 0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0


@dataclass
class WalkResult:
    """One walk across one source."""

    name: str
    location: str
    cache_mb: int
    rest_rss: int
    peak_rss: int = 0
    final_rss: int = 0
    levels: list[LevelStats] = field(default_factory=list)

    @property
    def finer_computed_bytes(self) -> int:
        return sum(level.finer_computed_bytes for level in self.levels)


class RssSampler:
    """Samples a process's resident set size every ``interval_s`` seconds in a thread."""

    def __init__(self, pid: int, interval_s: float = SAMPLE_INTERVAL_S):
        self._process = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._window_peak = 0
        self.peak = 0
        self.last = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval_s)

    def sample(self) -> int:
        try:
            rss = self._process.memory_info().rss
        except psutil.Error:
            return self.last
        with self._lock:
            self.last = rss
            self.peak = max(self.peak, rss)
            self._window_peak = max(self._window_peak, rss)
        return rss

    def window_peak(self) -> int:
        """The peak since the previous call (a level's peak)."""
        self.sample()
        with self._lock:
            peak, self._window_peak = self._window_peak, self.last
        return peak

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def write_sparse_zarr(path: Path, shape: Sequence[int], *, chunk: int = 1024,
                      patch: int = 2048, seed: int = 0) -> Path:
    """A huge uint8 zarr v3 array of which only a smooth patch at the origin is stored."""
    import tensorstore as ts

    wanted = (chunk, chunk) if len(shape) == 2 else (64, 256, 256)
    chunks = [min(c, s) for c, s in zip(wanted, shape, strict=True)]
    store = ts.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}},
        create=True, delete_existing=True, dtype="uint8", shape=list(shape),
        chunk_layout=ts.ChunkLayout(chunk_shape=chunks),
    ).result()
    region = tuple(min(patch, s) for s in shape[-2:])
    if len(shape) == 3:
        region = (chunks[0], *region)
    rng = np.random.default_rng(seed)
    store[tuple(slice(0, r) for r in region)].write(
        rng.integers(0, 256, size=region, dtype=np.uint8)
    ).result()
    return path


def viewport_chunks(scale: dict, centre_xy: Sequence[int], z: int,
                    viewport: int = VIEWPORT) -> list[str]:
    """Chunk names of the xy grid (``chunk_sizes[0]``) under a viewport at plane ``z``."""
    size_x, size_y, size_z = scale["size"]
    chunk_x, chunk_y, chunk_z = scale["chunk_sizes"][0]
    names = []
    ranges = []
    for centre, size, chunk in zip(centre_xy, (size_x, size_y), (chunk_x, chunk_y), strict=True):
        low = max(0, centre - viewport // 2)
        high = min(size, low + viewport)
        ranges.append(range(low // chunk * chunk, high, chunk))
    z0 = min(z, size_z - 1) // chunk_z * chunk_z
    for y0 in ranges[1]:
        for x0 in ranges[0]:
            names.append(f"{x0}-{min(x0 + chunk_x, size_x)}_{y0}-{min(y0 + chunk_y, size_y)}_"
                         f"{z0}-{min(z0 + chunk_z, size_z)}")
    return names


def walk_positions(scale: dict, count: int) -> list[tuple[int, int, int]]:
    """``count`` viewport centres (x, y, z) spread along the diagonal of the level."""
    size_x, size_y, size_z = scale["size"]
    fractions = [(i + 0.5) / count for i in range(count)]
    return [(int(f * size_x), int(f * size_y), int(f * size_z)) for f in fractions]


def finer_footprint_bytes(info: dict, level: int, first_computed: int, chunk_names: Sequence[str],
                          bytes_per_voxel: int) -> int:
    """Bytes of every computed level finer than ``level`` under the requested chunks.

    A lower bound of what the server must compute (and would keep, without a budget) to
    answer chunks of a computed ``level``: the same region at each computed level between
    ``first_computed`` and ``level``. Level 0 (read from the source) is not counted.
    """
    scales = info["scales"]
    total = 0
    for finer in range(max(first_computed, 1), level):
        ratio = [a / b for a, b in zip(scales[level]["resolution"], scales[finer]["resolution"],
                                       strict=True)]
        for name in chunk_names:
            (x0, x1), (y0, y1), (z0, z1) = (tuple(int(v) for v in part.split("-"))
                                            for part in name.split("_"))
            voxels = 1
            for (a, b), r, size in zip(((x0, x1), (y0, y1), (z0, z1)), ratio,
                                       scales[finer]["size"], strict=True):
                voxels *= min(size, math.ceil(b * r)) - math.floor(a * r)
            total += voxels * bytes_per_voxel
    return total


async def _fetch(base: str, names: Sequence[str], *, concurrency: int,
                 timeout_s: float) -> tuple[int, int, int]:
    """Fetch ``names`` under ``base``; returns (ok, errors, bytes)."""
    queue = list(names)
    counts = [0, 0, 0]
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers={"Accept-Encoding": "identity"}) as session:

        async def worker() -> None:
            while queue:
                name = queue.pop(0)
                try:
                    async with session.get(f"{base}/{name}") as response:
                        body = await response.read()
                        ok = response.status == 200
                except (TimeoutError, aiohttp.ClientError):
                    ok, body = False, b""
                counts[0 if ok else 1] += 1
                counts[2] += len(body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts[0], counts[1], counts[2]


def walk(name: str, location: str, *, levels: Sequence[int], positions: int, cache_mb: int,
         workers: int, level_seconds: float, viewport: int = VIEWPORT,
         concurrency: int = BROWSER_CONNECTIONS, report=print) -> WalkResult:
    """Serve ``location`` and walk a viewport across it at each of ``levels``.

    Each level stops after ``positions`` viewports or once ``level_seconds`` have passed
    (after at least one viewport).
    """
    with ilastik_web_server(location, cache_mb=cache_mb, workers=workers) as (base_url, pid):
        source = get_json(f"{base_url}/api/sources")["sources"][0]
        info = get_json(f"{source['precomputed']}/info")
        native = [level["native"] for level in source["levels"]]
        first_computed = native.index(False) if False in native else len(native)
        bytes_per_voxel = info["num_channels"] * np.dtype(info["data_type"]).itemsize
        time.sleep(0.5)
        with RssSampler(pid) as sampler:
            result = WalkResult(name, location, cache_mb, rest_rss=sampler.sample())
            report(f"{name}: {location}")
            report(f"  {len(info['scales'])} levels, level 0 size (x, y, z) "
                   f"{info['scales'][0]['size']}, first computed level "
                   f"{first_computed if first_computed < len(native) else 'none'}; "
                   f"cache budget {cache_mb} MiB; RSS at rest {result.rest_rss / MIB:.0f} MiB")
            for level in levels:
                if level >= len(info["scales"]):
                    raise BenchmarkError(f"{name} has levels 0..{len(info['scales']) - 1}, "
                                    f"not {level}")
                scale = info["scales"][level]
                stats = LevelStats(level, computed=level >= first_computed)
                sampler.window_peak()
                started = time.perf_counter()
                for x, y, z in walk_positions(scale, positions):
                    names = viewport_chunks(scale, (x, y), z, viewport)
                    ok, errors, size = asyncio.run(_fetch(
                        f"{source['precomputed']}/{scale['key']}", names,
                        concurrency=concurrency, timeout_s=max(60.0, level_seconds)))
                    stats.positions += 1
                    stats.chunks += ok
                    stats.errors += errors
                    stats.bytes += size
                    if stats.computed:
                        stats.finer_computed_bytes += finer_footprint_bytes(
                            info, level, first_computed, names, bytes_per_voxel)
                    if time.perf_counter() - started > level_seconds:
                        break
                stats.seconds = time.perf_counter() - started
                stats.peak_rss = sampler.window_peak()
                result.levels.append(stats)
                report(f"  level {level:2d} ({'computed' if stats.computed else 'native'}): "
                       f"{stats.positions} viewports, {stats.chunks} chunks "
                       f"({stats.errors} errors) in {stats.seconds:.1f} s = "
                       f"{stats.chunks_per_s:.1f} chunks/s; peak RSS "
                       f"{stats.peak_rss / MIB:.0f} MiB")
            time.sleep(0.3)
        result.peak_rss = sampler.peak
        result.final_rss = sampler.last
    report(f"  peak RSS {result.peak_rss / MIB:.0f} MiB (rest + "
           f"{(result.peak_rss - result.rest_rss) / MIB:.0f}), final "
           f"{result.final_rss / MIB:.0f} MiB, cache budget {cache_mb} MiB; finer computed "
           f"levels produced >= {result.finer_computed_bytes / MIB:.0f} MiB")
    return result


def _levels(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated levels >= 0, got {text!r}")
    return values


def _shape(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        values = ()
    if len(values) not in (2, 3) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected YxX or ZxYxX positive sizes, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Walk a viewer-like client across terabyte volumes at several zoom "
        "levels and report the server's RSS.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--walk", choices=["procedural", "no-pyramid", "both"], default="both")
    parser.add_argument("--procedural", default="procedural:",
                        help="procedural source location (see ilastik_web.sources.procedural)")
    parser.add_argument("--procedural-levels", type=_levels, default=[0, 2, 4, 6, 8],
                        metavar="L,L,...")
    parser.add_argument("--no-pyramid-shape", type=_shape, default=(1048576, 1048576),
                        metavar="[ZX]YxX", help="shape of the lazily written zarr")
    parser.add_argument("--no-pyramid-levels", type=_levels, default=[0, 1, 2, 3, 4],
                        metavar="L,L,...")
    parser.add_argument("--positions", type=positive(int), default=8,
                        help="viewport positions per level")
    parser.add_argument("--level-seconds", type=positive(float), default=30.0,
                        help="stop a level after this long (after at least one viewport)")
    parser.add_argument("--cache-mb", type=positive(int), default=256,
                        help="the server's cache budget (--cache-mb of ilastik-web serve)")
    parser.add_argument("--workers", type=positive(int), default=4,
                        help="the server's chunk threads")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the results as JSON to FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="ilastik-web-scale-walk-"))
    common = dict(positions=args.positions, cache_mb=args.cache_mb, workers=args.workers,
                  level_seconds=args.level_seconds)
    try:
        if args.walk in ("procedural", "both"):
            results.append(walk("procedural", args.procedural, levels=args.procedural_levels,
                                **common))
        if args.walk in ("no-pyramid", "both"):
            shape = args.no_pyramid_shape
            path = write_sparse_zarr(workdir / "sparse.zarr", shape)
            label = f"no-pyramid ({'x'.join(map(str, shape))} uint8 zarr v3, sparse)"
            results.append(walk(label, str(path), levels=args.no_pyramid_levels, **common))
    except BenchmarkError as exc:
        sys.stderr.write(f"scale_walk.py: error: {exc}\n")
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(
            [{**asdict(r), "levels": [{**asdict(s), "chunks_per_s": s.chunks_per_s}
                                      for s in r.levels]} for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
