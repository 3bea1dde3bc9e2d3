"""`supportgraph demo`: replay a generated support session through the running graph and report.

1. Screen share: each simulated user streams a generated clip (JPEG over HTTP) to the graph, which
   throttles and deduplicates frames; the report compares images sent to a vision model against sending
   every frame (30 fps) or a naive 1 fps sample.
2. Knowledge base: the sample help center is ingested for the demo tenant and the users' questions are
   answered with cited passages through the graph's hybrid retrieval.
3. Router: the same questions, a greeting, a question the help center cannot answer and a request for
   chatter go through the chat path (`/v1/chat/completions`: intent step, escalating router with offline
   tiers grounded extractive -> SmolLM2, verifier), the first with the last deduplicated frame of a stream
   attached; the report lists each reply's attempts (or its intent), which ones were declined rather than
   guessed, and the tenant's cost report (`/v1/costs`).
4. Screen reading: an error toast on a screen share is read, then a vague question is answered from it.
5. Human handoff: a customer asks for a person; the handoff is queued, claimed by a human agent (a
   LiveKit token for the customer's room) and resolved, its human time in the costs
   (`supportgraph_tools.handoff.demo`).

A part that fails (the graph does not start, an HTTP call answers with an error, a question gets no
answer) is reported with its reason and the other parts still run; `DemoReport.ok` (the CLI's exit
status) says whether every part worked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from rich.console import Console
from rich.table import Table

from serve_app.runtime import local_graph
from serve_app.samples import ingest_help_center
from serve_app.settings import Settings
from serve_app.stats import percentile
from supportgraph_tools.frames.synthetic import ClipSpec, ScreenShareClip
from supportgraph_tools.handoff.demo import HandoffDemo, demo_livekit_env, handoff_demo
from supportgraph_tools.screen.demo import ScreenDemo, screen_demo

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class StreamResult:
    stream_id: str
    frames: int = 0
    speaking_frames: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    replica: str = ""
    last_sent: bytes | None = None  # the last frame the dedup said to send on (JPEG)


@dataclass
class FrameReport:
    spec: ClipSpec
    streams: list[StreamResult]
    wall_s: float
    mean_batch_size: float
    image_usd: float

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.streams)

    @property
    def sent(self) -> int:
        return sum(s.verdicts["processed"] for s in self.streams)

    @property
    def one_fps(self) -> int:
        return len(self.streams) * int(self.spec.duration_s)

    @property
    def dedup_rate(self) -> float:
        dup = sum(s.verdicts["duplicate"] for s in self.streams)
        return dup / (dup + self.sent) if dup + self.sent else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "streams": len(self.streams),
            "frames": self.frames,
            "throttled": sum(s.verdicts["throttled"] for s in self.streams),
            "duplicate": sum(s.verdicts["duplicate"] for s in self.streams),
            "processed": self.sent,
            "dedup_rate": round(self.dedup_rate, 4),
            "images_30fps": self.frames,
            "images_1fps": self.one_fps,
            "cost_30fps_usd": round(self.frames * self.image_usd, 4),
            "cost_1fps_usd": round(self.one_fps * self.image_usd, 4),
            "cost_usd": round(self.sent * self.image_usd, 4),
            "http_frames_per_s": round(self.frames / self.wall_s, 1) if self.wall_s else 0.0,
            "mean_batch_size": round(self.mean_batch_size, 2),
        }


DEMO_TENANT = "demo"
DEMO_QUESTIONS = (
    "I forgot my password, how do I reset it?",
    "Can I get my money back for the yearly plan?",
    "My notes don't show up on my phone",
    "How do I share one note with someone outside the team?",
    "How long are deleted notes kept?",
)


@dataclass
class Answered:
    question: str
    citation: str
    snippet: str
    latency_ms: float


@dataclass
class KnowledgeReport:
    documents: int
    chunks: int
    ingest_s: float
    answers: list[Answered]

    def summary(self) -> dict[str, Any]:
        return {
            "kb_documents": self.documents,
            "kb_chunks": self.chunks,
            "kb_ingest_s": round(self.ingest_s, 2),
            "kb_questions": len(self.answers),
            "kb_p50_ms": round(percentile([a.latency_ms for a in self.answers], 0.5), 1),
        }


ROUTER_QUESTIONS = (
    *DEMO_QUESTIONS,
    "Hi there! Who am I talking to?",
    "Does Lumen integrate with Salesforce?",  # the help center does not say: declined, not guessed
    "Write one friendly sentence to welcome a new user.",
)


@dataclass
class Routed:
    question: str
    answer: str
    tier: str
    attempts: list[dict[str, Any]]
    confidence: float
    latency_ms: float
    images: int
    degraded: bool = False
    error: str | None = None  # the question got no answer: why
    abstained: bool = False  # an honest "I don't know" (or a handoff) instead of an answer
    reason: str | None = None
    intent: str | None = None


@dataclass
class RouterReport:
    answers: list[Routed]
    costs: dict[str, Any]

    @property
    def failed(self) -> list[Routed]:
        return [a for a in self.answers if a.error is not None]

    def summary(self) -> dict[str, Any]:
        tiers = Counter(a.tier for a in self.answers if a.error is None)
        return {
            "router_questions": len(self.answers),
            "router_failed": len(self.failed),
            "router_degraded": sum(a.degraded for a in self.answers),
            "router_answered_by": dict(tiers),
            "router_declined": {a.question: a.reason for a in self.answers if a.abstained},
            "router_intents": {
                a.question: a.intent for a in self.answers if a.intent not in (None, "question")
            },
            "router_attempts": sum(len(a.attempts) for a in self.answers),
            "router_p50_ms": round(percentile([a.latency_ms for a in self.answers], 0.5), 1),
            "router_cost_usd": self.costs["llm"]["cost_usd"],
            "router_all_top_tier_usd": self.costs["llm"]["all_top_tier_usd"],
        }


@dataclass(frozen=True)
class PartFailure:
    part: str
    reason: str


def failure_reason(exc: BaseException) -> str:
    """What went wrong, in one line: an HTTP error's status and `detail`, else the exception."""
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        try:
            detail = response.json().get("detail", response.text)
        except (ValueError, AttributeError):
            detail = response.text
        return f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass
