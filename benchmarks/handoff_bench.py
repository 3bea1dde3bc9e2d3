"""What the handoff desk adds to a chat turn, and how fast people's actions answer, in process (no Ray).

    python benchmarks/handoff_bench.py [--turns 200]

An embedded Postgres in a temporary folder; the chat service answers from the extractive tier (one
help-center passage, no retrieval backend). Measured: a turn without the desk, a turn with the desk that
does not hand off (a session with no handoff: the returned-notes read and the open-handoff read), a turn
that hands off (the handoff written before the reply), and list / claim / resolve on the desk. Prints a
table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
import uuid
from pathlib import Path

from serve_app.auth import Caller
from serve_app.db.database import Database, stop_embedded
from serve_app.handoff.desk import HandoffDesk
from serve_app.routing.providers.base import Message
from serve_app.routing.service import ChatRequest, ChatService
from serve_app.settings import load_settings
from serve_app.stats import percentile

PASSAGE = "## Export\nChoose Settings > Data > Export to export your notes."


async def passage(tenant: str, question: str, k: int, request_id: uuid.UUID) -> list[str]:
    return [PASSAGE]


async def timed(n: int, make) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        await make(i)
        out.append((time.perf_counter() - started) * 1e3)
    return out


async def bench(state: Path, turns: int) -> dict[str, dict[str, float]]:
    os.environ.setdefault("LIVEKIT_API_KEY", "bench")
    os.environ.setdefault("LIVEKIT_API_SECRET", secrets.token_urlsafe(32))
    settings = load_settings(
        None,
        state_dir=state,
        routing={"tiers": [{"name": "extractive", "backend": "extractive", "model": "extractive-grounded"}]},
    )
    async with Database.of(settings) as db:
        plain = ChatService.create(settings, passage)
        desked = ChatService.create(settings, passage)
        desked.handoffs = desk = HandoffDesk(settings.handoff, db)
        agent = Caller("bench", "agent", "sgk_bench_x")

        def ask(text: str) -> ChatRequest:
            return ChatRequest("bench", (Message("user", text),), session_id=uuid.uuid4())

        await plain.answer(ask("warm up"))
        await desked.answer(ask("warm up"))
        results = {
            "turn, no desk": await timed(turns, lambda i: plain.answer(ask("How do I export my notes?"))),
            "turn, desk, no handoff": await timed(
                turns, lambda i: desked.answer(ask("How do I export my notes?"))
            ),
            "turn that hands off": await timed(
                turns, lambda i: desked.answer(ask("Can I talk to a person?"))
            ),
            "list queued (GET /v1/handoffs)": await timed(20, lambda i: desk.list("bench", agent, "queued")),
        }
        queued = (await desk.list("bench", agent, "queued", 500))["handoffs"]
        ids = [uuid.UUID(h["id"]) for h in queued[: min(50, len(queued))]]
        results["claim (token minted)"] = await timed(len(ids), lambda i: desk.claim("bench", ids[i], agent))
        results["resolve (cost event)"] = await timed(
            len(ids), lambda i: desk.resolve("bench", ids[i], agent)
        )
    return {
        name: {
            "n": len(ms),
            "p50_ms": round(percentile(ms, 0.5), 2),
            "p95_ms": round(percentile(ms, 0.95), 2),
        }
        for name, ms in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="handoff-bench-") as tmp:
        try:
            rows = asyncio.run(bench(Path(tmp), args.turns))
        finally:
            stop_embedded(Path(tmp) / "pgdata")
    print(f"{'step':36} {'n':>5} {'p50 ms':>8} {'p95 ms':>8}")
    for name, row in rows.items():
        print(f"{name:36} {row['n']:5d} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f}")
    print(json.dumps({"bench": "handoff", **rows}))


if __name__ == "__main__":
    main()
