"""The cost ledger on real Postgres: per-tenant isolation, no lost events on close, reports."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serve_app.cli import main
from serve_app.costs.ledger import CostEvent, CostLedger, cost_report
from serve_app.costs.pricing import default_pricing
from serve_app.db.database import Database
from tests.conftest import LiveDB

SONNET = default_pricing()["claude-sonnet-4-5"]


def event(tenant: str, service: str = "llm", provider: str = "anthropic", attempt: int = 1) -> CostEvent:
    return CostEvent(
        tenant_id=tenant,
        service=service,
        provider=provider,
        model="claude-sonnet-4-5",
        attempt=attempt,
        input_tokens=1000,
        output_tokens=200,
        images=1,
        cost_usd=SONNET.cost(1000, 200, 1),
        latency_ms=12.5,
    )


class OneTenantDown:
    """The database, except that one tenant's transaction fails."""

    def __init__(self, db: Database, down: str):
        self.db, self.down = db, down

    def tenant(self, tenant: str):
        if tenant == self.down:
            raise RuntimeError("this tenant's write fails")
        return self.db.tenant(tenant)


def test_no_event_is_lost_and_tenants_see_only_their_own(live_db: LiveDB) -> None:
    async def scenario() -> tuple[int, object, object]:
        ledger = CostLedger(live_db.db, batch=50)
        for i in range(300):  # batch-size flushes start in the background while recording goes on
            ledger.record(event("ledger-a" if i % 3 else "ledger-b", attempt=1 + i % 3))
            if i % 40 == 0:
                await asyncio.sleep(0)
        await ledger.close()
        return (
            ledger.written,
            await cost_report(live_db.db, "ledger-a"),
            await cost_report(live_db.db, "ledger-b"),
        )

    written, a, b = live_db.run(scenario())
    assert written == 300 and (a.attempts, b.attempts) == (200, 100)
    assert a.total_usd == pytest.approx(200 * SONNET.cost(1000, 200, 1))
    assert a.rows[0]["input_tokens"] == 200_000 and a.rows[0]["images"] == 200


def test_a_failed_flush_keeps_the_events(kb_settings) -> None:
    async def scenario() -> int:
        ledger = CostLedger(Database.of(kb_settings))  # never started: every write fails
        ledger.record(event("ledger-c"))
        ledger.record(event("ledger-c"))
        with pytest.raises(RuntimeError):
            await ledger.flush()
        return ledger.pending

    assert asyncio.run(scenario()) == 2


def test_a_failed_flush_keeps_every_tenants_events_in_order(kb_settings) -> None:
    async def scenario() -> list[str]:
        ledger = CostLedger(Database.of(kb_settings))  # never started: the first tenant's write fails
        for tenant in ("ledger-c", "ledger-d", "ledger-c", "ledger-f"):
            ledger.record(event(tenant))
        with pytest.raises(RuntimeError):
            await ledger.flush()
        return [e.tenant_id for _, e in ledger._pending]

    assert asyncio.run(scenario()) == ["ledger-c", "ledger-c", "ledger-d", "ledger-f"]


def test_one_tenants_failed_write_does_not_hold_the_others_back(live_db: LiveDB) -> None:
    async def scenario() -> tuple[int, list[str], int]:
        ledger = CostLedger(OneTenantDown(live_db.db, "ledger-x"))  # type: ignore[arg-type]
        for tenant in ("ledger-x", "ledger-y", "ledger-x", "ledger-z"):
            ledger.record(event(tenant))
        with pytest.raises(RuntimeError, match="this tenant"):
            await ledger.flush()
        kept = [e.tenant_id for _, e in ledger._pending]
        return ledger.written, kept, (await cost_report(live_db.db, "ledger-z")).attempts

    assert live_db.run(scenario()) == (2, ["ledger-x", "ledger-x"], 1)


def test_cancelling_the_flusher_mid_flush_loses_nothing(live_db: LiveDB) -> None:
    tenants = [f"ledger-m{n}" for n in range(12)]

    async def scenario() -> tuple[int, int]:
        ledger = CostLedger(live_db.db, batch=10_000, interval_s=0.01)
        for i in range(1200):
            ledger.record(event(tenants[i % len(tenants)]))
        task = asyncio.get_running_loop().create_task(ledger.run())
        while not ledger._lock.locked():  # a flush of 12 tenant transactions is under way
            await asyncio.sleep(0)
        await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        total = 0
        for tenant in tenants:
            total += (await cost_report(live_db.db, tenant)).attempts
        return ledger.written, total

    assert live_db.run(scenario()) == (1200, 1200)


def test_start_is_idempotent_and_stop_flushes_everything(live_db: LiveDB) -> None:
    async def scenario() -> tuple[bool, int, int]:
        ledger = CostLedger(live_db.db, interval_s=0.05)
        ledger.start()
        first = ledger._flusher
        ledger.start()  # every request calls it; one flusher
        ledger.record(event("ledger-s"))
        await asyncio.sleep(0.2)
        ledger.record(event("ledger-s"))
        await ledger.stop()
        return ledger._flusher is None and first is not None, ledger.written, ledger.pending

    assert live_db.run(scenario()) == (True, 2, 0)


