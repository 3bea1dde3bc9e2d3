"""Faults: providers that fail over the real SDKs (escalation falls through, every attempt recorded),
Postgres restarted in the middle of an ingest (the re-run completes without duplicates), and shutdown
under load (every answered request's attempts are in the ledger)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import ClassVar

import pytest

from serve_app.costs.ledger import CostLedger
from serve_app.db.database import Database, stop_embedded
from serve_app.knowledge.ingest import ingest_path
from serve_app.routing.providers.base import Message
from serve_app.routing.service import ChatRequest, ChatService
from serve_app.samples import HELP_CENTER
from serve_app.settings import Settings, load_settings
from tests.conftest import LiveDB
from tests.wire import QuietHandler, read_json, reply_json, serving

PASSAGE = "## Export\nChoose Settings > Data > Export to export your notes as Markdown or PDF."


class FailingWire(QuietHandler):
    """Gemini answers 503, Anthropic stalls past the timeout."""

    calls: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        read_json(self)
        FailingWire.calls.append(self.path)
        if "generateContent" in self.path:
            reply_json(self, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}, 503)
        else:
            import time

            time.sleep(1.5)
            reply_json(self, {"type": "error", "error": {"type": "overloaded_error", "message": "late"}}, 529)


def test_failing_providers_fall_through_to_a_working_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    events = []
    with serving(FailingWire) as url:
        settings = load_settings(
            routing={
                "tiers": [
                    {
                        "name": "flash-lite",
                        "backend": "gemini",
                        "model": "gemini-2.5-flash-lite",
                        "base_url": url,
                    },
                    {
                        "name": "sonnet",
                        "backend": "anthropic",
                        "model": "claude-sonnet-4-5",
                        "base_url": url,
                        "timeout_s": 0.3,
                    },
                    {"name": "extractive", "backend": "extractive", "model": "extractive-grounded"},
                ],
                "policy": {"retries": 1, "backoff_s": 0.01},
            }
        )

        async def retrieve(tenant: str, question: str, k: int, request_id: uuid.UUID) -> list[str]:
            return [PASSAGE]

        service = ChatService.create(settings, retrieve)
        service.router.record = events.append
        routed, _ = asyncio.run(
            service.answer(ChatRequest("acme", (Message("user", "How do I export notes?"),)))
        )
    assert routed.tier == "extractive" and "[1]" in routed.text
    outcomes = [(a.tier, a.outcome, a.retries) for a in routed.attempts]
    assert [(tier, outcome) for tier, outcome, _ in outcomes] == [
        ("flash-lite", "failed"),
        ("sonnet", "failed"),
        ("extractive", "accepted"),
    ]
    # each attempt reports the retries it made: one per extra request that reached the server (a timed-out
    # request may or may not have arrived before the client gave up, so Sonnet's count is bounded)
    assert outcomes[0][2] == 1 and outcomes[2][2] == 0
    assert 0 <= outcomes[1][2] <= 1
    assert "503" in routed.attempts[0].error and "timeout" in routed.attempts[1].error
    assert sum("generateContent" in c for c in FailingWire.calls) == 2  # one retry
    assert [e.outcome for e in events] == ["failed", "failed", "accepted"]


class StopsPostgres:
    """An embedder that stops the database after its first batch (Postgres restarting under ingest)."""

    def __init__(self, inner, pgdata: Path):
        self.inner, self.pgdata, self.batches = inner, pgdata, 0
        self.name, self.dim = inner.name, inner.dim

    def embed(self, texts: list[str]):
        self.batches += 1
        if self.batches == 2:
            stop_embedded(self.pgdata)
        return self.inner.embed(texts)


def test_postgres_restarted_mid_ingest_then_the_rerun_completes_without_duplicates(
    tmp_path: Path, embedder
) -> None:
    settings = load_settings(None, state_dir=tmp_path / "state")
    docs = tmp_path / "docs"
    shutil.copytree(HELP_CENTER, docs)

    async def first_run() -> None:
        async with Database.of(settings) as db:
            await ingest_path(
                db, StopsPostgres(embedder, settings.state_dir / "pgdata"), docs, "fault-i", batch_chunks=4
            )

    async def second_run():
        async with Database.of(settings) as db:  # the server comes back
            report = await ingest_path(db, embedder, docs, "fault-i", batch_chunks=4)
            async with db.tenant("fault-i") as conn:
                sources = await conn.fetch(
                    "SELECT source, count(*) AS n FROM knowledge_documents GROUP BY source"
                )
                chunks = await conn.fetchval("SELECT count(*) FROM knowledge_chunks")
            return report, sources, chunks

    try:
        with pytest.raises(Exception):  # noqa: B017 - the connection error's type is the driver's business
            asyncio.run(first_run())
        report, sources, chunks = asyncio.run(second_run())
    finally:
        stop_embedded(settings.state_dir / "pgdata")
    assert len(sources) == 16 and all(row["n"] == 1 for row in sources)
    assert report.unchanged >= 1 and report.unchanged + report.written == 16  # finished work was kept
    assert chunks == 44  # what a clean ingest of the sample help center stores


def test_shutdown_under_load_loses_no_cost_event(live_db: LiveDB, kb_settings: Settings) -> None:
    settings = load_settings(
        None,
        state_dir=kb_settings.state_dir,
        routing={"tiers": [{"name": "extractive", "backend": "extractive", "model": "extractive-grounded"}]},
    )

    async def retrieve(tenant: str, question: str, k: int, request_id: uuid.UUID) -> list[str]:
        await asyncio.sleep(0.001 * (len(question) % 7))  # interleave the requests
        return [PASSAGE]

    async def scenario() -> tuple[int, int]:
        ledger = CostLedger(live_db.db, batch=40, interval_s=0.05)
        service = ChatService.create(settings, retrieve, ledger)
        flusher = asyncio.get_running_loop().create_task(ledger.run())
        questions = [f"How do I export my notes? #{n}" for n in range(300)]
        tasks = [
            asyncio.create_task(service.answer(ChatRequest("fault-s", (Message("user", q),))))
            for q in questions
        ]
        await asyncio.sleep(0.05)  # shut down while requests are in flight
        for task in tasks[200:]:
            task.cancel()  # requests cut off by the shutdown are not answered
        await asyncio.gather(*tasks, return_exceptions=True)
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await service.close()  # the replica's __del__ does this
        async with live_db.db.tenant("fault-s") as conn:
            rows = await conn.fetchval(
                "SELECT count(DISTINCT request_id) FROM cost_events WHERE service = 'llm'"
            )
        return service.answered, rows

    answered, recorded = live_db.run(scenario())
    assert answered >= 200 and recorded == answered


def test_a_router_replica_answers_only_once_its_cost_events_are_written(kb_settings: Settings) -> None:
    """The Router deployment's class, run without Serve: when `chat` (or the stream's routing event)
    returns, the request's attempts are in Postgres already, so a replica killed right after answering
    (its node lost: no `__del__`) loses none of them; `__del__` flushes what is left."""
    from deployments.router import Router

    settings = load_settings(
        None,
        state_dir=kb_settings.state_dir,
        routing={
            "tiers": [{"name": "extractive", "backend": "extractive", "model": "extractive-grounded"}],
            # no knowledge handle here: answers without passages, each one an LLM attempt to record
            "policy": {"verify": False},
            "intents": {"enabled": False},
        },
    )

    async def rows() -> int:
        async with Database.of(settings) as db, db.tenant("fault-r") as conn:
            return await conn.fetchval("SELECT count(*) FROM cost_events WHERE service = 'llm'")

    async def scenario() -> tuple[list[int], int, int]:
        router = Router(  # no knowledge handle: answers without passages
            settings.routing, settings.screen, settings.pricing, settings.db, settings.state_dir
        )
        ledger = router.ledger
        ledger.interval_s = 3600  # no timer: the flusher writes when woken
        write = ledger.flush

        async def slow_write() -> int:  # a Postgres that takes its time: the answer must wait for it
            await asyncio.sleep(0.3)
            return await write()

        ledger.flush = slow_write  # type: ignore[method-assign]
        request = ChatRequest("fault-r", (Message("user", "Hello there"),))
        seen = []
        for _ in range(5):
            reply = await router.chat(request)
            seen.append(ledger.written)  # the moment the answer is back
            assert reply["routing"]["costs_written"] is True
            async for event in router.chat_stream(request):
                if "routing" in event:
                    seen.append(ledger.written)
                    assert event["routing"]["costs_written"] is True
        in_db = await rows()  # what a replica killed now leaves behind
        await router.__del__()
        return seen, in_db, router.service.answered

    seen, in_db, answered = asyncio.run(scenario())
    assert seen == list(range(1, 11)) and in_db == 10 == answered


def test_serve_failures_of_a_model_deployment_are_typed_provider_errors() -> None:
    """A full model queue is a retryable rate limit, a dead model replica a server failure: the router
    then retries or escalates as for any provider."""
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError

    from deployments.router import HandleProvider
    from serve_app.routing.providers.base import Prompt, ProviderError

    class Failing:  # the shape of a DeploymentHandle method
        def __init__(self, exc: Exception):
            self.exc = exc

        async def remote(self, *_: object) -> None:
            raise self.exc

    prompt = Prompt((Message("user", "hi"),))
    for exc, kind in (
        (BackPressureError(num_queued_requests=64, max_queued_requests=64), "rate_limit"),
        (RayActorError(), "server"),
    ):
        provider = HandleProvider("smollm2-135m", type("Handle", (), {"complete": Failing(exc)})())
        with pytest.raises(ProviderError) as caught:
            asyncio.run(provider.complete(prompt, 5))
        assert caught.value.kind == kind and caught.value.retryable
