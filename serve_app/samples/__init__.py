"""The sample help center (`helpcenter/`, a fictional product's docs) and ingesting it for a tenant.

Used by the demo, the tests and the load benchmark. Importing this loads nothing heavy: the database and
the embedder come in when `ingest_help_center` runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve_app.settings import Settings

HELP_CENTER = Path(__file__).resolve().parent / "helpcenter"
HELP_CENTER_QUESTIONS = (  # customers' questions its documents answer (the load benchmarks ask them)
    "How do I reset a forgotten password?",
    "Can I get a refund on an annual plan?",
    "How do I export my notes as PDF?",
    "How long are deleted notes kept?",
    "Why is sync not working on my phone?",
)


async def ingest_help_center(settings: Settings, tenant: str) -> tuple[int, int, float]:
    """Ingest the sample help center for `tenant` (idempotent); (documents, chunks, seconds)."""
    from serve_app.db.database import Database
    from serve_app.knowledge import store
    from serve_app.knowledge.factory import build_embedder
    from serve_app.knowledge.ingest import ingest_path

    started = time.perf_counter()
    async with Database.of(settings) as db:
        await ingest_path(
            db,
            build_embedder(settings.knowledge.embedder),
            HELP_CENTER,
            tenant,
            **settings.knowledge.chunking(),
        )
        async with db.tenant(tenant) as conn:
            totals = await store.counts(conn)
    return totals["documents"], totals["chunks"], time.perf_counter() - started