def test_the_flusher_survives_a_failed_flush(live_db: LiveDB) -> None:
    class FlakyLedger(CostLedger):
        failures = 1

        async def flush(self) -> int:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("database unreachable")
            return await super().flush()

    async def scenario() -> tuple[int, bool]:
        ledger = FlakyLedger(live_db.db, interval_s=0.02)
        task = asyncio.get_running_loop().create_task(ledger.run())
        ledger.record(event("ledger-g"))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if ledger.written:
                break
        alive = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return ledger.written, alive

    assert live_db.run(scenario()) == (1, True)


def test_report_by_service_provider_and_window(live_db: LiveDB) -> None:
    async def scenario() -> tuple[object, object]:
        ledger = CostLedger(live_db.db)
        ledger.record(
            CostEvent(tenant_id="ledger-d", service="frames", provider="vision", images=11, cost_usd=0.022)
        )
        for _ in range(2):
            ledger.record(
                CostEvent(
                    tenant_id="ledger-d",
                    service="llm",
                    provider="google",
                    model="gemini-2.5-flash-lite",
                    attempt=1,
                    input_tokens=500,
                    output_tokens=100,
                    images=0,
                    cost_usd=0.0001,
                )
            )
        await ledger.close()
        now = datetime.now(UTC)
        return (
            await cost_report(live_db.db, "ledger-d"),
            await cost_report(live_db.db, "ledger-d", since=now + timedelta(minutes=1)),
        )

    report, later = live_db.run(scenario())
    rows = {(r["service"], r["provider"]): r for r in report.rows}
    assert rows[("frames", "vision")]["images"] == 11 and rows[("llm", "google")]["attempts"] == 2
    assert report.total_usd == pytest.approx(0.0222) and later.attempts == 0


def test_screen_reads_count_characters_in_their_own_column(live_db: LiveDB) -> None:
    async def scenario() -> dict:
        ledger = CostLedger(live_db.db)
        for chars in (42, 8):
            ledger.record(
                CostEvent(
                    tenant_id="ledger-v", service="vision", provider="self-hosted", images=1, characters=chars
                )
            )
        ledger.record(CostEvent(tenant_id="ledger-v", service="llm", provider="google", output_tokens=100))
        await ledger.close()
        return {r["service"]: r for r in (await cost_report(live_db.db, "ledger-v")).rows}

    rows = live_db.run(scenario())
    assert (rows["vision"]["characters"], rows["vision"]["output_tokens"], rows["vision"]["images"]) == (
        50,
        0,
        2,
    )
    assert (rows["llm"]["characters"], rows["llm"]["output_tokens"]) == (0, 100)
    with pytest.raises(ValueError):
        CostEvent(tenant_id="ledger-v", service="vision", provider="self-hosted", characters=-1)


@pytest.mark.parametrize(
    "kwargs",
    [{"tenant_id": "Bad"}, {"input_tokens": -1}, {"cost_usd": -0.1}, {"attempt": 0}],
)
def test_bad_events_are_refused(kwargs: dict) -> None:
    base = {"tenant_id": "t", "service": "llm", "provider": "p"}
    with pytest.raises(ValueError):
        CostEvent(**{**base, **kwargs})


