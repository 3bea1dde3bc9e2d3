"""Interactive paths alone and under the mixed load, in one run, with the CPU each deployment used.

    python benchmarks/interactive.py                 # ~3-4 min: the figures of docs/latency.md
    python benchmarks/interactive.py --quick         # ~1.5 min: shorter phases (a smoke run)

Starts the graph as `supportgraph serve` does (local Ray, embedded Postgres in a temporary folder, API
keys on, rate limits raised so they never answer), ingests the sample help center for one tenant, then:
1. `hops`: one client, one request at a time: `/healthz` (Serve's proxy + the ingress), a knowledge
   search and a chat pinned to the extractive tier, each over HTTP and through the deployment handle
   from this process, with the replicas' own timings: where a request's fixed cost goes;
2. `closed`: `--clients` closed-loop clients on one path at a time (healthz, search, chat pinned to the
   extractive tier, chat through the ladder with the questions it answers without an LLM): throughput
   and latency alone;
3. `alone`: `--users` support users (a search, a chat pinned to the extractive tier, a help-center
   question through the ladder, 0.2 s reading) with nothing else running (the warm-up sorts out the
   help-center questions the ladder escalates: those are background work); then `frames alone`:
   `--streams` screen shares uploading JPEG frames at 30 fps with nothing else running;
4. `mixed`: the users, the screen shares and, every fifth turn of each user, a question that escalates
   to SmolLM2 (one the help center cannot answer, or one whose extractive answer did not verify;
   `benchmarks/load.py`'s mix), all at once.
Paths: `chat_ladder` is a ladder chat answered without an LLM attempt, `chat_escalated` one with one
(both the help-center questions and the unanswerable ones can escalate). Each phase reports requests,
throughput, throughput per core (requests/s over the machine's cores), p50/p95/p99, non-200 statuses
and the CPU cores each part of the graph used (`benchmarks/procs.py`). The last line is JSON:
`bench`, `cores`, `settings`, `hops`, `closed`, `alone`, `mixed` (each path: `requests`, `per_s`,
`per_core`, `p50_ms`, `p95_ms`, `p99_ms`, `statuses`, `errors`), `cpu` (phase -> part -> cores),
`cpu_ms_per_request` (closed phase: the graph's CPU per request), `ratio` (path -> mixed / alone p50 and
p95), `targets` (the issue's, with the measured value and whether it is met), `priorities` (part ->
lowest nice value of its threads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from procs import CpuMeter, priorities

from serve_app.demo import demo_key
from serve_app.frames.synthetic import ClipSpec, ScreenShareClip
from serve_app.runtime import local_graph
from serve_app.samples import ingest_help_center
from serve_app.settings import load_settings
from serve_app.stats import percentile

TENANT = "interactive"
QUESTIONS = (
    "How do I reset a forgotten password?",
    "Can I get a refund on an annual plan?",
    "How do I export my notes as PDF?",
    "How long are deleted notes kept?",
    "Why is sync not working on my phone?",
)
UNANSWERABLE = ("Does Lumen integrate with Salesforce?", "My notes don't show up on my phone")
READ_S = 0.2  # a person reads the answer
CHAT_PATHS = ("chat_extractive", "chat_ladder", "chat_escalated")


@dataclass
class Recorder:
    """Latencies, statuses and transport errors per path of one phase."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    errors: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, path: str, ms: float, status: int) -> None:
        self.latencies[path].append(ms)
        self.statuses[path][status] += 1

    def rows(self, wall_s: float, cores: int) -> dict[str, dict[str, Any]]:
        out = {}
        for path in sorted(set(self.latencies) | set(self.errors)):
            lat = self.latencies.get(path, [])
            per_s = len(lat) / wall_s

            def pct(q: float, lat: list[float] = lat) -> float | None:
                return round(percentile(lat, q), 1) if lat else None

            out[path] = {
                "requests": len(lat) + sum(self.errors[path].values()),
                "per_s": round(per_s, 2),
                "per_core": round(per_s / cores, 2),
                "p50_ms": pct(0.5),
                "p95_ms": pct(0.95),
                "p99_ms": pct(0.99),
                "statuses": {str(k): v for k, v in sorted(self.statuses[path].items()) if k != 200},
                "errors": dict(self.errors[path]),
            }
        return out


