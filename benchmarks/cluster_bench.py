"""The graph on a multi-node Ray cluster: `serve deploy`, placement, stream affinity, faults, autoscaling.

    python benchmarks/cluster_bench.py [--workers 3] [--placement-only] [--warm-s 15] [--delay-divisor 5]
                                       [--keep-logs DIR]

Starts a Ray cluster of processes on this machine with `ray.cluster_utils.Cluster` (what Ray's own tests
use): a head (the Serve controller, the one HTTP proxy and the CPU deployments) and `--workers` worker nodes
that offer no CPU to Ray's accounting but a custom resource `gpu_node`, standing in for the GPU pods of
cluster.yaml. The Serve config is `configs/production.yaml` cut to fit (`bench_config`): FrameDedup's
`num_gpus` and the LLM tier become a share of `gpu_node`, the other deployments get a tenth of their CPUs,
replica bounds shrink, the autoscaling delays are divided by `--delay-divisor`, the proxy runs on the
head only (every node is on 127.0.0.1) and the embedded Postgres lives in a temporary folder. It goes to
the cluster with the `serve deploy` CLI against the head's dashboard, and the bench waits for RUNNING.

Phases (`--placement-only` stops after the first):
1. placement: every FrameDedup and LLM replica on a `gpu_node` node, every other replica on the head
   (from Serve's status API and `ray.util.state.list_nodes`).
2. stream affinity across nodes: `--streams` screen shares send JPEG frames over HTTP (through the two
   Ingress replicas, each with its own handle) while a third FrameDedup replica joins (a `serve deploy`
   raising the minimum). Each stream keeps its replica or moves to the new one, and its frames never
   split: the owner counted exactly the frames since the stream's one `first` decision there. A moved
   stream's extra frames are its sends beyond a replay of the same answered frames through one
   in-process `DedupService`.
3. node loss: screen shares and `--users` support users (search, routed chat; every fifth question
   escalates to the LLM tier) run while three faults follow one another, each once the graph healed
   from the last: the worker holding FrameDedup replicas (and no LLM replica) is killed, then the
   worker holding the LLM replica (`Cluster.remove_node`, no graceful stop), then the Router replica's
   process (SIGKILL). Measured per fault: seconds until Serve dropped the dead replicas and until every
   deployment is HEALTHY with its target of RUNNING replicas, requests in flight at the kill and failed
   after it (and how many of those were in flight); over the phase: extra frames per moved stream (as
   in 2), cost events lost (routed requests answered 200 whose request id has no row in the tenant's
   `cost_events` once every call has ended) and late (answers whose reply says `costs_written: false`:
   the Router's wait for the write gave up). The client waits 90 s, longer than the Router's 60 s for
   the LLM tier. A killed worker's replacement node starts right after the kill (KubeRay replaces a
   lost pod; a real pod takes longer to come).
4. autoscaling: a load step of `--step-s` (closed loops, so the load in flight is constant: `--callers`
   FrameDedup handle calls from this process, connected to the cluster, and `--escalating-users` chats
   that all escalate to the LLM tier), then none. Per autoscaled deployment: seconds until the autoscaler
   wanted its maximum and until that many replicas were RUNNING, and from the step's end until it wanted
   and had its minimum again, beside the configured `upscale_delay_s` / `downscale_delay_s`.

Ports (GCS, dashboard, dashboard agent, Serve HTTP) are picked free and Ray's temp dir is a folder of its
own (RAY_TMPDIR), so other Ray clusters on the machine are neither disturbed nor joined; the cluster and
the embedded Postgres are torn down on exit, errors and SIGTERM included.
Prints a table per phase, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ROOT / "configs" / "production.yaml"
APP = "supportgraph"
GPU_RESOURCE = "gpu_node"
# what a worker node offers; a replica on it asks GPU_SHARE, so a node holds four of them
GPU_PER_NODE = 1.0
GPU_SHARE = 0.25
CPU_SCALE = 0.1  # CPU deployments get a tenth of their production CPUs (Ray's accounting only)
HEAD_CPUS = 2
# replica bounds in the bench (min, max); every other deployment runs one replica. Two Ingress replicas as
# in production: two handles, each with its own view of FrameDedup's replicas, route the same streams;
# two Router replicas as in production: one is killed in the node-loss phase while the other serves
BOUNDS = {"FrameDedup": (2, 3), "LLM": (1, 2), "Ingress": (2, 2), "Router": (2, 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_gpu_deployment(name: str) -> bool:
    """FrameDedup and the self-hosted LLM tiers: the deployments production places on GPU pods."""
    return name == "FrameDedup" or name.startswith("LLM-")


def bench_config(
    production: dict[str, Any],
    *,
    http_port: int,
    state_dir: Path,
    delay_divisor: float = 5.0,
    frame_dedup_replicas: tuple[int, int] = BOUNDS["FrameDedup"],
) -> dict[str, Any]:
    """The production Serve config cut to fit this machine, in the same format (see the module doc)."""
    config = copy.deepcopy(production)
    config["proxy_location"] = "HeadOnly"  # one proxy: every node shares 127.0.0.1, so one port
    config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    app = config["applications"][0]
    app["args"] = {
        **app["args"],
        "state_dir": str(state_dir),
        "dedup": {"device": "cpu"},
        "screen": {"enabled": False},  # OCR of every sent frame would take the 2 cores from the rest
    }
    kept = []
    for d in app["deployments"]:
        name = d["name"]
        if name == "ScreenReader":
            continue
        scaling = d["autoscaling_config"]
        if is_gpu_deployment(name):
            d["ray_actor_options"] = {"num_cpus": 0, "resources": {GPU_RESOURCE: GPU_SHARE}}
            low, high = frame_dedup_replicas if name == "FrameDedup" else BOUNDS["LLM"]
        else:
            cpus = d["ray_actor_options"]["num_cpus"]
            d["ray_actor_options"] = {"num_cpus": round(cpus * CPU_SCALE, 3)}
            low, high = BOUNDS.get(name, (1, 1))
        scaling.update(min_replicas=low, max_replicas=high)
        for key in ("upscale_delay_s", "downscale_delay_s"):
            scaling[key] = round(scaling[key] / delay_divisor, 3)
        kept.append(d)
    app["deployments"] = kept
    return config


@dataclass
class BenchCluster:
    """A head and worker nodes as processes of this machine, with ports and a temp dir of their own."""

    root: Path
    head: Any = None
    cluster: Any = None
    workers: list[Any] = field(default_factory=list)
    dashboard_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, workers: int) -> None:
        # Ray's temp dir (sessions, sockets, the "last cluster" address file that a bare ray.init() reads)
        # under our folder: other Ray users on this machine never see or join this cluster
        os.environ["RAY_TMPDIR"] = str(self.root)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # the replicas import deployments/ and serve_app/ from this checkout
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        )
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": HEAD_CPUS,
                "gcs_server_port": free_port(),
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": self.dashboard_port,
                "dashboard_agent_listen_port": free_port(),
                "metrics_export_port": free_port(),
                "object_store_memory": 200 * 1024**2,
            },
        )
        self.head = self.cluster.head_node
        for _ in range(workers):
            self.add_worker()
        self.wait_dashboard()

    def add_worker(self, from_thread: bool = False) -> Any:
        """A worker node. `from_thread`: added off the main thread (a killed node's replacement, while
        the load runs), so without the exit hooks Ray registers, which only the main thread may do;
        bench_cluster's teardown stops it with the rest."""
        self.cluster._shutdown_at_exit = not from_thread
        try:
            node = self._add_worker()
        finally:
            self.cluster._shutdown_at_exit = True
        self.workers.append(node)
        return node

    def _add_worker(self) -> Any:
        return self.cluster.add_node(
            num_cpus=0,
            resources={GPU_RESOURCE: GPU_PER_NODE},
            object_store_memory=100 * 1024**2,
            metrics_export_port=free_port(),
        )

    def kill(self, node: Any) -> None:
        """The node dies at once: its raylet and every process on it, no graceful shutdown."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def wait_dashboard(self, timeout_s: float = 60.0) -> None:
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.dashboard}/api/version", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"dashboard at {self.dashboard} did not answer in {timeout_s:.0f} s")

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.shutdown()
            self.cluster = None


@contextlib.contextmanager
def bench_cluster(workers: int, keep_logs: Path | None = None) -> Iterator[BenchCluster]:
    """Started cluster; on the way out (return, error, SIGTERM, interpreter exit) it and Postgres stop."""
    root = Path(tempfile.mkdtemp(prefix="sgc-"))  # short: Unix socket paths live under it
    cluster = BenchCluster(root)
    state = root / "state"

    def teardown() -> None:
        cluster.shutdown()
        from serve_app.db.database import stop_embedded

        with contextlib.suppress(Exception):
            stop_embedded(state / "pgdata")
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(teardown)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cluster.start(workers)
        yield cluster
    except BaseException:
        logs = root / "ray" / "session_latest" / "logs"
        if keep_logs is not None and logs.is_dir():  # Ray's logs of every node, for what went wrong
            shutil.copytree(logs, keep_logs, dirs_exist_ok=True)
            print(f"Ray logs kept in {keep_logs}", file=sys.stderr)
        raise
    finally:
        teardown()
        atexit.unregister(teardown)
        signal.signal(signal.SIGTERM, previous)


# Serve's status API (the dashboard's REST endpoint that `serve status` reads)


def serve_deploy(config: dict[str, Any], dashboard: str, folder: Path) -> None:
    path = folder / "serve-config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    serve = Path(sys.executable).parent / "serve"
    cmd = [str(serve), "deploy", str(path), "--address", dashboard]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"serve deploy failed ({done.returncode}): {done.stderr[-2000:]}")


def app_status(dashboard: str) -> dict[str, Any]:
    """The application's details: status, and per deployment its status, target and replicas."""
    body = httpx.get(f"{dashboard}/api/serve/applications/", timeout=10).json()
    return body.get("applications", {}).get(APP, {})


