"""`supportgraph ingest PATH --tenant T`: files -> chunks -> embeddings -> upsert, idempotent and resumable.

Each document is written in its own tenant transaction with its content hash, so a re-run skips what is
unchanged and an interrupted run resumes where it stopped (a half-written document never commits).

Where the time goes (the 2,757 AWS articles, 23.5k chunks, 2 shared cores): embedding. MiniLM costs
85-100 CPU-ms a chunk (over half the chunks fill its 256-token window), 85 at batch 64 or 128, 99 at 16;
writing costs about a tenth of that, half of it the BM25 postings triggers, the HNSW insert under a tenth
of it, and a transaction per document nothing measurable against one for all. The report's `embed_s` and
`write_s` say it for each run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from serve_app.costs.usage import Usage
from serve_app.db.database import Database, ensure_tenant
from serve_app.knowledge import store
from serve_app.knowledge.cache import CachedEmbedder
from serve_app.knowledge.chunking import Document, chunk_document, iter_files, load_document
from serve_app.knowledge.embedders import Embedder


@dataclass
class IngestReport:
    files: int = 0
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    maintained: bool = False  # VACUUM (ANALYZE) ran after the writes
    embed_s: float = 0.0  # where the time went: embedding the chunks,
    write_s: float = 0.0  # writing documents and chunks (HNSW and BM25 postings kept up by the inserts)


async def ingest_path(
    db: Database,
    embedder: Embedder,
    root: Path,
    tenant_id: str,
    *,
    prune: bool = False,
    max_words: int = 180,
    overlap: int = 30,
    batch_chunks: int = 256,
    progress: Callable[[int], None] | None = None,
    bill: Callable[[Usage], None] | None = None,
) -> IngestReport:
    """Ingest every supported file under `root` for a tenant. `progress(n)` is told about done files;
    `bill(usage)` about every embedding call an API embedder billed (as soon as it is made: the bill
    stands even if a write then fails)."""
    root = root.expanduser().resolve()
    files = iter_files(root)
    base = root if root.is_dir() else root.parent
    report = IngestReport(files=len(files))
    async with db.tenant(tenant_id) as conn:
        await ensure_tenant(conn, tenant_id)
        known = await store.document_hashes(conn)

    pending: list[tuple[Document, list]] = []

    # chunks are not queries: they go past the query cache (its LRU and Redis would only fill up)
    model = embedder.inner if isinstance(embedder, CachedEmbedder) else embedder

    async def flush() -> None:
        texts = [c.text_for_embedding for _, chunks in pending for c in chunks]
        started = time.perf_counter()
        vectors, usage = model.embed(texts)
        report.embed_s += time.perf_counter() - started
        if usage is not None and bill is not None:
            bill(usage)
        at, started = 0, time.perf_counter()
        for doc, chunks in pending:
            async with db.tenant(tenant_id) as conn:
                await store.replace_document(conn, doc, chunks, vectors[at : at + len(chunks)])
            at += len(chunks)
            report.written += 1
            report.chunks += len(chunks)
        report.write_s += time.perf_counter() - started
        if progress:
            progress(len(pending))
        pending.clear()

    seen: set[str] = set()
    for path in files:
        try:
            doc = load_document(path, base)
        except (OSError, ValueError) as exc:
            report.failed[str(path)] = str(exc)
            continue
        seen.add(doc.source)
        if known.get(doc.source) == doc.content_hash:
            report.unchanged += 1
            if progress:
                progress(1)
            continue
        chunks = chunk_document(doc, max_words, overlap)
        if not chunks:
            report.failed[doc.source] = "no text"
            continue
        pending.append((doc, chunks))
        if sum(len(c) for _, c in pending) >= batch_chunks:
            await flush()
    if pending:
        await flush()
    if prune:
        gone = sorted(set(known) - seen)
        if gone:
            async with db.tenant(tenant_id) as conn:
                report.removed = await store.delete_documents(conn, gone)
    if report.written or report.removed:
        report.maintained = await db.maintain()
    return report


async def copy_knowledge(
    db: Database, source: str, target: str, skip: set[str] | frozenset[str] = frozenset()
) -> IngestReport:
    """Copy a tenant's documents, chunks and embeddings to another tenant, except the `skip` sources (no
    embedding pass: an evaluation's second knowledge base, a staging copy). Idempotent like ingest: a
    document the target already holds with the same content hash is left alone, one it holds that the
    copy would not is removed."""
    async with db.tenant(source) as conn:
        docs = await conn.fetch("SELECT id, source, title, content_hash FROM knowledge_documents ORDER BY id")
        rows = await conn.fetch(
            "SELECT document_id, ordinal, heading, content, embedding FROM knowledge_chunks"
            " ORDER BY document_id, ordinal"
        )
    chunks: dict[int, list] = {}
    for row in rows:
        chunks.setdefault(row["document_id"], []).append(row)
    wanted = [d for d in docs if d["source"] not in skip]
    report = IngestReport(files=len(wanted))
    async with db.tenant(target) as conn:
        await ensure_tenant(conn, target)
        known = await store.document_hashes(conn)
    for doc in wanted:
        if known.get(doc["source"]) == doc["content_hash"]:
            report.unchanged += 1
            continue
        mine = chunks.get(doc["id"], [])
        async with db.tenant(target) as conn:
            doc_id = await conn.fetchval(
                store.UPSERT_DOCUMENT, doc["source"], doc["title"], doc["content_hash"], len(mine)
            )
            await conn.execute("DELETE FROM knowledge_chunks WHERE document_id = $1", doc_id)
            await conn.executemany(
                "INSERT INTO knowledge_chunks (tenant_id, document_id, ordinal, heading, content, embedding)"
                " VALUES (current_tenant(), $1, $2, $3, $4, $5)",
                [(doc_id, c["ordinal"], c["heading"], c["content"], c["embedding"]) for c in mine],
            )
        report.written += 1
        report.chunks += len(mine)
    gone = sorted(set(known) - {d["source"] for d in wanted})
    if gone:
        async with db.tenant(target) as conn:
            report.removed = await store.delete_documents(conn, gone)
    if report.written or report.removed:
        report.maintained = await db.maintain()
    return report