class Client:
    """One HTTP client for every path; each call is timed and recorded under the path it took."""

    def __init__(self, http: httpx.AsyncClient, rec: Recorder):
        self.http, self.rec = http, rec
        self.ladder = QUESTIONS  # help-center questions the ladder answers without an LLM (`warm`)
        self.escalating = UNANSWERABLE  # and those it escalates: background work

    def use(self, rec: Recorder) -> None:
        self.rec = rec

    async def _timed(self, path: str, call: Awaitable[httpx.Response]) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await call
        except httpx.HTTPError as exc:
            self.rec.errors[path][type(exc).__name__] += 1
            return None
        ms = (time.perf_counter() - started) * 1e3
        if path == "chat_ladder" and response.status_code == 200 and _escalated(response.json()):
            path = "chat_escalated"
        self.rec.add(path, ms, response.status_code)
        return response

    async def healthz(self, _n: int = 0) -> None:
        await self._timed("healthz", self.http.get("/healthz"))

    async def search(self, n: int = 0) -> None:
        body = {"tenant_id": TENANT, "query": QUESTIONS[n % len(QUESTIONS)], "top_k": 3}
        await self._timed("search", self.http.post("/v1/knowledge/search", json=body))

    async def chat(self, path: str, question: str, model: str) -> httpx.Response | None:
        body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 48}
        return await self._timed(path, self.http.post("/v1/chat/completions", json=body))

    async def chat_extractive(self, n: int = 0) -> None:
        await self.chat("chat_extractive", QUESTIONS[n % len(QUESTIONS)], "extractive")

    async def chat_ladder(self, n: int = 0) -> None:
        await self.chat("chat_ladder", self.ladder[n % len(self.ladder)], "auto")

    async def frame(self, sid: str, ts: float, speaking: bool, jpeg: bytes) -> None:
        params = {"ts": ts, "speaking": speaking}
        headers = {"content-type": "image/jpeg"}
        call = self.http.post(f"/v1/streams/{sid}/frames", params=params, content=jpeg, headers=headers)
        await self._timed("frames", call)


def _escalated(reply: dict[str, Any]) -> bool:
    """Whether a chat reply had an attempt on a tier other than the extractive one."""
    attempts = reply.get("supportgraph", {}).get("attempts", [])
    return any(a["tier"] != "extractive" for a in attempts)


async def warm(client: Client) -> None:
    """Each path once per question (first calls load models, fill caches and pools); the ladder's
    questions that escalate become background work, the rest are the `chat_ladder` path's questions."""
    for n, question in enumerate(QUESTIONS):
        await client.search(n)
        await client.chat_extractive(n)
        reply = await client.chat("chat_ladder", question, "auto")
        if reply is not None and reply.status_code == 200 and _escalated(reply.json()):
            client.escalating = (*client.escalating, question)
    client.ladder = tuple(q for q in QUESTIONS if q not in client.escalating) or QUESTIONS
    print(f"-- ladder: {len(client.ladder)} questions without an LLM, {len(client.escalating)} escalate")


async def closed_loop(call: Callable[[int], Awaitable[None]], clients: int, until: float) -> None:
    async def one(c: int) -> None:
        n = c
        while time.monotonic() < until:
            await call(n)
            n += clients

    await asyncio.gather(*(one(c) for c in range(clients)))


async def user(client: Client, n: int, until: float, escalate: bool) -> None:
    turn = 0
    while time.monotonic() < until:
        await client.search(n + turn)
        await client.chat_extractive(n + turn)
        if escalate and turn % 5 == 4:  # background: an LLM escalation
            await client.chat("chat_ladder", client.escalating[(n + turn) % len(client.escalating)], "auto")
        else:
            await client.chat_ladder(n + turn)
        turn += 1
        await asyncio.sleep(READ_S)


@dataclass
class Frames:
    """Each stream's frames, made before the timed phases (the client's JPEG encoding would otherwise
    share the cores with the graph), replayed in a loop at their own times."""

    clips: list[list[tuple[float, bool, bytes]]]
    span_s: float

    @classmethod
    def make(cls, streams: int, seconds: float) -> Frames:
        clips = []
        for n in range(streams):
            clip = ScreenShareClip(ClipSpec(seed=300 + n, duration_s=seconds))
            clips.append([(f.ts, f.is_speaking, f.jpeg) for f in clip.frames()])
        return cls(clips, seconds)