def wait_running(dashboard: str, timeout_s: float = 600.0) -> float:
    """Seconds until the application is RUNNING; raises on DEPLOY_FAILED or the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        app = app_status(dashboard)
        status = app.get("status")
        if status == "RUNNING":
            return time.monotonic() - started
        if status == "DEPLOY_FAILED":
            raise RuntimeError(f"deploy failed: {app.get('message', '')[-2000:]}")
        time.sleep(1.0)
    raise TimeoutError(
        f"application not RUNNING after {timeout_s:.0f} s: {app_status(dashboard).get('message')}"
    )


def running_replicas(app: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [r for r in d.get("replicas", []) if r.get("state") == "RUNNING"]
        for name, d in app.get("deployments", {}).items()
    }


def gpu_nodes(dashboard: str) -> set[str]:
    """Alive nodes that offer the `gpu_node` resource, from `ray.util.state`."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    return {n.node_id for n in nodes if n.resources_total.get(GPU_RESOURCE, 0) > 0}


@dataclass
class Placement:
    ok: bool
    rows: list[tuple[str, str, int, int]]  # deployment, node, replicas there, wanted there (-1: none)
    problems: list[str]


def check_placement(app: dict[str, Any], head_id: str, gpu_ids: set[str], names: dict[str, str]) -> Placement:
    """FrameDedup and LLM replicas on `gpu_node` nodes only, spread over them; the rest on the head."""
    rows, problems = [], []
    for name, replicas in sorted(running_replicas(app).items()):
        by_node: dict[str, int] = {}
        for r in replicas:
            by_node[r["node_id"]] = by_node.get(r["node_id"], 0) + 1
        allowed = gpu_ids if is_gpu_deployment(name) else {head_id}
        for node_id, n in sorted(by_node.items(), key=lambda kv: names.get(kv[0], kv[0])):
            rows.append((name, names.get(node_id, node_id[:8]), n, 1 if node_id in allowed else 0))
            if node_id not in allowed:
                problems.append(f"{name}: {n} replica(s) on {names.get(node_id, node_id)}")
        if not replicas:
            problems.append(f"{name}: no RUNNING replica")
        if is_gpu_deployment(name) and len(replicas) >= 2 and len(by_node) < min(len(replicas), len(gpu_ids)):
            problems.append(f"{name}: {len(replicas)} replicas on only {len(by_node)} node(s)")
    return Placement(not problems, rows, problems)