class DemoReport:
    startup_s: float
    frames: FrameReport | None = None
    knowledge: KnowledgeReport | None = None
    router: RouterReport | None = None
    screen: ScreenDemo | None = None
    handoff: HandoffDemo | None = None
    failures: list[PartFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def run_part(self, part: str, work: Callable[[], T]) -> T | None:
        """`work()`, or None with the failure recorded (the demo goes on with the next part)."""
        try:
            return work()
        except Exception as exc:
            log.debug("demo part %s failed", part, exc_info=True)
            self.failures.append(PartFailure(part, failure_reason(exc)))
            return None

    def to_json(self) -> str:
        head: dict[str, Any] = {"demo": "supportgraph", "ok": self.ok, "startup_s": round(self.startup_s, 2)}
        for part in (self.frames, self.knowledge, self.router, self.screen):
            head |= part.summary() if part else {}
        head |= self.handoff.summary_dict() if self.handoff else {}
        head["failed"] = {f.part: f.reason for f in self.failures}
        return json.dumps(head)

    def render(self, console: Console) -> None:
        if self.frames:
            self._render_frames(console, self.frames, self.startup_s)
        if self.knowledge:
            self._render_knowledge(console, self.knowledge)
        if self.router:
            self._render_router(console, self.router)
        if self.screen:
            self.screen.render(console)
        if self.handoff:
            self.handoff.render(console)
        if self.failures:
            console.rule("[bold red]parts that failed")
            failed = Table()
            failed.add_column("part")
            failed.add_column("reason")
            for f in self.failures:
                failed.add_row(f.part, f.reason)
            console.print(failed)
            console.print(f"[red]demo: {len(self.failures)} part(s) failed; the others ran[/red]")
        else:
            console.print("[green]demo: every part worked[/green]")

    @staticmethod
    def _render_frames(console: Console, f: FrameReport, startup_s: float) -> None:
        spec = f.spec
        console.rule("[bold]supportgraph demo: screen-share frame dedup")
        console.print(
            f"{len(f.streams)} streams x {spec.duration_s:g} s at {spec.fps:g} fps, "
            f"{spec.width}x{spec.height} JPEG; graph up in {startup_s:.1f} s; "
            f"{f.frames} frames over HTTP in {f.wall_s:.1f} s "
            f"({f.frames / f.wall_s:.0f} frames/s), mean dedup batch {f.mean_batch_size:.2f}"
        )
        table = Table(title="Per stream")
        for col in (
            "stream",
            "replica",
            "frames",
            "speaking",
            "throttled",
            "duplicate",
            "processed",
            "dedup rate",
        ):
            table.add_column(col, justify="left" if col in ("stream", "replica") else "right")
        for s in f.streams:
            v = s.verdicts
            hashed = v["duplicate"] + v["processed"]
            rate = v["duplicate"] / hashed if hashed else 0.0
            table.add_row(
                s.stream_id,
                s.replica,
                str(s.frames),
                str(s.speaking_frames),
                str(v["throttled"]),
                str(v["duplicate"]),
                str(v["processed"]),
                f"{rate:.1%}",
            )
        console.print(table)
        cost = Table(title=f"Images to a vision model at ${f.image_usd:g}/image")
        for col in ("policy", "images", "cost", "vs this graph"):
            cost.add_column(col, justify="left" if col == "policy" else "right")
        rows = [
            ("every frame (30 fps)", f.frames),
            ("naive 1 fps sample", f.one_fps),
            ("supportgraph: throttle + pHash + region", f.sent),
        ]
        for name, n in rows:
            ratio = f"{n / f.sent:.0f}x" if f.sent else "-"
            cost.add_row(name, str(n), f"${n * f.image_usd:.3f}", ratio)
        console.print(cost)

    @staticmethod
    def _render_knowledge(console: Console, k: KnowledgeReport) -> None:
        console.rule("[bold]knowledge base: cited passages (hybrid retrieval)")
        console.print(
            f"sample help center: {k.documents} documents, {k.chunks} chunks, ingested in {k.ingest_s:.1f} s"
        )
        answers = Table()
        for col in ("question", "top passage", "ms"):
            answers.add_column(col, justify="right" if col == "ms" else "left")
        for a in k.answers:
            answers.add_row(a.question, f"{a.citation}\n{a.snippet}", f"{a.latency_ms:.0f}")
        console.print(answers)

    @staticmethod
    def _render_router(console: Console, r: RouterReport) -> None:
        console.rule("[bold]escalating router: answers, attempts, costs (offline tiers)")
        table = Table()
        for col in ("question", "answer", "attempts", "conf.", "ms"):
            table.add_column(col, justify="right" if col in ("conf.", "ms") else "left")
        for a in r.answers:
            trail = " -> ".join(f"{t['tier']} ({t['outcome']})" for t in a.attempts)
            trail += " [degraded]" if a.degraded else ""
            trail += f" [declined: {a.reason}]" if a.abstained else ""
            trail = trail or f"intent: {a.intent}"
            frame = f"\n+{a.images} frame" if a.images else ""
            snippet = a.answer if len(a.answer) <= 160 else a.answer[:157] + "..."
            if a.error is not None:
                snippet, trail = f"[red]no answer: {a.error}[/red]", "-"
            table.add_row(a.question + frame, snippet, trail, f"{a.confidence:.2f}", f"{a.latency_ms:.0f}")
        console.print(table)
        tiers = Table(title=f"cost report of tenant {r.costs['tenant_id']} (GET /v1/costs)")
        for col in ("tier", "model", "attempts", "accepted", "USD"):
            tiers.add_column(col, justify="left" if col in ("tier", "model") else "right")
        for row in r.costs["llm_by_tier"]:
            tiers.add_row(
                row["tier"],
                row["model"],
                str(row["attempts"]),
                str(row["accepted"]),
                f"{row['cost_usd']:.4f}",
            )
        console.print(tiers)
        llm = r.costs["llm"]
        console.print(
            f"{llm['requests']} routed requests: ${llm['cost_usd']:.4f} (self-hosted tiers bill no tokens) vs"
            f" ${llm['all_top_tier_usd']:.4f} with every request on the ladder's top tier"
        )


async def _replay_stream(client: httpx.AsyncClient, stream_id: str, clip: ScreenShareClip) -> StreamResult:
    result = StreamResult(stream_id)
    frames = clip.frames()
    while (frame := await asyncio.to_thread(next, frames, None)) is not None:
        response = await client.post(
            f"/v1/streams/{stream_id}/frames",
            params={"ts": frame.ts, "speaking": frame.is_speaking},
            content=frame.jpeg,
            headers={"content-type": "image/jpeg"},
        )
        response.raise_for_status()
        result.frames += 1
        result.speaking_frames += frame.is_speaking
        verdict = response.json()["verdict"]
        result.verdicts[verdict] += 1
        if verdict == "processed":
            result.last_sent = frame.jpeg
    return result


async def replay_frames(
    base_url: str, specs: list[ClipSpec], image_usd: float, tenant: str = "demo", key: str | None = None
) -> FrameReport:
    """Send each clip as one stream (streams in parallel, frames in order), then read and close them."""
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0, headers=_auth(key)) as client:
        ids = [f"tenant_{tenant}_session-{i + 1}.screen" for i in range(len(specs))]
        results = await asyncio.gather(
            *(
                _replay_stream(client, sid, ScreenShareClip(spec))
                for sid, spec in zip(ids, specs, strict=True)
            )
        )
        wall = time.perf_counter() - started
        batch_sizes = []
        for result in results:
            stats = (await client.get(f"/v1/streams/{result.stream_id}/stats")).raise_for_status().json()
            result.replica = stats["replica"]
            batch_sizes.append(stats["mean_batch_size"])
            await client.delete(f"/v1/streams/{result.stream_id}")
    return FrameReport(specs[0], list(results), wall, max(batch_sizes, default=0.0), image_usd)