async def screen_share(client: Client, frames: Frames, n: int, until: float, lap: list[int]) -> None:
    """One stream at its clip's frame rate (30 fps while speaking); a late frame is sent at once."""
    sid = f"tenant_{TENANT}_share-{n}-{lap[0]}.screen"  # a fresh stream per phase
    start = time.monotonic()
    for k in range(10**9):
        ts, speaking, jpeg = frames.clips[n][k % len(frames.clips[n])]
        ts += (k // len(frames.clips[n])) * frames.span_s
        if time.monotonic() >= until:
            return
        delay = start + ts - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await client.frame(sid, ts, speaking, jpeg)


async def hops(client: Client, app: str, n: int) -> dict[str, Any]:
    """One request at a time: each path over HTTP and through its handle from this process, and the
    replicas' own timings (the search's stages, the extractive attempt)."""
    from ray import serve

    from serve_app.routing.providers.base import Message
    from serve_app.routing.service import ChatRequest

    kb = serve.get_deployment_handle("KnowledgeBase", app)
    router = serve.get_deployment_handle("Router", app)
    times: dict[str, list[float]] = defaultdict(list)
    stages: dict[str, list[float]] = defaultdict(list)

    async def timed(name: str, call: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        out = await call
        times[name].append((time.perf_counter() - started) * 1e3)
        return out

    for k in range(n):
        q = QUESTIONS[k % len(QUESTIONS)]
        await timed("http healthz", client.http.get("/healthz"))
        body = {"tenant_id": TENANT, "query": q, "top_k": 3}
        await timed("http search", client.http.post("/v1/knowledge/search", json=body))
        found = await timed("handle search", kb.search.remote(tenant_id=TENANT, query=q, top_k=3))
        for stage, ms in found["timings_ms"].items():
            stages[f"search {stage}"].append(ms)
        chat = {"model": "extractive", "messages": [{"role": "user", "content": q}], "max_tokens": 48}
        await timed("http chat_extractive", client.http.post("/v1/chat/completions", json=chat))
        request = ChatRequest(TENANT, (Message("user", q),), tier="extractive", max_tokens=48)
        reply = await timed("handle chat_extractive", router.chat.remote(request))
        for a in reply["routing"]["attempts"]:
            stages[f"chat attempt {a['tier']}"].append(a["latency_ms"])
    med = {name: round(percentile(v, 0.5), 2) for name, v in {**times, **stages}.items()}
    med["proxy+ingress (http - handle search)"] = round(med["http search"] - med["handle search"], 2)
    med["proxy+ingress (http - handle chat)"] = round(
        med["http chat_extractive"] - med["handle chat_extractive"], 2
    )
    return {"requests_each": n, "p50_ms": med}


@dataclass
class Run:
    client: Client
    cores: int
    pgdata: Path
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)

    async def phase(self, name: str, seconds: float, work: Callable[[float], list[Awaitable[None]]]):
        rec = Recorder()
        self.client.use(rec)
        meter = CpuMeter(self.pgdata).start()
        await asyncio.gather(*work(time.monotonic() + seconds))
        used, wall = meter.stop()
        self.cpu[name] = used
        rows = rec.rows(wall, self.cores)
        print(f"-- {name}: {wall:.1f} s", flush=True)
        _table(rows, used)
        return rows, used


def _table(rows: dict[str, dict[str, Any]], used: dict[str, float]) -> None:
    print(f"  {'path':16s} {'requests':>8s} {'per s':>7s} {'/core':>6s} {'p50 ms':>8s} {'p95 ms':>8s} "
          f"{'p99 ms':>8s}  other")  # fmt: skip
    for path, r in rows.items():
        other = {**r["statuses"], **r["errors"]}
        print(
            f"  {path:16s} {r['requests']:8d} {r['per_s']:7.1f} {r['per_core']:6.1f} {r['p50_ms'] or 0:8.1f}"
            f" {r['p95_ms'] or 0:8.1f} {r['p99_ms'] or 0:8.1f}  {other or '-'}"
        )
    print("  cpu cores: " + ", ".join(f"{p} {c:.2f}" for p, c in sorted(used.items(), key=lambda x: -x[1])))


def _graph_cpu(used: dict[str, float]) -> float:
    return sum(c for part, c in used.items() if part != "client")


async def drive(base_url: str, key: str, args: argparse.Namespace, pgdata: Path, app: str) -> dict:
    frames = Frames.make(args.streams, args.clip_s)
    cores = os.cpu_count() or 1
    limits = httpx.Limits(max_connections=args.clients + args.users + args.streams + 8)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=120, headers=headers, limits=limits) as http:
        client = Client(http, Recorder())
        await warm(client)
        run = Run(client, cores, pgdata)
        out: dict[str, Any] = {"hops": await hops(client, app, args.hop_requests)}
        print("-- hops (p50 ms, one request at a time):", json.dumps(out["hops"]["p50_ms"]), flush=True)
        closed: dict[str, Any] = {}
        for path in ("healthz", "search", "chat_extractive", "chat_ladder"):
            call = getattr(client, path)
            rows, used = await run.phase(
                f"closed {path}", args.phase_s, lambda u, c=call: [closed_loop(c, args.clients, u)]
            )
            closed.update(rows)
            served = sum(r["requests"] for r in rows.values())
            run.cpu_ms[path] = round(_graph_cpu(used) * args.phase_s * 1e3 / max(served, 1), 1)
        out["closed"] = closed
        users = lambda u, esc: [user(client, n, u, esc) for n in range(args.users)]  # noqa: E731
        shares = lambda u, lap: [screen_share(client, frames, n, u, [lap]) for n in range(args.streams)]  # noqa: E731
        alone, _ = await run.phase("alone", args.alone_s, lambda u: users(u, False))
        frames_alone, _ = await run.phase("frames alone", args.frames_s, lambda u: shares(u, 1))
        alone.update(frames_alone)
        out["alone"] = alone
        out["mixed"], _ = await run.phase("mixed", args.mixed_s, lambda u: users(u, True) + shares(u, 2))
        out["cpu"], out["cpu_ms_per_request"], out["cores"] = run.cpu, run.cpu_ms, cores
    return out