def print_placement(placement: Placement) -> None:
    print(f"{'deployment':16s} {'node':10s} {'replicas':>8s}  placed")
    for name, node, n, ok in placement.rows:
        print(f"{name:16s} {node:10s} {n:8d}  {'yes' if ok else 'NO'}")
    for problem in placement.problems:
        print(f"placement problem: {problem}")


def node_names(cluster: BenchCluster) -> dict[str, str]:
    names = {cluster.head.node_id: "head"}
    names.update({w.node_id: f"worker-{n + 1}" for n, w in enumerate(cluster.workers)})
    return names


# Load over HTTP through the head's proxy: screen shares (frames one at a time, each stream in order) and
# support users (knowledge search, routed chat; every fifth question escalates to the LLM tier)

TENANT = "bench"
QUESTIONS = (
    "How do I reset a forgotten password?",
    "Can I get a refund on an annual plan?",
    "How do I export my notes as PDF?",
    "Why is sync not working on my phone?",
)
OFF_TOPIC = "Hi! Can you write one friendly sentence about notebooks?"
# above the Router's 60 s timeout for the LLM tier: a failed request is the graph's answer, not the
# client giving up first
CLIENT_TIMEOUT_S = 90.0
CLIP = {"width": 640, "height": 360, "fps": 10.0, "duration_s": 300.0}


@dataclass
class Call:
    kind: str  # frame, chat, search
    stream: str | None
    started: float
    ended: float
    status: int | None  # HTTP status; None: transport error or timeout
    body: dict[str, Any] | None
    jpeg: bytes | None = None
    ts: float | None = None
    speaking: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Load:
    """Concurrent screen shares and users; every request and its answer is kept, in order per stream."""

    base_url: str
    key: str
    calls: list[Call] = field(default_factory=list)
    stop: Any = None  # asyncio.Event, made on the running loop

    def client(self, connections: int) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections + 4)
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=CLIENT_TIMEOUT_S, headers=headers, limits=limits
        )

    async def _call(self, client: httpx.AsyncClient, kind: str, stream: str | None, request, **extra) -> Call:
        started = time.monotonic()
        try:
            response = await request
        except httpx.HTTPError as exc:
            status, body = None, {"error": type(exc).__name__}
        else:
            status = response.status_code
            try:
                body = response.json()
            except ValueError:
                body = {"error": response.text[:200]}
        call = Call(kind, stream, started, time.monotonic(), status, body, **extra)
        self.calls.append(call)
        return call

    async def screen_share(self, client: httpx.AsyncClient, sid: str, seed: int) -> None:
        from supportgraph_tools.frames.synthetic import ClipSpec, ScreenShareClip

        for frame in ScreenShareClip(ClipSpec(seed=seed, **CLIP)).frames():
            if self.stop.is_set():
                return
            await self._call(
                client,
                "frame",
                sid,
                client.post(
                    f"/v1/streams/{sid}/frames",
                    params={"ts": frame.ts, "speaking": frame.is_speaking},
                    content=frame.jpeg,
                    headers={"content-type": "image/jpeg"},
                ),
                jpeg=frame.jpeg,
                ts=frame.ts,
                speaking=frame.is_speaking,
            )

    async def user(self, client: httpx.AsyncClient, n: int, escalate_every: int = 5) -> None:
        turn = 0
        while not self.stop.is_set():
            question = QUESTIONS[(n + turn) % len(QUESTIONS)]
            search = {"tenant_id": TENANT, "query": question, "top_k": 3}
            await self._call(client, "search", None, client.post("/v1/knowledge/search", json=search))
            asked = OFF_TOPIC if turn % escalate_every == escalate_every - 1 else question
            body = {"model": "auto", "messages": [{"role": "user", "content": asked}], "max_tokens": 32}
            await self._call(client, "chat", None, client.post("/v1/chat/completions", json=body))
            turn += 1
            await asyncio.sleep(0.2)

    async def owners(self, client: httpx.AsyncClient, sids: list[str]) -> dict[str, tuple[str, int]]:
        """Each stream's owning replica and the frames it counted for the stream."""

        async def one(sid: str) -> tuple[str, tuple[str, int]]:
            body = (await client.get(f"/v1/streams/{sid}/stats")).json()
            return sid, (body["replica"], (body.get("stream") or {}).get("total", 0))

        return dict(await asyncio.gather(*(one(s) for s in sids)))

    def frames_of(self, sid: str) -> list[Call]:
        return sorted(
            (c for c in self.calls if c.kind == "frame" and c.stream == sid), key=lambda c: c.started
        )


