"""Interactive paths alone and under the mixed load, in one run, with the CPU each deployment used.

    python benchmarks/interactive.py --modes plain,haproxy   # ~5 min on 2 idle cores: docs/latency.md
    python benchmarks/interactive.py                         # ~2.5 min: the graph's default mode only
    python benchmarks/interactive.py --quick                 # shorter phases (a smoke run)

Per mode (`--modes`: plain, optimized, haproxy; each a fresh local Ray, one after the other) it starts
the graph as `supportgraph serve` does (local Ray, embedded Postgres in a temporary folder, API
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
   `benchmarks/load.py`'s mix), all at once;
5. `burst`: `--burst` escalating questions at once: the LLM replica takes 2 and queues 4, the rest are
   refused (429) and retried by the router; a turn still refused is answered degraded (never a 5xx).
Paths: `chat_ladder` is a ladder chat answered without an LLM attempt, `chat_escalated` one with one
(both the help-center questions and the unanswerable ones can escalate). Each phase reports requests,
throughput, throughput per core (requests/s over the machine's cores), p50/p95/p99, non-200 statuses
and the CPU cores each part of the graph used (`benchmarks/procs.py`); a phase waits `GRACE_S` past
its end for requests in flight, then cuts them. The last line is JSON: `bench`, `cores`, `modes`,
`runs` (mode -> `settings`, `hops`, `closed`, `alone`, `mixed` (each path: `requests`, `per_s`,
`per_core`, `p50_ms`, `p95_ms`, `p99_ms`, `statuses`, `errors`), `cpu` (phase -> part -> cores),
`cpu_ms_per_request` (closed phases: path -> `graph` and each part's CPU ms per request),
`unfinished` (phase -> clients cut), `burst` (`replies` by outcome, `failures` by message, `seconds`),
`ratio` (path -> mixed / alone p50, p95 and per_s), `targets`
(the issue's, with the measured value and whether it is met), `priorities` (part -> [lowest, highest]
nice value of its threads), `startup_s`, `wall_s`).
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
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from interactive_load import (
    CHAT_PATHS,
    GRACE_S,
    QUESTIONS,
    TENANT,
    Client,
    Frames,
    Recorder,
    burst,
    closed_loop,
    screen_share,
    user,
    warm,
)
from procs import CpuMeter, priorities

from serve_app.db.database import stop_embedded
from serve_app.runtime import local_graph
from serve_app.samples import ingest_help_center
from serve_app.settings import load_settings
from serve_app.stats import percentile
from supportgraph_tools.demo import demo_key


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
    cpu_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    unfinished: dict[str, int] = field(default_factory=dict)

    async def phase(self, name: str, seconds: float, work: Callable[[float], list[Awaitable[None]]]):
        rec = Recorder()
        self.client.use(rec)
        meter = CpuMeter(self.pgdata).start()
        tasks = [asyncio.ensure_future(w) for w in work(time.monotonic() + seconds)]
        _, late = await asyncio.wait(tasks, timeout=seconds + GRACE_S)
        for task in late:  # an escalation still queued: its client gives up (counted, not timed)
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        used, wall = meter.stop()
        self.cpu[name] = used
        self.unfinished[name] = len(late)
        rows = rec.rows(wall, self.cores)
        print(f"-- {name}: {wall:.1f} s, {len(late)} clients cut after {GRACE_S:g} s of grace", flush=True)
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


def _cpu_ms(used: dict[str, float], per_s: float) -> dict[str, float]:
    """CPU milliseconds per request, per part of the graph and in all (`graph`, the client excluded)."""
    per = {part: round(cores * 1e3 / max(per_s, 1e-9), 2) for part, cores in used.items() if cores >= 0.005}
    graph = sum(cores for part, cores in used.items() if part != "client")
    return {"graph": round(graph * 1e3 / max(per_s, 1e-9), 1), **per}


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
            run.cpu_ms[path] = _cpu_ms(used, sum(r["per_s"] for r in rows.values()))
        out["closed"] = closed
        users = lambda u, esc: [user(client, n, u, esc) for n in range(args.users)]  # noqa: E731
        shares = lambda u, lap: [screen_share(client, frames, n, u, [lap]) for n in range(args.streams)]  # noqa: E731
        alone, _ = await run.phase("alone", args.alone_s, lambda u: users(u, False))
        frames_alone, _ = await run.phase("frames alone", args.frames_s, lambda u: shares(u, 1))
        alone.update(frames_alone)
        out["alone"] = alone
        out["mixed"], _ = await run.phase("mixed", args.mixed_s, lambda u: users(u, True) + shares(u, 2))
        client.use(Recorder())
        started = time.monotonic()
        try:
            out["burst"] = await asyncio.wait_for(burst(client, args.burst), args.burst_timeout_s)
        except TimeoutError:
            out["burst"] = {"replies": {}, "failures": {}, "timed_out": True}
        out["burst"]["seconds"] = round(time.monotonic() - started, 1)
        print(f"-- burst of {args.burst} escalations: {json.dumps(out['burst'])}", flush=True)
        out["cpu"], out["cpu_ms_per_request"], out["cores"] = run.cpu, run.cpu_ms, cores
        out["unfinished"] = run.unfinished
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


MODES = {
    "plain": {"throughput_optimized": False, "haproxy": False},  # Ray Serve's default: the graph's
    "optimized": {"throughput_optimized": True, "haproxy": False},
    "haproxy": {"throughput_optimized": True, "haproxy": True},
}


def run_mode(args: argparse.Namespace, mode: str, state: Path) -> dict[str, Any]:
    """One graph in `mode` (a fresh local Ray: Serve's mode is fixed when it starts), every phase."""
    unlimited = {"requests_per_min": 1e7, "tokens_per_min": 1e9, "frames_per_min": 1e8}
    serve = {"metrics_port": free_port(), **MODES[mode]}
    settings = load_settings(None, state_dir=state, auth=unlimited, http={"port": free_port()}, serve=serve)
    print(f"== mode {mode}: {serve}", flush=True)
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
        "throughput_optimized": settings.serve.throughput_optimized,
        "haproxy": settings.serve.haproxy,
        "llm": settings.serve.self_hosted_llm.model_dump(),
        "background_niceness": settings.serve.background_niceness,
        "clients": args.clients,
        "users": args.users,
        "streams": args.streams,
    }
    out["wall_s"] = round(time.monotonic() - started, 1)
    print("ratio mixed/alone:", json.dumps(out["ratio"]))
    print("targets:", json.dumps(out["targets"]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients per path")
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--phase-s", type=float, default=6.0, help="each closed-loop path")
    parser.add_argument("--alone-s", type=float, default=15.0)
    parser.add_argument("--frames-s", type=float, default=8.0)
    parser.add_argument("--mixed-s", type=float, default=20.0)
    parser.add_argument("--clip-s", type=float, default=10.0, help="frames made per stream, replayed")
    parser.add_argument("--hop-requests", type=int, default=15)
    parser.add_argument("--burst", type=int, default=10, help="escalations sent at once, last")
    parser.add_argument("--burst-timeout-s", type=float, default=90.0)
    parser.add_argument("--quick", action="store_true", help="short phases (a smoke run)")
    parser.add_argument(
        "--modes",
        default="plain",
        help="comma-separated, run one after the other: plain (Ray Serve's default mode, the graph's "
        "default), optimized (serve.throughput_optimized: the replicas run "
        "RAY_SERVE_THROUGHPUT_OPTIMIZED=1), haproxy (optimized, and serve.haproxy: HAProxy in front of "
        "the ingress replicas instead of Serve's Python proxy)",
    )
    parser.add_argument("--state-dir", type=Path, help="default: a temporary folder")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        parser.error(f"--modes: unknown {sorted(unknown)}; known: {', '.join(MODES)}")
    if args.quick:
        args.phase_s, args.alone_s, args.frames_s, args.mixed_s = 4.0, 8.0, 5.0, 12.0
        args.clip_s, args.hop_requests, args.burst = 4.0, 6, 8
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="sg-interactive-"))
    runs = {}
    try:
        for mode in modes:
            runs[mode] = run_mode(args, mode, state)
    finally:
        if args.state_dir is None:
            stop_embedded(state / "pgdata")
    print(json.dumps({"bench": "interactive", "cores": os.cpu_count(), "modes": modes, "runs": runs}))


if __name__ == "__main__":
    main()
