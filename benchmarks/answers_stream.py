"""What verifying before sending costs a stream: time to first token with and without the verifier.

The chat service (in process, no Ray) over the sample help center with the offline ladder (extractive ->
SmolLM2). With `verify` on, every attempt is checked whole before its first word goes out, so a stream's
first token waits for the verified answer; with it off, the ladder's last attempt streams live. Three
kinds of turn, each asked `--repeats` times per mode: a question the extractive tier answers, one it
cannot verify (escalates to SmolLM2, then abstains when verifying), and a greeting (the intent step).

    .venv/bin/python benchmarks/answers_stream.py [--repeats 3]

Prints a table and ends with one JSON line: {"bench": "answers_stream", "ttft_ms": {...}, "total_ms": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from serve_app.db.database import Database, stop_embedded
from serve_app.knowledge.factory import build_embedder
from serve_app.knowledge.ingest import ingest_path
from serve_app.routing.providers.base import Message
from serve_app.routing.service import ChatRequest
from serve_app.samples import HELP_CENTER
from serve_app.settings import load_settings
from supportgraph_tools.answers.harness import local_chat

TURNS = {
    "answered": "How long are deleted notes kept?",
    "escalated": "Does Lumen integrate with Salesforce?",
    "greeting": "Hi there! Who am I talking to?",
}


async def _stream(service, text: str) -> tuple[float, float, str]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    first = None
    tier = "?"
    async for item in service.stream(ChatRequest("bench", (Message("user", text),), max_tokens=64)):
        if isinstance(item, str):
            if first is None and item:
                first = time.perf_counter()
        else:
            tier = item.tier
    end = time.perf_counter()
    return ((first or end) - started) * 1e3, (end - started) * 1e3, tier


async def main(repeats: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as state:
        results: dict[str, dict[str, dict[str, float | str]]] = {}
        for mode, verify in (("verified (buffered)", True), ("unverified (live)", False)):
            settings = load_settings(
                None, state_dir=Path(state), routing={"policy": {"verify": verify, "retries": 0}}
            )
            async with Database.of(settings) as db:
                embedder = build_embedder(settings.knowledge.embedder)
                await ingest_path(db, embedder, HELP_CENTER, "bench")
                async with local_chat(db, embedder, settings, verify=verify) as service:
                    await _stream(service, TURNS["answered"])  # warm: models loaded, caches filled
                    for turn, text in TURNS.items():
                        runs = [await _stream(service, text) for _ in range(repeats)]
                        results.setdefault(mode, {})[turn] = {
                            "ttft_ms": round(statistics.median(r[0] for r in runs), 1),
                            "total_ms": round(statistics.median(r[1] for r in runs), 1),
                            "tier": runs[-1][2],
                        }
        stop_embedded(Path(state) / "pgdata")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(main(args.repeats))
    print(f"{'mode':<22} {'turn':<10} {'tier':<10} {'TTFT ms':>9} {'total ms':>9}")
    for mode, turns in results.items():
        for turn, r in turns.items():
            print(f"{mode:<22} {turn:<10} {r['tier']!s:<10} {r['ttft_ms']:>9} {r['total_ms']:>9}")
    print(json.dumps({"bench": "answers_stream", "repeats": args.repeats, "results": results}))