def reference_sends(calls: list[Call], user_config: dict[str, Any]) -> int:
    """Frames one replica that saw the answered frames in the same order would have sent (no move)."""
    from serve_app.frames.decode import FrameLimits, decode_frame
    from serve_app.frames.service import DedupService
    from serve_app.settings import DedupSettings

    service = DedupService(DedupSettings(**user_config, device="cpu"))

    async def replay() -> int:
        sent = 0
        for c in calls:
            frame = decode_frame(c.jpeg, "image/jpeg", FrameLimits())
            sent += (await service.offer(c.stream, frame, c.speaking, c.ts)).send
        return sent

    return asyncio.run(replay())


@dataclass
class StreamMoves:
    """What happened to each stream across a change of FrameDedup replicas."""

    streams: int
    moved: int
    moved_to_new: int  # moved streams now on a replica that was not there before
    split: list[str]  # streams whose frames did not all go to the owner of the moment
    moves: list[int]  # per stream: replicas it moved to (its `first` decisions after the first one)
    extra_frames: list[int]  # per moved stream: frames sent beyond what one replica would have sent
    failed_frames: int

    @property
    def extra_per_moved(self) -> float:
        return sum(self.extra_frames) / len(self.extra_frames) if self.extra_frames else 0.0

    @property
    def extra_per_move(self) -> float:
        return sum(self.extra_frames) / sum(self.moves) if sum(self.moves) else 0.0


def stream_moves(
    load: Load,
    before: dict[str, tuple[str, int]],
    after: dict[str, tuple[str, int]],
    new_replicas: set[str],
    user_config: dict[str, Any],
) -> StreamMoves:
    """A stream's frames never split: the owner now counted exactly the answered frames since the
    stream's last `first` decision (a replica's first frame of a stream). Each `first` after the stream's
    very first frame is a move to another replica."""
    moved, to_new, split, moves, extra, failed = 0, 0, [], [], [], 0
    for sid, (owner_now, counted) in after.items():
        calls = load.frames_of(sid)
        answered = [c for c in calls if c.ok]
        failed += len(calls) - len(answered)
        firsts = [n for n, c in enumerate(answered) if c.body["reason"] == "first"]
        is_moved = owner_now != before[sid][0] or len(firsts) > 1  # moved, maybe away and back
        since_first = len(answered) - (firsts[-1] if firsts else 0)
        moves.append(max(len(firsts) - 1, 0))
        if counted != since_first:
            split.append(f"{sid}: the owner counted {counted} of the {since_first} frames since it took it")
        if is_moved:
            moved += 1
            to_new += owner_now in new_replicas
            cluster_sent = sum(bool(c.body["send"]) for c in answered)
            extra.append(cluster_sent - reference_sends(answered, user_config))
    return StreamMoves(len(after), moved, to_new, split, moves, extra, failed)


def frame_dedup_ids(dashboard: str) -> set[str]:
    return {r["replica_id"] for r in running_replicas(app_status(dashboard)).get("FrameDedup", [])}


async def affinity_phase(
    cluster: BenchCluster, config: dict[str, Any], key: str, streams: int, seconds: float
) -> dict[str, Any]:
    """Screen shares run while a third FrameDedup replica joins (a `serve deploy` raising its minimum):
    each stream keeps its replica or moves to the new one, and no stream's frames split."""
    load = Load(f"http://127.0.0.1:{cluster.http_port}", key, stop=asyncio.Event())
    sids = [f"tenant_{TENANT}_affinity-{n}.screen" for n in range(streams)]
    async with load.client(streams) as client:
        tasks = [asyncio.create_task(load.screen_share(client, s, 200 + n)) for n, s in enumerate(sids)]
        try:
            await asyncio.sleep(seconds / 2)
            before_ids = await asyncio.to_thread(frame_dedup_ids, cluster.dashboard)
            before = await load.owners(client, sids)
            grown = grown_config(config)
            joined = time.monotonic()
            await asyncio.to_thread(serve_deploy, grown, cluster.dashboard, cluster.root)
            while len(await asyncio.to_thread(frame_dedup_ids, cluster.dashboard)) < 3:
                await asyncio.sleep(0.5)
            join_s = time.monotonic() - joined
            await asyncio.sleep(seconds / 2)
        finally:
            load.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        after = await load.owners(client, sids)
    new_ids = await asyncio.to_thread(frame_dedup_ids, cluster.dashboard) - before_ids
    user_config = frame_dedup_user_config(config)
    moves = await asyncio.to_thread(stream_moves, load, before, after, new_ids, user_config)
    frames = sum(1 for c in load.calls if c.kind == "frame")
    print(
        f"affinity: {moves.streams} streams, {frames} frames; a FrameDedup replica joined in {join_s:.1f} s;"
        f" {moves.moved} streams moved ({moves.moved_to_new} to the new replica, at most {max(moves.moves)}"
        f" move per stream), split: {len(moves.split)},"
        f" failed frames: {moves.failed_frames}, extra frames per moved stream:"
        f" {moves.extra_per_moved:.2f} {moves.extra_frames}"
    )
    for problem in moves.split:
        print(f"split stream: {problem}")
    return {
        "streams": moves.streams,
        "frames": frames,
        "moved": moves.moved,
        "moved_to_new_replica": moves.moved_to_new,
        "split_streams": len(moves.split),
        "failed_frames": moves.failed_frames,
        "extra_frames_per_moved_stream": round(moves.extra_per_moved, 2),
        "ok": not moves.split
        and moves.moved == moves.moved_to_new
        and max(moves.moves) <= 1
        and not moves.failed_frames,
    }