def ratios(alone: dict[str, Any], mixed: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    out = {}
    for path in ("search", *CHAT_PATHS, "frames"):
        a, m = alone.get(path), mixed.get(path)
        if not a or not m:
            continue
        out[path] = {
            q: round(m[q] / a[q], 2) if a[q] and m[q] else None for q in ("p50_ms", "p95_ms", "per_s")
        }
    return out


def targets(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets (these 2 cores, report only) against what this run measured."""

    def check(value: float | None, limit: float, at_least: bool = False) -> dict[str, Any]:
        met = value is not None and (value >= limit if at_least else value <= limit)
        return {"value": value, "target": limit, "met": met}

    mixed, closed = out["mixed"], out["closed"]
    extractive = closed.get("chat_extractive", {})
    return {
        "mixed chat_extractive p95_ms": check(mixed.get("chat_extractive", {}).get("p95_ms"), 500),
        "mixed search p95_ms": check(mixed.get("search", {}).get("p95_ms"), 300),
        "closed chat_extractive per_s": check(extractive.get("per_s"), 70, at_least=True),
        "closed chat_extractive p95_ms": check(extractive.get("p95_ms"), 250),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients per path")
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--phase-s", type=float, default=10.0, help="each closed-loop path")
    parser.add_argument("--alone-s", type=float, default=25.0)
    parser.add_argument("--frames-s", type=float, default=12.0)
    parser.add_argument("--mixed-s", type=float, default=30.0)
    parser.add_argument("--clip-s", type=float, default=10.0, help="frames made per stream, replayed")
    parser.add_argument("--hop-requests", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="short phases (a smoke run)")
    parser.add_argument("--state-dir", type=Path, help="default: a temporary folder")
    args = parser.parse_args()
    if args.quick:
        args.phase_s, args.alone_s, args.frames_s, args.mixed_s = 4.0, 8.0, 5.0, 12.0
        args.clip_s, args.hop_requests = 4.0, 6
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="sg-interactive-"))
    unlimited = {"requests_per_min": 1e7, "tokens_per_min": 1e9, "frames_per_min": 1e8}
    ports = {"http": {"port": free_port()}, "serve": {"metrics_port": free_port()}}
    settings = load_settings(None, state_dir=state, auth=unlimited, **ports)
    started = time.monotonic()
    with local_graph(settings) as graph:
        asyncio.run(ingest_help_center(settings, TENANT))
        key = asyncio.run(demo_key(settings, TENANT))
        out = asyncio.run(drive(graph.base_url, key, args, state / "pgdata", graph.app_name))
        out["priorities"] = priorities(state / "pgdata")
        out["startup_s"] = round(graph.startup_s, 1)
    out["ratio"] = ratios(out["alone"], out["mixed"])
    out["targets"] = targets(out)
    out["settings"] = {
        "throughput_optimized": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0") == "1",
        "llm": settings.serve.self_hosted_llm.model_dump(),
        "clients": args.clients,
        "users": args.users,
        "streams": args.streams,
    }
    out["wall_s"] = round(time.monotonic() - started, 1)
    print("ratio mixed/alone:", json.dumps(out["ratio"]))
    print("targets:", json.dumps(out["targets"]))
    print(json.dumps({"bench": "interactive", **out}))
    from serve_app.db.database import stop_embedded

    if args.state_dir is None:
        stop_embedded(state / "pgdata")


if __name__ == "__main__":
    main()
