"""Frame throughput through the graph against the kernel alone, in the same run.

    python benchmarks/frames_bench.py [--seconds 3] [--streams 1,4,16,64] [--batch 1,16] [--replicas 1]
                  [--paths handle,handle-planes,http-raw,http-planes,http-jpeg,http-png] [--size 1280x720]

Starts the graph the way `supportgraph serve` does (`runtime.local_graph`: local Ray, every deployment,
embedded Postgres in a temporary folder, loopback only, API keys off), then for each path, stream count
and batch size drives `streams` concurrent screen shares in a closed loop (each sends its next request as
soon as the last is answered) for `--seconds`:

- `handle`: `FrameDedup.offer.remote(stream_id=..., frame=<uint8 [H, W, 3]>, ...)` from this process on
  the same Ray cluster (batch 1), or `offer_many.remote(stream_id=..., frames=<uint8 [B, H, W, 3]>, ...)`
  with B frames of one stream per call (batch B);
- `handle-planes`: `offer_planes.remote(stream_id=..., luma=<uint8 [B, H, W]>, color=<uint16 2x2 sums>,
  ...)`, the frames as planes (`serve_app/frames/planes.py`, half the bytes, the same decisions);
- `http-raw` / `http-jpeg` / `http-png`: `POST /v1/streams/{id}/frames` with one frame (batch 1), or
  `POST /v1/streams/{id}/frames/batch` with B frames of one stream per request (batch B);
- `http-planes`: `POST /v1/streams/{id}/frames/batch` with B frames as planes
  (`application/x-supportgraph-planes`; batch 1 is a batch of one).

Like the JPEG and PNG bodies, the planes are made once before the rows (the client's encoding is not in
the rows); what making them costs a client is a reference of its own (`to_planes`, frames/s over all
threads), so is the kernel run from planes (`planes_kernel`).

With many streams the batch shrinks so that at most `--max-in-flight` frames are in flight (64 streams:
4 frames per request), which bounds memory. Frames are consecutive 5-fps frames of a generated screen
share (`EventClip`), cycled, with timestamps 1/30 s apart while speaking, so none is throttled and every
one is hashed and decided. Each row reports
frames/s, per-decision latency (p50/p95: request sent to its answer), the CPU cores the client (this
process) and the graph (every Ray process) used, and the ratio to the reference measured in this process
in the same run: for `handle`, the kernel (`signals_batch` over batches of 64: pHash and the region
thumbnail in one pass, every thread); for HTTP, decode (Pillow, threads) plus the same kernel. `service`
is the in-process `DedupService` (kernel plus every decision, no transport): the most one replica can do.
The planes paths are compared with the same references as their RGB counterparts (the kernel on RGB
frames; decode of raw RGB plus the kernel), what a client sending RGB would get.
The graph runs without the ScreenReader (`screen.enabled: false`; `--screen` keeps it: then OCR of the
processed frames, a fifth of these, shares the cores) and its Ray workers at nice 0 (`--worker-niceness`;
Ray starts workers at 15, so on a shared machine every other job, and this process, come first).
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import psutil
from PIL import Image

from serve_app.frames.decode import FrameLimits, decode_frame
from serve_app.frames.phash import default_threads, signals_batch
from serve_app.frames.planes import MEDIA_TYPE, Planes, planes_signals, to_planes
from serve_app.frames.region import RegionPolicy
from serve_app.frames.service import DedupService
from serve_app.settings import DedupSettings
from serve_app.stats import percentile
from supportgraph_tools.frames.synthetic import EventClip, EventClipSpec

POOL = 24  # distinct frames per run (cycled): 66 MB at 720p
KERNEL_BATCH = 64
CONTENT_TYPES = {
    "http-raw": "application/octet-stream",
    "http-planes": MEDIA_TYPE,
    "http-jpeg": "image/jpeg",
    "http-png": "image/png",
}
REF_FORMAT = {
    "handle": "kernel",
    "handle-planes": "kernel",
    "http-raw": "raw",
    "http-planes": "raw",
    "http-jpeg": "jpeg",
    "http-png": "png",
}


@dataclass
class Pool:
    frames: np.ndarray  # [POOL, H, W, 3]
    planes: Planes  # the same frames as planes
    bodies: dict[str, list[bytes]] = field(default_factory=dict)  # per format: "raw", "planes", "jpeg", "png"

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]


def make_pool(width: int, height: int) -> Pool:
    clip = EventClip(EventClipSpec(seed=17, width=width, height=height, duration_s=POOL / 5 + 1))
    frames = np.stack([clip.rgb(i / 5) for i in range(POOL)])
    pool = Pool(frames, to_planes(frames))
    pool.bodies["raw"] = [f.tobytes() for f in frames]
    pool.bodies["planes"] = [
        Planes(p.luma[None], p.color[None]).to_bytes() for p in map(pool.planes.frame, range(POOL))
    ]
    for fmt, options in (("jpeg", {"quality": clip.quality}), ("png", {})):
        bodies = []
        for f in frames:
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, format=fmt.upper(), **options)
            bodies.append(buf.getvalue())
        pool.bodies[fmt] = bodies
    return pool


def rate(fn: Callable[[], int], seconds: float) -> float:
    fn()
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += fn()
    return done / elapsed


def references(pool: Pool, seconds: float) -> dict[str, float]:
    """frames/s in this process: the kernel alone, decode plus kernel per format, the dedup service."""
    cell = RegionPolicy().cell
    threads = default_threads()
    reps = -(-KERNEL_BATCH // POOL)
    batch = np.concatenate([pool.frames] * reps)[:KERNEL_BATCH]
    limits = FrameLimits()
    decoder = ThreadPoolExecutor(threads)
    refs = {"kernel": rate(lambda: len(signals_batch(batch, cell=cell, threads=threads).hashes), seconds)}
    planes = to_planes(batch)
    refs["planes_kernel"] = rate(
        lambda: len(planes_signals(planes, cell=cell, threads=threads).hashes), seconds
    )
    refs["to_planes"] = rate(lambda: len(to_planes(batch, threads)), seconds)
    for fmt, ctype in (("raw", "application/octet-stream"), ("jpeg", "image/jpeg"), ("png", "image/png")):
        bodies = (pool.bodies[fmt] * reps)[:KERNEL_BATCH]

        def decode_and_hash(bodies: list[bytes] = bodies, ctype: str = ctype) -> int:
            decoded = list(
                decoder.map(lambda b: decode_frame(b, ctype, limits, pool.width, pool.height), bodies)
            )
            return len(signals_batch(np.stack(decoded), cell=cell, threads=threads).hashes)

        refs[fmt] = rate(decode_and_hash, seconds)
    service = DedupService(DedupSettings())
    counter = iter(range(10**9))

    def decide() -> int:
        n = next(counter)
        items = [
            service.admit("tenant_bench_ref", f, True, (n * POOL + i) / 30) for i, f in enumerate(pool.frames)
        ]
        return len(asyncio.run(service.decide_batch(items)))

    refs["service"] = rate(decide, seconds)
    decoder.shutdown()
    return refs


class CpuMeter:
    """CPU seconds of this process (the client) and of every process it started (Ray: the graph)."""

    def __init__(self) -> None:
        self.me = psutil.Process()

    def _graph(self) -> float:
        total = 0.0
        for child in self.me.children(recursive=True):
            try:
                t = child.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def sample(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), self._graph()


@dataclass
class Row:
    path: str
    streams: int
    batch: int
    frames: int
    wall_s: float
    latencies_ms: list[float]
    client_cpu: float
    graph_cpu: float
    errors: int

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s


Sender = Callable[[str, int, int], Awaitable[int]]  # (stream id, first frame index, batch) -> frames decided


async def drive(
    send: Sender, streams: int, batch: int, seconds: float, tag: str
) -> tuple[int, list[float], int]:
    """`streams` closed loops for `seconds` after a short warm-up; frames decided, latencies, errors."""
    latencies: list[float] = []
    counted = [0, 0]
    measuring = False

    async def loop(n: int, until: float) -> None:
        sid = f"tenant_bench_{tag}-{n}.screen"
        index = 0
        while time.perf_counter() < until:
            started = time.perf_counter()
            try:
                done = await send(sid, index, batch)
            except Exception:  # counted; the bench goes on
                counted[1] += measuring
                await asyncio.sleep(0.01)
                continue
            index += batch
            if measuring:
                ms = (time.perf_counter() - started) * 1e3
                latencies.extend([ms] * done)
                counted[0] += done

    warm_until = time.perf_counter() + min(1.0, seconds / 3)
    tasks = [asyncio.create_task(loop(n, warm_until + seconds)) for n in range(streams)]
    await asyncio.sleep(warm_until - time.perf_counter())
    measuring = True
    await asyncio.gather(*tasks)
    return counted[0], latencies, counted[1]


def handle_sender(handle: Any, pool: Pool) -> Sender:
    async def send(sid: str, index: int, batch: int) -> int:
        picks = [(index + k) % POOL for k in range(batch)]
        ts = [(index + k) / 30 for k in range(batch)]
        if batch == 1:
            out = await handle.offer.remote(
                stream_id=sid, frame=pool.frames[picks[0]], is_speaking=True, ts=ts[0]
            )
            return int(out["verdict"] != "throttled")
        frames = pool.frames[picks]  # one contiguous [B, H, W, 3] array
        out = await handle.offer_many.remote(stream_id=sid, frames=frames, is_speaking=True, ts=ts)
        return sum(d["verdict"] != "throttled" for d in out)

    return send


def planes_sender(handle: Any, pool: Pool) -> Sender:
    async def send(sid: str, index: int, batch: int) -> int:
        picks = [(index + k) % POOL for k in range(batch)]
        ts = [(index + k) / 30 for k in range(batch)]
        out = await handle.offer_planes.remote(
            stream_id=sid,
            luma=pool.planes.luma[picks],
            color=pool.planes.color[picks],
            is_speaking=True,
            ts=ts,
        )
        return sum(d["verdict"] != "throttled" for d in out)

    return send


def http_sender(client: Any, pool: Pool, path: str) -> Sender:
    fmt = path.removeprefix("http-")
    ctype = CONTENT_TYPES[path]
    size = {"width": pool.width, "height": pool.height} if fmt in ("raw", "planes") else {}

    async def send(sid: str, index: int, batch: int) -> int:
        picks = [(index + k) % POOL for k in range(batch)]
        ts = [(index + k) / 30 for k in range(batch)]
        headers = {"content-type": ctype}
        if batch == 1 and fmt != "planes":
            params: dict[str, Any] = {"ts": ts[0], "speaking": True, **size}
            r = await client.post(
                f"/v1/streams/{sid}/frames",
                params=params,
                content=pool.bodies[fmt][picks[0]],
                headers=headers,
            )
            r.raise_for_status()
            return int(r.json()["verdict"] != "throttled")
        bodies = [pool.bodies[fmt][p] for p in picks]
        params = {"ts": ts, "speaking": True, **size}
        if fmt not in ("raw", "planes"):
            params["sizes"] = [len(b) for b in bodies]
        r = await client.post(
            f"/v1/streams/{sid}/frames/batch", params=params, content=b"".join(bodies), headers=headers
        )
        r.raise_for_status()
        return sum(d["verdict"] != "throttled" for d in r.json()["decisions"])

    return send


async def measure(send: Sender, path: str, streams: int, batch: int, seconds: float, meter: CpuMeter) -> Row:
    tag = f"{path}-{streams}-{batch}-{time.monotonic_ns() % 10**9}"
    w0, c0, g0 = meter.sample()
    frames, latencies, errors = await drive(send, streams, batch, seconds, tag)
    w1, c1, g1 = meter.sample()
    wall = w1 - w0
    # the warm-up is in the CPU window too; it is short and loaded alike
    return Row(path, streams, batch, frames, seconds, latencies, (c1 - c0) / wall, (g1 - g0) / wall, errors)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_paths(args: argparse.Namespace, pool: Pool, base_url: str, app_name: str) -> list[Row]:
    import httpx
    from ray import serve

    handle = serve.get_deployment_handle("FrameDedup", app_name=app_name)
    meter = CpuMeter()
    rows = []
    limits = httpx.Limits(
        max_connections=max(args.streams) + 4, max_keepalive_connections=max(args.streams) + 4
    )
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        for path in args.paths:
            senders = {"handle": handle_sender, "handle-planes": planes_sender}
            send = senders[path](handle, pool) if path in senders else http_sender(client, pool, path)
            for wanted in args.batch:
                for streams in args.streams:
                    batch = max(1, min(wanted, args.max_in_flight // streams))
                    row = await measure(send, path, streams, batch, args.seconds, meter)
                    rows.append(row)
                    print(
                        f"  {path:10s} streams={streams:3d} batch={batch:3d} {row.fps:8.1f} frames/s",
                        flush=True,
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per row")
    parser.add_argument("--streams", default="1,4,16,64")
    parser.add_argument(
        "--batch", default="1", help="frames per request, comma-separated (1: offer / frames)"
    )
    parser.add_argument("--paths", default="handle,handle-planes,http-raw,http-planes,http-jpeg,http-png")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument(
        "--max-in-flight", type=int, default=256, help="frames in flight at most: batch <= this / streams"
    )
    parser.add_argument("--replicas", type=int, default=1, help="FrameDedup replicas")
    parser.add_argument(
        "--throughput-optimized",
        action="store_true",
        help="start Ray with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (Serve's lower-overhead request path)",
    )
    parser.add_argument(
        "--screen",
        action="store_true",
        help="keep the ScreenReader on (OCR of every processed frame on the same cores; off by default)",
    )
    parser.add_argument(
        "--worker-niceness",
        type=int,
        default=0,
        help="nice value of the graph's Ray workers (Ray's own default is 15: other jobs on a shared "
        "machine, this process's references included, then come first)",
    )
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    args.streams = [int(s) for s in args.streams.split(",")]
    args.batch = [int(b) for b in args.batch.split(",")]
    args.paths = args.paths.split(",")
    width, height = (int(v) for v in args.size.split("x"))
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # noqa: SIM112 (Ray's spelling)
    if args.throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"  # read when Serve is imported, inherited by Ray

    from serve_app.db.database import stop_embedded
    from serve_app.runtime import local_graph
    from serve_app.settings import load_settings

    pool = make_pool(width, height)
    state = Path(tempfile.mkdtemp(prefix="sg-frames-bench-"))
    settings = load_settings(
        None,
        state_dir=state,
        http={"port": free_port()},
        auth={"mode": "off"},
        screen={"enabled": args.screen},
        serve={
            "metrics_port": free_port(),
            # the graph's other deployments fill the rest of 2 CPUs: replicas share FrameDedup's half
            "frame_dedup": {"num_replicas": args.replicas, "num_cpus": 0.5 / args.replicas},
        },
    )
    started = time.perf_counter()
    try:
        with local_graph(settings) as graph:
            print(f"# graph up in {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs", flush=True)
            refs = references(pool, args.seconds)
            rows = asyncio.run(run_paths(args, pool, graph.base_url, graph.app_name))
            after = references(pool, args.seconds)
    finally:
        stop_embedded(state / "pgdata")
    spread = {k: [round(v, 1), round(after[k], 1)] for k, v in refs.items()}
    refs = {k: (v + after[k]) / 2 for k, v in refs.items()}  # before and after the rows: drift shows less
    report(rows, refs, args, width, height, spread)


def report(
    rows: list[Row],
    refs: dict[str, float],
    args: argparse.Namespace,
    width: int,
    height: int,
    spread: dict[str, list[float]],
) -> None:
    print(
        f"# {width}x{height}; in this process: kernel {refs['kernel']:.0f} frames/s (batch {KERNEL_BATCH}), "
        f"decode+kernel raw {refs['raw']:.0f}, jpeg {refs['jpeg']:.0f}, png {refs['png']:.0f}; "
        f"dedup service (kernel + decisions) {refs['service']:.0f}; kernel from planes "
        f"{refs['planes_kernel']:.0f}; making planes (client) {refs['to_planes']:.0f}"
    )
    print(
        "# references before / after the rows: "
        + ", ".join(f"{k} {a:.0f}/{b:.0f}" for k, (a, b) in spread.items())
    )
    line = "{:>13} {:>7} {:>5} {:>9} {:>6} {:>8} {:>8} {:>10} {:>9} {:>6}"
    print(
        line.format(
            "path",
            "streams",
            "batch",
            "frames/s",
            "ratio",
            "p50 ms",
            "p95 ms",
            "client cpu",
            "graph cpu",
            "errors",
        )
    )
    out = []
    for r in rows:
        ref = refs[REF_FORMAT[r.path]]
        p50, p95 = percentile(r.latencies_ms, 0.5), percentile(r.latencies_ms, 0.95)
        print(
            line.format(
                r.path,
                r.streams,
                r.batch,
                f"{r.fps:.0f}",
                f"{r.fps / ref:.2f}",
                f"{p50:.1f}",
                f"{p95:.1f}",
                f"{r.client_cpu:.2f}",
                f"{r.graph_cpu:.2f}",
                r.errors,
            )
        )
        out.append(
            {
                "path": r.path,
                "streams": r.streams,
                "batch": r.batch,
                "fps": round(r.fps, 1),
                "ratio": round(r.fps / ref, 3),
                "p50_ms": round(p50, 1),
                "p95_ms": round(p95, 1),
                "client_cpu": round(r.client_cpu, 2),
                "graph_cpu": round(r.graph_cpu, 2),
                "errors": r.errors,
            }
        )
    result = {
        "bench": "frames",
        "kernel_fps": round(refs["kernel"], 1),
        "decode_kernel_fps": {k: round(refs[k], 1) for k in ("raw", "jpeg", "png")},
        "service_fps": round(refs["service"], 1),
        "planes_kernel_fps": round(refs["planes_kernel"], 1),
        "to_planes_fps": round(refs["to_planes"], 1),
        "size": f"{width}x{height}",
        "replicas": args.replicas,
        "throughput_optimized": args.throughput_optimized,
        "screen_reader": args.screen,
        "worker_niceness": args.worker_niceness,
        "references_before_after": spread,
        "rows": out,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