Running = dict[str, list[dict[str, Any]]]  # RUNNING replicas per deployment


def wait_recovered(
    dashboard: str, gone: Callable[[Running], bool], since: float, timeout_s: float = 300.0
) -> dict[str, float]:
    """Seconds from `since` until Serve dropped the dead replicas (`gone(running replicas)` holds:
    `detected_s`) and until every deployment is HEALTHY again with its target of RUNNING replicas
    (`recovery_s`)."""
    detected = None
    while time.monotonic() - since < timeout_s:
        app = app_status(dashboard)
        running = running_replicas(app)
        dropped = gone(running)
        if dropped and detected is None:
            detected = time.monotonic() - since
        healthy = app.get("status") == "RUNNING" and all(
            d.get("status") == "HEALTHY" and len(running[name]) >= d.get("target_num_replicas", 0)
            for name, d in app.get("deployments", {}).items()
        )
        if healthy and dropped:
            return {"detected_s": detected, "recovery_s": time.monotonic() - since}
        time.sleep(0.25)
    app = app_status(dashboard)
    states = {
        name: (d.get("status"), len(running_replicas(app)[name]), d.get("target_num_replicas"))
        for name, d in app.get("deployments", {}).items()
    }
    why = {name: d.get("message") for name, d in app.get("deployments", {}).items() if d.get("message")}
    raise TimeoutError(
        f"not recovered {timeout_s:.0f} s after the fault: (status, running, target) {states}; {why}"
    )


async def ledger_request_ids(state: Path, request_ids: list[str]) -> set[str]:
    """Which of these routed requests have cost events in the tenant's ledger."""
    from serve_app.db.database import Database
    from serve_app.settings import load_settings

    async with (
        Database.of(load_settings(None, state_dir=state)) as db,
        db.tenant(TENANT) as conn,
    ):
        rows = await conn.fetch(
            "SELECT DISTINCT request_id::text AS id FROM cost_events WHERE request_id = ANY($1::uuid[])",
            request_ids,
        )
    return {r["id"] for r in rows}


@dataclass
class Fault:
    """One fault of the node-loss phase: what was killed, when, and how long Serve took to heal."""

    name: str  # frame_dedup_node, llm_node, router_replica
    target: str  # the node's name, or the replica's id
    held: dict[str, int]  # replicas per deployment that died with it
    at: float  # monotonic time of the kill
    detected_s: float = 0.0
    recovery_s: float = 0.0
    replaced_s: float | None = None  # a node's replacement joined the cluster


def on_node(running: Running, node_id: str) -> dict[str, int]:
    return {name: n for name, rs in running.items() if (n := sum(r["node_id"] == node_id for r in rs))}


def pick_node(cluster: BenchCluster, running: Running, kind: str) -> Any:
    """`llm_node`: the worker holding an LLM replica; `frame_dedup_node`: one holding FrameDedup
    replicas and no LLM replica (else any holding FrameDedup), so the two kills hit both."""
    held = {w.node_id: on_node(running, w.node_id) for w in cluster.workers}
    llm = [w for w in cluster.workers if any(n.startswith("LLM-") for n in held[w.node_id])]
    if kind == "llm_node":
        if not llm:
            raise RuntimeError(f"no worker holds an LLM replica: {held}")
        return llm[0]
    dedup = [w for w in cluster.workers if "FrameDedup" in held[w.node_id]]
    only = [w for w in dedup if w not in llm]
    if not (only or dedup):
        raise RuntimeError(f"no worker holds a FrameDedup replica: {held}")
    return (only or dedup)[0]


async def inflict(cluster: BenchCluster, kind: str, names: dict[str, str]) -> Fault:
    """Kill at once (no graceful stop) a worker node (`Cluster.remove_node`) or the Router replica's
    process (SIGKILL), then wait until Serve healed."""
    running = running_replicas(await asyncio.to_thread(app_status, cluster.dashboard))
    replacing = None
    if kind == "router_replica":
        replica = running["Router"][0]
        fault = Fault(kind, replica["replica_id"], {"Router": 1}, time.monotonic())
        os.kill(replica["pid"], signal.SIGKILL)

        def gone(now: Running) -> bool:
            return all(r["replica_id"] != replica["replica_id"] for r in now.get("Router", []))

    else:
        victim = pick_node(cluster, running, kind)
        fault = Fault(kind, names[victim.node_id], on_node(running, victim.node_id), time.monotonic())
        await asyncio.to_thread(cluster.kill, victim)

        async def replace() -> None:  # KubeRay replaces a lost worker pod; here a node starts at once
            node = await asyncio.to_thread(cluster.add_worker, True)
            names[node.node_id] = f"worker-{len(names)}"
            fault.replaced_s = time.monotonic() - fault.at

        replacing = asyncio.create_task(replace())  # while Serve's recovery is watched

        def gone(now: Running) -> bool:
            return not on_node(now, victim.node_id)

    print(f"  {kind}: killed {fault.target} holding {fault.held}", flush=True)
    try:
        times = await asyncio.to_thread(wait_recovered, cluster.dashboard, gone, fault.at)
    finally:  # the replacement node is in (or failed) before anything else, teardown included
        if replacing is not None:
            await asyncio.gather(replacing, return_exceptions=True)
    fault.detected_s, fault.recovery_s = times["detected_s"], times["recovery_s"]
    print(
        f"  {kind}: dropped after {fault.detected_s:.1f} s, healthy after {fault.recovery_s:.1f} s",
        flush=True,
    )
    return fault