def _auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def demo_key(settings: Settings, tenant: str = DEMO_TENANT, role: str = "admin") -> str:
    """An API key for the demo tenant (the graph requires keys unless auth.mode is off)."""
    from serve_app.auth import create_key
    from serve_app.db.database import Database

    async with Database.of(settings) as db:
        return await create_key(db, tenant, f"demo {role}", role)


async def ask(
    base_url: str, questions: tuple[str, ...], tenant: str = DEMO_TENANT, key: str | None = None
) -> list[Answered]:
    answers = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0, headers=_auth(key)) as client:
        for question in questions:
            started = time.perf_counter()
            body = {"tenant_id": tenant, "query": question, "top_k": 3}
            result = (await client.post("/v1/knowledge/search", json=body)).raise_for_status().json()
            top = result["passages"][0] if result["passages"] else None
            answers.append(
                Answered(
                    question,
                    top["citation"] if top else "(no passage)",
                    (top["content"][:140] + "...") if top else "",
                    (time.perf_counter() - started) * 1e3,
                )
            )
    return answers


async def ask_router(
    base_url: str,
    questions: tuple[str, ...],
    frame: bytes | None,
    tenant: str = DEMO_TENANT,
    key: str | None = None,
) -> RouterReport:
    """Each question through /v1/chat/completions (the first with `frame` attached), then the costs."""
    answers = []
    headers = {"X-Tenant-Id": tenant, **_auth(key)}
    async with httpx.AsyncClient(base_url=base_url, timeout=300.0, headers=headers) as client:
        for n, question in enumerate(questions):
            answers.append(await _route_one(client, question, frame if n == 0 else None))
        costs = (await client.get("/v1/costs", params={"tenant_id": tenant})).raise_for_status().json()
    return RouterReport(answers, costs)


