"""What it costs a chat to be answered only once its cost events are written (`CostLedger.durable`).

    python benchmarks/ledger_bench.py [--requests 400] [--concurrency 1,16]

Runs the Router deployment's class without Serve (the extractive tier, no knowledge base; the embedded
Postgres in a temporary folder) and sends `--requests` chats at each concurrency, twice, alternating:
`durable` (what the Router does: each answer waits until its events are written; answers that finish
together share the flusher's writes) and `write-behind` (the baseline: the answer does not wait, the
flusher writes right after). Per run: chat latency p50/p95 (ms), ledger writes per answer, and the
events at risk when an answer went out (its own events, recorded and not yet written: what a replica
killed at that moment would lose). Prints a table; the last line is JSON with the p50 ratio durable /
write-behind per concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

from serve_app.costs.events import CostEvent
from serve_app.routing.providers.base import Message
from serve_app.routing.service import ChatRequest
from serve_app.settings import load_settings
from serve_app.stats import percentile

TENANT = "ledger-bench"


async def run(router: Any, requests: int, concurrency: int, durable: bool) -> dict[str, float]:
    ledger = router.ledger
    wait = type(ledger).durable.__get__(ledger)

    async def no_wait(request_id: object = None, timeout_s: float | None = None) -> bool:
        return True

    ledger.durable = wait if durable else no_wait
    writes, flush = 0, type(ledger).flush.__get__(ledger)

    async def counted() -> int:
        nonlocal writes
        done = await flush()
        writes += done > 0
        return done

    ledger.flush = counted
    own: dict[str, list[int]] = defaultdict(list)  # request id -> sequence numbers of its events
    record = type(ledger).record.__get__(ledger)

    def tracked(event: CostEvent) -> None:
        record(event)
        own[str(event.request_id)].append(ledger._recorded)

    ledger.record = router.service.router.record = tracked
    latencies: list[float] = []
    at_risk: list[int] = []  # per answer: its own events not yet written when it went out
    queue = list(range(requests))

    async def worker() -> None:
        while queue:
            n = queue.pop()
            request = ChatRequest(TENANT, (Message("user", f"How do I export my notes? #{n}"),))
            started = time.perf_counter()
            result = await router.chat(request)
            latencies.append((time.perf_counter() - started) * 1e3)
            unwritten = {seq for seq, _ in (*ledger._pending, *ledger._writing)}
            at_risk.append(sum(seq in unwritten for seq in own[result["routing"]["request_id"]]))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await wait(timeout_s=30)  # everything written before the next run
    return {
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "writes_per_answer": writes / requests,
        "answers_with_events_at_risk": sum(n > 0 for n in at_risk) / requests,
        "max_events_at_risk": max(at_risk),
    }


async def bench(requests: int, concurrencies: list[int], state: Path) -> dict[str, Any]:
    from deployments.router import Router

    settings = load_settings(
        None,
        state_dir=state,
        routing={"tiers": [{"name": "extractive", "backend": "extractive", "model": "extractive-grounded"}]},
    )
    router = Router(settings.routing, settings.screen, settings.pricing, settings.db, settings.state_dir)
    await router.chat(ChatRequest(TENANT, (Message("user", "warm up"),)))  # pool, tenant row, flusher
    rows = []
    for c in concurrencies:
        for durable in (False, True):  # warm-up of both modes at this concurrency
            await run(router, max(requests // 4, 1), c, durable)
        rows.append((c, "write-behind", await run(router, requests, c, False)))
        rows.append((c, "durable", await run(router, requests, c, True)))
    await router.__del__()  # what Serve calls on a replica's clean shutdown
    warnings.filterwarnings("ignore", message="coroutine 'Router.__del__' was never awaited")  # at exit
    print(
        f"{'concurrency':>11s} {'mode':12s} {'p50 ms':>8s} {'p95 ms':>8s} {'writes/answer':>13s}"
        f" {'answers at risk':>15s} {'max events at risk':>18s}"
    )
    for c, mode, r in rows:
        print(
            f"{c:11d} {mode:12s} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['writes_per_answer']:13.2f}"
            f" {r['answers_with_events_at_risk']:15.2f} {r['max_events_at_risk']:18d}"
        )
    by = {(c, mode): r for c, mode, r in rows}
    return {
        "bench": "ledger",
        "requests": requests,
        "p50_ratio_durable_vs_write_behind": {
            str(c): round(by[(c, "durable")]["p50_ms"] / by[(c, "write-behind")]["p50_ms"], 2)
            for c in concurrencies
        },
        "durable_writes_per_answer": {
            str(c): round(by[(c, "durable")]["writes_per_answer"], 2) for c in concurrencies
        },
        "durable_answers_at_risk": max(
            by[(c, "durable")]["answers_with_events_at_risk"] for c in concurrencies
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", default="1,16", help="comma-separated")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    from serve_app.db.database import stop_embedded

    with tempfile.TemporaryDirectory(prefix="sg-ledger-") as folder:
        state = Path(folder) / "state"
        try:
            result = asyncio.run(bench(args.requests, concurrencies, state))
        finally:
            stop_embedded(state / "pgdata")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