FAULTS = ("frame_dedup_node", "llm_node", "router_replica")


def blame(failed: list[Call], kills: list[float]) -> dict[int, list[Call]]:
    """Failed requests per fault (index into `kills`, in order): the last fault the request was in
    flight at, else the last one before it was sent; -1: sent and failed before the first fault."""
    out: dict[int, list[Call]] = {n: [] for n in range(-1, len(kills))}
    for c in failed:
        during = [n for n, at in enumerate(kills) if c.started <= at <= c.ended]
        before = [n for n, at in enumerate(kills) if at <= c.started]
        out[(during or before or [-1])[-1]].append(c)
    return out


async def node_loss_phase(
    cluster: BenchCluster, config: dict[str, Any], key: str, streams: int, users: int, warm_s: float
) -> dict[str, Any]:
    """Load runs; one after another, each after the graph healed from the last and a pause: the worker
    holding FrameDedup replicas (and no LLM), the worker holding the LLM replica, the Router replica."""
    load = Load(f"http://127.0.0.1:{cluster.http_port}", key, stop=asyncio.Event())
    sids = [f"tenant_{TENANT}_loss-{n}.screen" for n in range(streams)]
    names = node_names(cluster)
    faults: list[Fault] = []
    async with load.client(streams + users) as client:
        tasks = [asyncio.create_task(load.screen_share(client, s, 300 + n)) for n, s in enumerate(sids)]
        tasks += [asyncio.create_task(load.user(client, n)) for n in range(users)]
        try:
            await asyncio.sleep(warm_s)
            before_ids = await asyncio.to_thread(frame_dedup_ids, cluster.dashboard)
            before = await load.owners(client, sids)
            for kind in FAULTS:
                faults.append(await inflict(cluster, kind, names))
                await asyncio.sleep(warm_s / 2)  # traffic goes on after the recovery
        finally:
            load.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        after = await load.owners(client, sids)
    new_ids = await asyncio.to_thread(frame_dedup_ids, cluster.dashboard) - before_ids
    moves = await asyncio.to_thread(
        stream_moves, load, before, after, new_ids, frame_dedup_user_config(config)
    )
    chats = [c for c in load.calls if c.kind == "chat" and c.ok]
    degraded = sum(bool(c.body["supportgraph"].get("degraded")) for c in chats)
    request_ids = sorted({c.body["supportgraph"]["request_id"] for c in chats})
    # late: answers that went out before their events were written (the Router's wait gave up);
    # lost: answered requests with no event in the ledger at all, read once every call has ended
    late = sum(c.body["supportgraph"].get("costs_written") is False for c in chats)
    lost = len(set(request_ids) - await ledger_request_ids(cluster.root / "state", request_ids))
    failed = [c for c in load.calls if not c.ok]
    blamed = blame(failed, [f.at for f in faults])
    print(f"node loss: {len(load.calls)} requests under {streams} screen shares and {users} users")
    print(
        f"{'fault':16s} {'killed':10s} {'replicas lost':32s} {'dropped s':>9s} {'healthy s':>9s}"
        f" {'in flight':>9s} {'failed':>6s} {'of them in flight':>17s}"
    )
    per_fault = {}
    for n, f in enumerate(faults):
        in_flight = [c for c in load.calls if c.started <= f.at <= c.ended]
        mine = blamed[n]
        mine_in_flight = [c for c in mine if c.started <= f.at]
        held = ", ".join(f"{k} {v}" for k, v in f.held.items())
        print(
            f"{f.name:16s} {f.target[:10]:10s} {held:32s} {f.detected_s:9.1f} {f.recovery_s:9.1f}"
            f" {len(in_flight):9d} {len(mine):6d} {len(mine_in_flight):17d}"
        )
        per_fault[f.name] = {
            "killed": f.target,
            "replicas_lost": f.held,
            "replacement_node_s": None if f.replaced_s is None else round(f.replaced_s, 1),
            "detected_s": round(f.detected_s, 1),
            "recovery_s": round(f.recovery_s, 1),
            "in_flight": len(in_flight),
            "failed_requests": len(mine),
            "failed_in_flight": len(mine_in_flight),
        }
    if blamed[-1]:
        print(f"  failed before the first fault: {len(blamed[-1])}")
    start = faults[0].at if faults else 0.0
    for c in failed:
        detail = str((c.body or {}).get("detail", ""))[:120]
        print(
            f"  failed {c.kind}: sent at {c.started - start:+.1f} s from the first fault, answered after"
            f" {c.ended - c.started:.1f} s: {c.status or c.body['error']} {detail}"
        )
    by_kind = {
        kind: f"{sum(c.kind == kind for c in failed)}/{sum(c.kind == kind for c in load.calls)}"
        for kind in ("frame", "search", "chat")
    }
    reasons = Counter(c.status or c.body["error"] for c in failed)
    print(f"  failed/sent by kind {by_kind}; failures: {dict(reasons)}")
    print(
        f"  streams: {moves.streams}, moved: {moves.moved} (moves per stream: {Counter(moves.moves)}),"
        f" split: {len(moves.split)},"
        f" extra frames per moved stream: {moves.extra_per_moved:.2f} {moves.extra_frames},"
        f" per move: {moves.extra_per_move:.2f}"
    )
    print(
        f"  chat answers: {len(chats)} ({degraded} degraded); cost events lost: {lost}"
        f" (answers that went out before their events were written: {late})"
    )
    for problem in moves.split:
        print(f"  split stream: {problem}")
    return {
        "failed_requests": len(failed),
        "recovery_s": round(max(f.recovery_s for f in faults), 1),
        "cost_events_lost": lost,
        "extra_frames_per_moved_stream": round(moves.extra_per_moved, 2),
        "extra_frames_per_move": round(moves.extra_per_move, 2),
        "split_streams": len(moves.split),
        "cost_events_late": late,
        "faults": per_fault,
    }


