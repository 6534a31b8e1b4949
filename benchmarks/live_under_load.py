"""Live under load: stroke latencies on a busy server, against the same server idle.

Starts a real ``ilastik-web serve`` on the demo (its own project folder, loopback, a free
port) with ``--memory`` and ``--threads``, trains a first classifier from ground-truth
scribbles over HTTP, then measures in one run:

1. **idle**: strokes every ``--stroke-interval`` s and nothing else; per stroke the time
   to its acknowledgement (the POST answering) and to the first updated prediction chunk
   of the view (a 512×512 xy view on the stroke's plane, fetched as a viewer does once
   the new generation appears);
2. **cold**: one stroke in a region never viewed (features not cached there);
3. **export alone**: a probabilities export of ``--export-roi`` through the Jobs API,
   its throughput in voxels/s;
4. **under load**: ``--viewers`` simulated viewers fetch visible raw and prediction chunks
   at several zoom levels in a bounded loop, the same export runs again, and strokes
   arrive every ``--stroke-interval`` s; the same latencies and the export's throughput.

Throughout, ``/api/health`` is sampled every 50 ms: its latency bounds the event loop's
lag from above (it also carries the loopback round trip). At the end the server's peak
resident memory (VmHWM) is compared with its budget (``--memory`` plus the documented
fixed overhead, :attr:`ilastik_web.resources.Resources.rss_limit_bytes`).

Run: ``.venv/bin/python -m benchmarks.live_under_load [--viewers 8] [--strokes 6]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from benchmarks._serving import (
    REPO,
    STARTUP_TIMEOUT_S,
    BenchmarkError,
    free_port,
    stop,
    wait_for_port,
)
from ilastik_web.argtypes import byte_size, positive
from ilastik_web.classify.simulated_annotator import scribbles
from ilastik_web.demo import ensure_demo
from ilastik_web.resources import Resources
from ilastik_web.sources import open_source

CHUNK = 256  # the viewer's xy chunk edge
RAW_VERSION = "v0"  # the version of a static layer
#: Longest wait for any one event (a generation, an export); the run is bounded by them.
WAIT_S = 300.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def stroke_json(stroke) -> dict:
    z, y, x = zip(*stroke.points, strict=True)
    return {"points_xyz": [[p[2], p[1], p[0]] for p in stroke.points],
            "radius": stroke.radius, "label": stroke.label, "plane": "xy",
            "_z": int(np.floor(np.mean(z)))}


class Client:
    """The HTTP side of one benchmark run."""

    def __init__(self, base: str, session: aiohttp.ClientSession, project: str):
        self.base = base
        self.session = session
        self.project = project

    async def json(self, method: str, path: str, body=None) -> dict:
        async with self.session.request(method, self.base + path, json=body) as response:
            if response.status >= 400:
                raise BenchmarkError(f"{method} {path}: HTTP {response.status} "
                                     f"{(await response.text())[:200]}")
            return await response.json(content_type=None)

    async def describe(self) -> dict:
        return await self.json("GET", f"/api/projects/{self.project}")

    async def chunk(self, layer: str, version: str, scale: int, box: tuple) -> int:
        (z0, z1), (y0, y1), (x0, x1) = box
        url = f"{self.base}/precomputed/{layer}/{version}/s{scale}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}"
        async with self.session.get(url) as response:
            await response.read()
            return response.status

    async def wait_generation(self, above: int) -> dict:
        deadline = time.monotonic() + WAIT_S
        while True:
            project = await self.describe()
            if project["generation"] > above and "probabilities" in project["layers"]:
                return project
            if time.monotonic() > deadline:
                raise BenchmarkError(f"no generation above {above} within {WAIT_S:.0f} s")
            await asyncio.sleep(0.02)


def view_boxes(z: int, shape: tuple[int, int, int]) -> list[tuple]:
    """The chunks of a 512×512 xy view on plane ``z`` of a level of ``shape`` (z, y, x)."""
    height, width = shape[1], shape[2]
    boxes = []
    for y0 in range(0, min(512, height), CHUNK):
        for x0 in range(0, min(512, width), CHUNK):
            boxes.append(((z, z + 1), (y0, min(y0 + CHUNK, height)),
                          (x0, min(x0 + CHUNK, width))))
    return boxes


async def timed_stroke(client: Client, stroke: dict, shape) -> tuple[float, float, float]:
    """(stroke→ack, stroke→new generation, stroke→first updated chunk of the view)."""
    before = (await client.describe())["generation"]
    body = {k: v for k, v in stroke.items() if not k.startswith("_")}
    start = time.perf_counter()
    await client.json("POST", f"/api/projects/{client.project}/strokes", body)
    ack = time.perf_counter() - start
    project = await client.wait_generation(before)
    trained = time.perf_counter() - start
    layer = project["layers"]["probabilities"]
    boxes = view_boxes(stroke["_z"], shape)

    async def fetch(box):
        while True:
            status = await client.chunk(layer["id"], layer["version"], 0, box)
            if status == 200:
                return
            if status != 503:
                raise BenchmarkError(f"prediction chunk: HTTP {status}")
            await asyncio.sleep(0.05)

    tasks = [asyncio.ensure_future(fetch(box)) for box in boxes]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    first = time.perf_counter() - start
    await asyncio.gather(*tasks)
    return ack, trained, first


async def stroke_series(client: Client, strokes: list[dict], shape, interval: float,
                        stop_event: asyncio.Event | None = None) -> tuple[list, list]:
    acks, firsts = [], []
    for stroke in strokes:
        started = time.perf_counter()
        ack, trained, first = await timed_stroke(client, stroke, shape)
        acks.append(ack)
        firsts.append(first)
        print(f"   stroke on z={stroke['_z']}: ack {ack:.3f} s, new generation {trained:.3f} s, "
              f"first chunk {first:.3f} s")
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))
        if stop_event is not None and stop_event.is_set():
            break
    return acks, firsts


async def viewer(client: Client, levels: list[tuple], rng: random.Random,
                 stop_event: asyncio.Event, counts: dict) -> None:
    """Fetch visible chunks of raw data and predictions at random planes and zooms."""
    while not stop_event.is_set():
        project = await client.describe()
        layers = project["layers"]
        scale = rng.choice([0, 0] + list(range(1, min(3, len(levels)))))
        z = rng.randrange(levels[scale][0])
        for box in view_boxes(z, levels[scale]):
            for layer in (layers["raw"], layers.get("probabilities")):
                if layer is None or stop_event.is_set():
                    continue
                status = await client.chunk(layer["id"], layer.get("version", RAW_VERSION),
                                            scale, box)
                counts[status] = counts.get(status, 0) + 1


async def health_sampler(client: Client, stop_event: asyncio.Event, out: list) -> None:
    while not stop_event.is_set():
        start = time.perf_counter()
        async with client.session.get(client.base + "/api/health") as response:
            await response.read()
        out.append(time.perf_counter() - start)
        await asyncio.sleep(0.05)


async def export(client: Client, roi: str, name: str, tmp: Path) -> float:
    """Run a probabilities export of ``roi``; its throughput in voxels/s."""
    job = await client.json("POST", f"/api/projects/{client.project}/jobs", {
        "export": "probabilities", "format": "ome-zarr", "roi": roi,
        "output": str(tmp / f"{name}.ome.zarr"), "engine": "local"})
    start = time.perf_counter()
    deadline = time.monotonic() + WAIT_S * 4
    while True:
        status = await client.json("GET", f"/api/projects/{client.project}/jobs/{job['id']}")
        if status["state"] == "DONE":
            break
        if status["state"] not in ("PENDING", "RUNNING") or time.monotonic() > deadline:
            raise BenchmarkError(f"export {name}: {status['state']} {status.get('message')}")
        await asyncio.sleep(0.1)
    seconds = time.perf_counter() - start
    voxels = 1
    for part in roi.split(","):
        lo, hi = part.split(":")
        voxels *= int(hi) - int(lo)
    return voxels / seconds


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def print_latencies(title: str, acks: list, firsts: list, lag: list) -> dict:
    row = {"ack_p50": percentile(acks, 50), "ack_p95": percentile(acks, 95),
           "first_chunk_p50": percentile(firsts, 50), "first_chunk_p95": percentile(firsts, 95),
           "health_p99": percentile(lag, 99), "strokes": len(acks)}
    print(f"{title:11s} stroke->ack p50 {row['ack_p50']:6.3f} s p95 {row['ack_p95']:6.3f} s | "
          f"stroke->first chunk p50 {row['first_chunk_p50']:6.3f} s "
          f"p95 {row['first_chunk_p95']:6.3f} s | loop lag (health) p99 "
          f"{row['health_p99'] * 1000:7.1f} ms | {len(acks)} strokes")
    return row


async def run(args, base: str, pid: int, tmp: Path, truth: np.ndarray) -> dict:
    shape = truth.shape
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
        projects = (await Client(base, session, "").json("GET", "/api/projects"))["projects"]
        client = Client(base, session, projects[0]["id"])
        # A first classifier from scribbles on three slices.
        for stroke in scribbles(truth, slices=(24, 64, 104), strokes_per_class=2, rng=0):
            body = {k: v for k, v in stroke_json(stroke).items() if not k.startswith("_")}
            await client.json("POST", f"/api/projects/{client.project}/strokes", body)
        await client.wait_generation(0)
        rng = np.random.default_rng(1)
        viewed = [40, 56, 72, 88]
        pool = [stroke_json(s) for s in
                scribbles(truth, slices=viewed, strokes_per_class=4, length=6, rng=2)]
        rng.shuffle(pool)
        idle_strokes, load_strokes = pool[:args.strokes], pool[args.strokes:2 * args.strokes]
        project = await client.describe()
        raw_id = project["layers"]["raw"]["id"]
        info = await client.json("GET", f"/precomputed/{raw_id}/{RAW_VERSION}/info")
        levels = [tuple(scale["size"][::-1]) for scale in info["scales"]]
        # Warm the view planes once, as a viewer that had looked at them would have.
        for z in viewed:
            for box in view_boxes(z, shape):
                await client.chunk(raw_id, RAW_VERSION, 0, box)
                await client.chunk(project["layers"]["probabilities"]["id"],
                                   project["layers"]["probabilities"]["version"], 0, box)
        results: dict = {}

        stop_health = asyncio.Event()
        lag: list[float] = []
        sampler = asyncio.ensure_future(health_sampler(client, stop_health, lag))
        acks, firsts = await stroke_series(client, idle_strokes, shape, args.stroke_interval)
        results["idle"] = print_latencies("idle", acks, firsts, lag)

        # Cold: a plane nobody looked at, far from the labelled and viewed ones.
        cold = [stroke_json(s) for s in scribbles(truth, slices=[116], strokes_per_class=1,
                                                  length=6, rng=3)][:1]
        lag.clear()
        acks, firsts = await stroke_series(client, cold, shape, 0.0)
        results["cold"] = print_latencies("cold", acks, firsts, lag)

        lag.clear()
        alone = await export(client, args.export_roi, "alone", tmp)
        results["export_alone_voxels_per_s"] = alone
        print(f"export alone: {alone / 1e6:.3f} Mvoxel/s "
              f"(health p99 {percentile(lag, 99) * 1000:.1f} ms)")

        lag.clear()
        stop_load = asyncio.Event()
        counts: dict = {}
        viewers = [asyncio.ensure_future(viewer(client, levels, random.Random(i), stop_load,
                                                counts)) for i in range(args.viewers)]
        export_task = asyncio.ensure_future(export(client, args.export_roi, "loaded", tmp))
        acks, firsts = await stroke_series(client, load_strokes, shape, args.stroke_interval)
        loaded = await export_task
        stop_load.set()
        await asyncio.gather(*viewers)
        results["load"] = print_latencies("under load", acks, firsts, lag)
        results["export_loaded_voxels_per_s"] = loaded
        results["viewer_chunk_statuses"] = {str(k): v for k, v in sorted(counts.items())}
        print(f"export under load: {loaded / 1e6:.3f} Mvoxel/s = {loaded / alone:.2f} x alone; "
              f"viewer chunks by status {results['viewer_chunk_statuses']}")
        stop_health.set()
        await sampler
        rss = peak_rss(pid)
        limit = Resources(args.memory, args.threads)
        results["peak_rss_bytes"] = rss
        results["rss_limit_bytes"] = limit.rss_limit_bytes
        print(f"peak RSS {rss / 2**20:.0f} MiB; budget {args.memory / 2**20:.0f} MiB + "
              f"overhead = {limit.rss_limit_bytes / 2**20:.0f} MiB "
              f"({'within' if rss <= limit.rss_limit_bytes else 'OVER'})")
        limit.close()
        targets = {
            "first_chunk_p95_under_load_le_1.5s": results["load"]["first_chunk_p95"] <= 1.5,
            "export_under_load_ge_half_alone": loaded >= alone / 2,
            "cold_first_chunk_le_2s": results["cold"]["first_chunk_p95"] <= 2.0,
            "rss_within_budget": rss <= limit.rss_limit_bytes,
        }
        results["targets"] = targets
        print("targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}"
                                       for k, v in targets.items()))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=positive(int), default=8, help="simulated viewers")
    parser.add_argument("--strokes", type=positive(int), default=6,
                        help="timed strokes per phase (idle, under load)")
    parser.add_argument("--stroke-interval", type=positive(float), default=2.0,
                        help="seconds between strokes")
    parser.add_argument("--export-roi", default="0:16,0:256,0:256",
                        help="region (z0:z1,y0:y1,x0:x1) of the export job")
    parser.add_argument("--memory", type=byte_size, default=1 << 30,
                        help="the server's --memory")
    parser.add_argument("--threads", type=positive(int), default=os.cpu_count() or 1,
                        help="the server's --threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    demo = ensure_demo()
    truth_volume = open_source(str(demo.labels_path)).base
    truth = truth_volume.read(truth_volume.bounds)[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        command = [sys.executable, "-m", "ilastik_web", "serve", "--no-browser",
                   "--port", str(port), "--project", str(tmp / "project"),
                   "--memory", str(args.memory), "--threads", str(args.threads),
                   "--log-level", "WARNING"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(tmp / "server.log", "wb") as log:
            process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                       stderr=log, env=env)
        try:
            wait_for_port(port, process, STARTUP_TIMEOUT_S, "ilastik-web serve")
            print(f"demo {truth.shape}; server --memory {args.memory >> 20}M --threads "
                  f"{args.threads}; {args.viewers} viewers; strokes every "
                  f"{args.stroke_interval} s; load average {os.getloadavg()[0]:.1f}")
            results = asyncio.run(run(args, f"http://127.0.0.1:{port}", process.pid, tmp, truth))
        finally:
            stop(process)
            warnings = (tmp / "server.log").read_text(errors="replace").count("Warning")
            print(f"server log: {warnings} warnings")
        results["server_log_warnings"] = warnings
        results["load_average"] = os.getloadavg()[0]
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