def test_costs_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve_app.db.database import stop_embedded
    from serve_app.settings import load_settings

    monkeypatch.setenv("SUPPORTGRAPH_STATE_DIR", str(tmp_path / "state"))

    async def seed() -> None:
        async with Database.of(load_settings()) as db:
            ledger = CostLedger(db)
            for _ in range(3):
                ledger.record(event("cli-costs"))
            await ledger.close()

    try:
        asyncio.run(seed())
        assert main(["costs", "--tenant", "cli-costs", "--since", "2020-01-01"]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["attempts"] == 3 and report["total_usd"] == pytest.approx(3 * SONNET.cost(1000, 200, 1))
        with pytest.raises(SystemExit):
            main(["costs", "--tenant", "cli-costs", "--since", "last tuesday"])
    finally:
        stop_embedded(tmp_path / "state" / "pgdata")


def test_background_flushing_and_final_flush_on_cancel(live_db: LiveDB) -> None:
    async def scenario() -> tuple[int, int, int]:
        ledger = CostLedger(live_db.db, interval_s=0.05)
        task = asyncio.get_running_loop().create_task(ledger.run())
        ledger.record(event("ledger-e"))
        await asyncio.sleep(0.3)
        flushed_by_timer = ledger.written
        ledger.record(event("ledger-e"))
        task.cancel()  # shutdown: run() flushes what is left before it ends
        await asyncio.gather(task, return_exceptions=True)
        return flushed_by_timer, ledger.written, (await cost_report(live_db.db, "ledger-e")).attempts

    assert live_db.run(scenario()) == (1, 2, 2)


def test_report_reproduces_the_seed_table(live_db: LiveDB) -> None:
    """600 / 250 / 150 requests answered on Flash-Lite / Flash / Sonnet at $0.01 / $0.02 / $0.70 each,
    against all 1000 on Sonnet ($0.70 each): $116 vs $700, 83.4% saved."""
    import uuid

    tiers = [
        ("flash-lite", "gemini-2.5-flash-lite", "google", 600, 0.01),
        ("flash", "gemini-2.5-flash", "google", 250, 0.02),
        ("sonnet", "claude-sonnet-4-5", "anthropic", 150, 0.70),
    ]

    async def scenario():
        ledger = CostLedger(live_db.db, batch=500)
        for tier, model, provider, count, usd in tiers:
            for _ in range(count):
                ledger.record(
                    CostEvent(
                        tenant_id="ledger-seed",
                        service="llm",
                        provider=provider,
                        model=model,
                        cost_usd=usd,
                        request_id=uuid.uuid4(),
                        tier=tier,
                        outcome="accepted",
                        baseline_usd=0.70,
                    )
                )
        await ledger.close()
        return await cost_report(live_db.db, "ledger-seed")

    report = live_db.run(scenario())
    assert report.requests == 1000 and report.attempts == 1000
    assert report.llm_usd == pytest.approx(116.0) and report.baseline_usd == pytest.approx(700.0)
    assert round(report.saved_pct, 1) == 83.4
    by_tier = {row["tier"]: (row["attempts"], row["accepted"], row["cost_usd"]) for row in report.tiers}
    assert by_tier == {
        "flash-lite": (600, 600, pytest.approx(6.0)),
        "flash": (250, 250, pytest.approx(5.0)),
        "sonnet": (150, 150, pytest.approx(105.0)),
    }
    assert report.to_dict()["llm"] == {
        "requests": 1000,
        "cost_usd": pytest.approx(116.0),
        "all_top_tier_usd": pytest.approx(700.0),
        "saved_pct": 83.43,
    }


def test_durable_waits_for_the_write_and_groups_concurrent_requests(live_db: LiveDB) -> None:
    """`durable()` returns once every event recorded before it is in Postgres: requests answered
    together share the flusher's writes (fewer writes than requests), and none waits for the old
    one-second timer."""

    async def scenario() -> tuple[list[int], int, int, float]:
        ledger = CostLedger(live_db.db, interval_s=3600)  # only a recorded event wakes the flusher
        ledger.start()
        writes = 0
        flush = ledger.flush

        async def counted() -> int:
            nonlocal writes
            writes += 1
            return await flush()

        ledger.flush = counted  # type: ignore[method-assign]

        async def request(n: int) -> int:
            ledger.record(event("ledger-w", attempt=1 + n % 3))
            await asyncio.sleep(0)
            assert await ledger.durable(timeout_s=30)
            return (await cost_report(live_db.db, "ledger-w")).attempts

        started = time.monotonic()
        seen = await asyncio.gather(*(request(n) for n in range(40)))
        took = time.monotonic() - started
        await ledger.stop()
        return seen, writes, ledger.late, took

    seen, writes, late, took = live_db.run(scenario())
    assert min(seen) >= 1 and max(seen) == 40  # each request saw at least its own event written
    assert 1 <= writes < 40 and late == 0 and took < 30


def test_durable_for_one_request_is_not_held_back_by_another_tenants_failing_write(
    live_db: LiveDB,
) -> None:
    import uuid

    async def scenario() -> tuple[bool, bool, int]:
        ledger = CostLedger(OneTenantDown(live_db.db, "ledger-q"), interval_s=0.05)  # type: ignore[arg-type]
        ledger.start()
        stuck, mine = uuid.uuid4(), uuid.uuid4()
        ledger.record(CostEvent(tenant_id="ledger-q", service="llm", provider="p", request_id=stuck))
        ledger.record(CostEvent(tenant_id="ledger-r", service="llm", provider="p", request_id=mine))
        own = await ledger.durable(mine, timeout_s=5)  # its own event is written: at once
        other = await ledger.durable(stuck, timeout_s=0.2)  # never written here
        ledger._flusher.cancel()  # type: ignore[union-attr]
        await asyncio.gather(ledger._flusher, return_exceptions=True)  # type: ignore[arg-type]
        return own, other, ledger.late

    assert live_db.run(scenario()) == (True, False, 1)


def test_durable_gives_up_after_its_wait_and_keeps_the_events(kb_settings) -> None:
    async def scenario() -> tuple[bool, int, int]:
        ledger = CostLedger(Database.of(kb_settings), interval_s=0.05)  # never started: writes fail
        ledger.start()
        ledger.record(event("ledger-u"))
        ok = await ledger.durable(timeout_s=0.3)
        pending, late = ledger.pending, ledger.late
        ledger._flusher.cancel()  # type: ignore[union-attr]
        await asyncio.gather(ledger._flusher, return_exceptions=True)  # type: ignore[arg-type]
        return ok, pending, late

    assert asyncio.run(scenario()) == (False, 1, 1)