def autoscale_config(config: dict[str, Any]) -> dict[str, Any]:
    """FrameDedup between its three replicas of the earlier phases and four; the LLM between one and two."""
    return bench_config_with(config, frame_dedup=(3, 4))


def scaling_bounds(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        d["name"]: d["autoscaling_config"]
        for d in config["applications"][0]["deployments"]
        if d["autoscaling_config"]["max_replicas"] > d["autoscaling_config"]["min_replicas"]
    }


async def autoscale_phase(
    cluster: BenchCluster, config: dict[str, Any], key: str, step_s: float, callers: int, users: int
) -> dict[str, dict[str, Any]]:
    """A load step (closed loops: `callers` FrameDedup handle calls and `users` chats that escalate to
    the LLM tier, always in flight) for `step_s`, then none: per autoscaled deployment, seconds from the
    step's start until the autoscaler wanted (`decide_up_s`) and had RUNNING (`up_s`) its maximum, and
    from the step's end until it wanted (`decide_down_s`) and had (`down_s`) its minimum again."""
    import numpy as np
    import ray
    from ray import serve

    bounds = scaling_bounds(config)
    await asyncio.to_thread(serve_deploy, config, cluster.dashboard, cluster.root)
    while True:  # at the minimum of each autoscaled deployment, and RUNNING
        app = await asyncio.to_thread(app_status, cluster.dashboard)
        running = running_replicas(app)
        if app.get("status") == "RUNNING" and all(
            len(running[n]) == b["min_replicas"] for n, b in bounds.items()
        ):
            break
        await asyncio.sleep(1.0)
    ray.init(address=cluster.cluster.address, log_to_driver=False, logging_level="ERROR")
    dedup = serve.get_deployment_handle("FrameDedup", app_name=APP)
    stop = asyncio.Event()
    rng = np.random.default_rng(7)

    async def caller(n: int) -> None:
        sid, ts = f"tenant_{TENANT}_scale-{n}.screen", 0.0
        while not stop.is_set():
            frames = rng.integers(0, 255, size=(2, 180, 320, 3), dtype=np.uint8)
            await dedup.offer_many.remote(stream_id=sid, frames=frames, is_speaking=True, ts=[ts, ts + 0.04])
            ts += 0.1

    load = Load(f"http://127.0.0.1:{cluster.http_port}", key, stop=stop)

    async def escalating_user(client: httpx.AsyncClient) -> None:
        body = {"model": "auto", "messages": [{"role": "user", "content": OFF_TOPIC}], "max_tokens": 32}
        while not stop.is_set():
            await load._call(client, "chat", None, client.post("/v1/chat/completions", json=body))

    samples: list[tuple[float, dict[str, tuple[int, int]]]] = []

    async def watch(until: asyncio.Event) -> None:
        while not until.is_set():
            app = await asyncio.to_thread(app_status, cluster.dashboard)
            running = running_replicas(app)
            samples.append(
                (
                    time.monotonic(),
                    {
                        n: (len(running.get(n, [])), app["deployments"][n].get("target_num_replicas", 0))
                        for n in bounds
                    },
                )
            )
            await asyncio.sleep(0.5)

    done_watching = asyncio.Event()
    watcher = asyncio.create_task(watch(done_watching))
    async with load.client(users) as client:
        started = time.monotonic()
        tasks = [asyncio.create_task(caller(n)) for n in range(callers)]
        tasks += [asyncio.create_task(escalating_user(client)) for _ in range(users)]
        try:
            await asyncio.sleep(step_s)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    ended = time.monotonic()
    deadline = ended + max(b["downscale_delay_s"] for b in bounds.values()) * 3 + 90
    while time.monotonic() < deadline:
        last = samples[-1][1] if samples else {}
        if last and all(last[n][0] == b["min_replicas"] for n, b in bounds.items()):
            break
        await asyncio.sleep(1.0)
    done_watching.set()
    await watcher
    ray.shutdown()

    def first(after: float, name: str, index: int, ok) -> float | None:
        return next((t - after for t, seen in samples if t >= after and ok(seen[name][index])), None)

    out = {}
    for name, b in bounds.items():
        high, low = b["max_replicas"], b["min_replicas"]
        out[name] = {
            "decide_up_s": first(started, name, 1, lambda v, h=high: v >= h),
            "up_s": first(started, name, 0, lambda v, h=high: v >= h),
            "decide_down_s": first(ended, name, 1, lambda v, lo=low: v <= lo),
            "down_s": first(ended, name, 0, lambda v, lo=low: v <= lo),
            "upscale_delay_s": b["upscale_delay_s"],
            "downscale_delay_s": b["downscale_delay_s"],
            "replicas": f"{low}->{high}",
        }
    chats = [c for c in load.calls if c.kind == "chat"]
    print(
        f"autoscale: load step of {step_s:.0f} s ({callers} FrameDedup handle callers, {users} escalating"
        f" chat users; {sum(c.ok for c in chats)}/{len(chats)} chats answered)"
    )
    print(
        f"{'deployment':14s} {'replicas':>8s} {'upscale delay':>13s} {'wants max':>9s} {'has max':>8s}"
        f" {'downscale delay':>15s} {'wants min':>9s} {'has min':>8s}"
    )
    fmt = lambda v: f"{v:.1f}" if v is not None else "never"  # noqa: E731
    for name, r in out.items():
        print(
            f"{name:14s} {r['replicas']:>8s} {r['upscale_delay_s']:13.1f} {fmt(r['decide_up_s']):>9s}"
            f" {fmt(r['up_s']):>8s} {r['downscale_delay_s']:15.1f} {fmt(r['decide_down_s']):>9s}"
            f" {fmt(r['down_s']):>8s}"
        )
    for name in bounds:  # the timeline behind the table
        changes, last = [], None
        for t, seen in samples:
            if seen[name] != last:
                changes.append(f"{t - started:.0f}s {seen[name][0]}/{seen[name][1]}")
                last = seen[name]
        print(
            f"  {name} running/wanted at s from the step's start"
            f" (it ended at {ended - started:.0f} s): {changes}"
        )
    return out


