"""Load on the local graph over loopback: a realistic mix, bounded in time and count.

    python benchmarks/load.py [--seconds 30] [--streams 4] [--users 6] [--max-requests 20000]

Starts the graph (local Ray, embedded Postgres in a temporary state folder, API keys on), ingests the
sample help center for one tenant and mints its key, then runs concurrently until `--seconds` or
`--max-requests`:
- `--streams` screen shares, each uploading its generated JPEG frames at 30 fps (real time);
- `--users` support users, each looping: a knowledge search, a routed help-center question (answered by
  the extractive tier), and every fifth turn a question the help center cannot answer (escalates to
  SmolLM2 on the CPU);
Prints requests, throughput, p50/p95/p99 latency and errors per endpoint; the last line is JSON.
Overload shows as 503 (Serve's max_queued_requests) or 429 (rate limits), never as timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serve_app.runtime import local_graph
from serve_app.samples import HELP_CENTER, HELP_CENTER_QUESTIONS, ingest_help_center
from serve_app.settings import load_settings
from serve_app.stats import percentile
from supportgraph_tools.demo import demo_key
from supportgraph_tools.frames.synthetic import ClipSpec, ScreenShareClip

TENANT = "load"
QUESTIONS = HELP_CENTER_QUESTIONS
OFF_TOPIC = "Hi! Can you write one friendly sentence about notebooks?"


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    errors: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    sent: int = 0

    async def call(self, name: str, request) -> httpx.Response | None:
        self.sent += 1
        started = time.perf_counter()
        try:
            response = await request
        except httpx.HTTPError as exc:
            self.errors[name][type(exc).__name__] += 1
            return None
        self.latencies[name].append((time.perf_counter() - started) * 1e3)
        self.statuses[name][response.status_code] += 1
        return response


async def stream(client: httpx.AsyncClient, stats: Stats, n: int, until: float, cap: int) -> None:
    clip = ScreenShareClip(ClipSpec(seed=100 + n, duration_s=600))
    sid = f"tenant_{TENANT}_load-{n}.screen"
    start = time.monotonic()
    for frame in clip.frames():
        if time.monotonic() >= until or stats.sent >= cap:
            return
        delay = start + frame.ts - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await stats.call(
            "POST frames",
            client.post(
                f"/v1/streams/{sid}/frames",
                params={"ts": frame.ts, "speaking": frame.is_speaking},
                content=frame.jpeg,
                headers={"content-type": "image/jpeg"},
            ),
        )


async def user(client: httpx.AsyncClient, stats: Stats, n: int, until: float, cap: int) -> None:
    turn = 0
    while time.monotonic() < until and stats.sent < cap:
        question = QUESTIONS[(n + turn) % len(QUESTIONS)]
        await stats.call(
            "POST knowledge/search",
            client.post("/v1/knowledge/search", json={"tenant_id": TENANT, "query": question, "top_k": 3}),
        )
        asked = OFF_TOPIC if turn % 5 == 4 else question
        body = {"model": "auto", "messages": [{"role": "user", "content": asked}], "max_tokens": 48}
        name = "POST chat (escalates)" if asked == OFF_TOPIC else "POST chat (help center)"
        await stats.call(name, client.post("/v1/chat/completions", json=body))
        turn += 1
        await asyncio.sleep(0.2)  # a person reads the answer


async def drive(base_url: str, key: str, args: argparse.Namespace) -> tuple[Stats, float]:
    stats = Stats()
    limits = httpx.Limits(max_connections=args.streams + args.users + 4)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=headers, limits=limits) as client:
        started = time.monotonic()
        until = started + args.seconds
        await asyncio.gather(
            *(stream(client, stats, n, until, args.max_requests) for n in range(args.streams)),
            *(user(client, stats, n, until, args.max_requests) for n in range(args.users)),
        )
        return stats, time.monotonic() - started


def report(stats: Stats, wall_s: float) -> dict:
    rows = {}
    for name in sorted(set(stats.latencies) | set(stats.errors)):
        lat = stats.latencies.get(name, [])
        ok = stats.statuses[name].get(200, 0)
        rows[name] = {
            "requests": len(lat) + sum(stats.errors[name].values()),
            "per_s": round(len(lat) / wall_s, 1),
            "p50_ms": round(percentile(lat, 0.5), 1) if lat else None,
            "p95_ms": round(percentile(lat, 0.95), 1) if lat else None,
            "p99_ms": round(percentile(lat, 0.99), 1) if lat else None,
            "ok": ok,
            "statuses": {str(k): v for k, v in sorted(stats.statuses[name].items()) if k != 200},
            "transport_errors": dict(stats.errors[name]),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--state-dir", type=Path, help="default: a temporary folder")
    args = parser.parse_args()
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="sg-load-"))
    settings = load_settings(None, state_dir=state)
    with local_graph(settings) as graph:
        asyncio.run(ingest_help_center(settings, TENANT))
        key = asyncio.run(demo_key(settings, TENANT))
        stats, wall = asyncio.run(drive(graph.base_url, key, args))
    rows = report(stats, wall)
    print(
        f"{'endpoint':26s} {'requests':>8s} {'per s':>7s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}  other"
    )
    for name, r in rows.items():
        other = {**r["statuses"], **r["transport_errors"]}
        print(
            f"{name:26s} {r['requests']:8d} {r['per_s']:7.1f} {r['p50_ms'] or 0:8.1f} {r['p95_ms'] or 0:8.1f}"
            f" {r['p99_ms'] or 0:8.1f}  {other or '-'}"
        )
    print(json.dumps({"bench": "load", "seconds": round(wall, 1), "sample": str(HELP_CENTER.name), **rows}))
    from serve_app.db.database import stop_embedded

    if args.state_dir is None:
        stop_embedded(state / "pgdata")


if __name__ == "__main__":
    main()