async def _route_one(client: httpx.AsyncClient, question: str, frame: bytes | None) -> Routed:
    """One question through /v1/chat/completions; an error is kept on the row, not raised."""
    content: Any = question
    if frame is not None:
        url = "data:image/jpeg;base64," + base64.b64encode(frame).decode()
        content = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}]
    started = time.perf_counter()
    body = {"model": "auto", "messages": [{"role": "user", "content": content}], "max_tokens": 96}
    try:
        reply = (await client.post("/v1/chat/completions", json=body)).raise_for_status().json()
    except httpx.HTTPError as exc:
        return Routed(
            question, "", "-", [], 0.0, (time.perf_counter() - started) * 1e3, 0, error=failure_reason(exc)
        )
    routing = reply["supportgraph"]
    return Routed(
        question,
        reply["choices"][0]["message"]["content"],
        routing["tier"],
        routing["attempts"],
        routing["confidence"],
        (time.perf_counter() - started) * 1e3,
        routing["attempts"][0]["images"] if routing["attempts"] else 0,
        degraded=routing.get("degraded", False),
        abstained=bool(routing.get("abstained")),
        reason=routing.get("abstain_reason"),
        intent=routing.get("intent"),
    )


def run_demo(
    settings: Settings,
    *,
    duration_s: float = 30.0,
    streams: int = 2,
    console: Console | None = None,
    shutdown: bool = True,
) -> DemoReport:
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    specs = [ClipSpec(seed=i, duration_s=duration_s) for i in range(streams)]
    report = DemoReport(0.0)
    demo_livekit_env()  # before the graph starts: its Router mints the handoff's room tokens
    with ExitStack() as stack:
        with console.status("starting local Ray and the graph..."):
            graph = report.run_part(
                "graph start", lambda: stack.enter_context(local_graph(settings, shutdown=shutdown))
            )
        if graph is None:
            report.render(console)
            return report
        report.startup_s = graph.startup_s
        console.print(f"graph '{graph.app_name}' at {graph.base_url} (docs: {graph.base_url}/docs)")
        key = report.run_part("API key", lambda: asyncio.run(demo_key(settings)))
        with console.status(f"replaying {streams} screen-share streams..."):
            image_usd = settings.pricing.load().image_usd
            report.frames = report.run_part(
                "screen-share dedup",
                lambda: asyncio.run(replay_frames(graph.base_url, specs, image_usd, key=key)),
            )
        with console.status("ingesting the sample help center and asking questions..."):
            report.knowledge = report.run_part(
                "knowledge base", lambda: _knowledge(settings, graph.base_url, key)
            )
        with console.status("routing questions through the escalating router..."):
            frames = report.frames.streams if report.frames else []
            frame = next((st.last_sent for st in frames if st.last_sent), None)
            report.router = report.run_part(
                "router", lambda: asyncio.run(ask_router(graph.base_url, ROUTER_QUESTIONS, frame, key=key))
            )
        with console.status("an error toast on a screen share, read, then a vague question..."):
            headers = {"X-Tenant-Id": DEMO_TENANT, **_auth(key)}
            report.screen = report.run_part(
                "screen reading",
                lambda: asyncio.run(screen_demo(graph.base_url, graph.app_name, DEMO_TENANT, headers)),
            )
        with console.status("a conversation handed off to a person, claimed and resolved..."):
            report.handoff = report.run_part("handoff", lambda: _handoff(settings, graph.base_url, key))
        if report.router and report.router.failed:
            n = len(report.router.failed)
            report.failures.append(
                PartFailure("router", f"{n} of {len(report.router.answers)} questions got no answer")
            )
    report.render(console)
    return report


def _handoff(settings: Settings, base_url: str, admin_key: str | None) -> HandoffDemo:
    """The handoff part with a client key (the customer's widget) and an agent key (a person)."""
    keys: dict[str, str | None] = {"admin": admin_key, "client": None, "agent": None}
    if admin_key is not None:
        keys["client"] = asyncio.run(demo_key(settings, role="client"))
        keys["agent"] = asyncio.run(demo_key(settings, role="agent"))
    return asyncio.run(handoff_demo(base_url, DEMO_TENANT, keys))


def _knowledge(settings: Settings, base_url: str, key: str | None) -> KnowledgeReport:
    documents, chunks, ingest_s = asyncio.run(ingest_help_center(settings, DEMO_TENANT))
    answers = asyncio.run(ask(base_url, DEMO_QUESTIONS, key=key))
    return KnowledgeReport(documents, chunks, ingest_s, answers)