def bench_config_with(config: dict[str, Any], *, frame_dedup: tuple[int, int]) -> dict[str, Any]:
    changed = copy.deepcopy(config)
    for d in changed["applications"][0]["deployments"]:
        if d["name"] == "FrameDedup":
            d["autoscaling_config"].update(min_replicas=frame_dedup[0], max_replicas=frame_dedup[1])
    return changed


def frame_dedup_user_config(config: dict[str, Any]) -> dict[str, Any]:
    return next(d for d in config["applications"][0]["deployments"] if d["name"] == "FrameDedup")[
        "user_config"
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def grown_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config after the affinity phase: three FrameDedup replicas."""
    return bench_config_with(config, frame_dedup=(3, 3))


def ingest(state: Path) -> None:
    """The sample help center for the bench tenant: the users' questions get passages and answers."""
    from serve_app.samples import ingest_help_center
    from serve_app.settings import load_settings

    asyncio.run(ingest_help_center(load_settings(None, state_dir=state), TENANT))


def api_key(state: Path) -> str:
    from serve_app.settings import load_settings
    from supportgraph_tools.demo import demo_key

    return asyncio.run(demo_key(load_settings(None, state_dir=state), TENANT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3, help="worker nodes with the gpu_node resource")
    parser.add_argument("--placement-only", action="store_true", help="stop after the placement check")
    parser.add_argument("--delay-divisor", type=float, default=5.0, help="autoscaling delays / this")
    parser.add_argument("--deploy-timeout-s", type=float, default=600.0)
    parser.add_argument("--streams", type=int, default=12, help="screen shares in the affinity phase")
    parser.add_argument("--affinity-s", type=float, default=20.0, help="traffic around the replica join")
    parser.add_argument("--users", type=int, default=4, help="support users during the node loss")
    parser.add_argument("--warm-s", type=float, default=15.0, help="load before the node is killed")
    parser.add_argument("--step-s", type=float, default=45.0, help="the autoscaling load step")
    parser.add_argument("--callers", type=int, default=80, help="FrameDedup handle calls in flight")
    parser.add_argument("--escalating-users", type=int, default=6, help="chats to the LLM tier in flight")
    parser.add_argument("--keep-logs", type=Path, help="copy Ray's logs here when the bench fails")
    args = parser.parse_args()
    production = yaml.safe_load(PRODUCTION.read_text())
    result: dict[str, Any] = {"bench": "cluster", "nodes": 1 + args.workers, "placement_ok": False}
    with bench_cluster(args.workers, args.keep_logs) as cluster:
        names = node_names(cluster)
        state = cluster.root / "state"
        from serve_app.db.database import start_embedded

        start_embedded(state / "pgdata")  # from here, not from a replica: a node's death must not take it
        config = bench_config(
            production, http_port=cluster.http_port, state_dir=state, delay_divisor=args.delay_divisor
        )
        started = time.monotonic()
        serve_deploy(config, cluster.dashboard, cluster.root)
        wait_running(cluster.dashboard, args.deploy_timeout_s)
        deploy_s = time.monotonic() - started
        print(f"cluster: head + {args.workers} workers; serve deploy to RUNNING in {deploy_s:.1f} s")
        placement = check_placement(
            app_status(cluster.dashboard), cluster.head.node_id, gpu_nodes(cluster.dashboard), names
        )
        print_placement(placement)
        result["placement_ok"] = placement.ok
        if not args.placement_only:
            key = api_key(state)
            asyncio.run(affinity_phase(cluster, config, key, args.streams, args.affinity_s))
            ingest(state)
            result["node_loss"] = asyncio.run(
                node_loss_phase(cluster, grown_config(config), key, args.streams, args.users, args.warm_s)
            )
            scaled = asyncio.run(
                autoscale_phase(
                    cluster, autoscale_config(config), key, args.step_s, args.callers, args.escalating_users
                )
            )
            result["autoscale"] = {
                name: {"up_s": _round(r["up_s"]), "down_s": _round(r["down_s"])} for name, r in scaled.items()
            }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
