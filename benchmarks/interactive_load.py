"""The interactive benchmark's clients (benchmarks/interactive.py): the paths a support user and a screen
share take over HTTP, each call timed and recorded under the path it took."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from serve_app.samples import HELP_CENTER_QUESTIONS
from serve_app.stats import percentile
from supportgraph_tools.frames.synthetic import ClipSpec, ScreenShareClip

TENANT = "interactive"
QUESTIONS = HELP_CENTER_QUESTIONS
UNANSWERABLE = ("Does Lumen integrate with Salesforce?", "My notes don't show up on my phone")
READ_S = 0.2  # a person reads the answer
GRACE_S = 10.0  # a phase waits this long past its end for requests in flight, then cuts them
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


async def burst(client: Client, n: int) -> dict[str, Any]:
    """`n` escalating questions at once: what the LLM's admission control does with more than it takes
    (an escalation refused past the queue is retried by the router, then answered degraded; no 5xx).
    Returns replies by outcome and the attempts' failure messages (first 60 characters) by count."""
    asked = (client.escalating[k % len(client.escalating)] for k in range(n))
    replies = await asyncio.gather(*(client.chat("burst", q, "auto") for q in asked))
    outcome: Counter = Counter()
    failures: Counter = Counter()
    for reply in replies:
        if reply is None or reply.status_code != 200:
            outcome[f"status {reply.status_code if reply is not None else 'transport error'}"] += 1
            continue
        routing = reply.json().get("supportgraph", {})
        outcome["degraded" if routing.get("degraded") else "answered"] += 1
        failures.update(f["error"][:60] for f in routing.get("failures", []) if f.get("error"))
    return {"replies": dict(outcome), "failures": dict(failures)}
