"""Real Postgres (embedded PG 18 + pgvector): migrations, the app role, row-level security under
concurrency, idempotent and resumable ingest, hybrid retrieval, bad input."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from serve_app import samples
from serve_app.db.database import Database, ensure_tenant
from serve_app.db.migrate import TENANT_TABLES, MigrationError, apply_migrations, check_app_role
from serve_app.knowledge import store
from serve_app.knowledge.adapters import InlineReranker, ThreadedEmbedder, ThreadedReranker
from serve_app.knowledge.chunking import Chunk, Document
from serve_app.knowledge.ingest import ingest_path
from serve_app.knowledge.query import QueryError
from serve_app.knowledge.rerankers import Candidate, Ranking
from serve_app.knowledge.retrieval import Retriever
from serve_app.tenancy import InvalidIdentifier
from tests.conftest import LiveDB

SAMPLES = samples.HELP_CENTER
TABLES = list(TENANT_TABLES)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=384).astype(np.float32)
    return v / np.linalg.norm(v)


async def put(live: LiveDB, tenant: str, source: str, text: str, seed: int = 0) -> None:
    async with live.db.tenant(tenant) as conn:
        await ensure_tenant(conn, tenant)
        doc = Document(source, source, text)
        await store.replace_document(conn, doc, [Chunk(0, source, text)], unit(seed)[None])


def test_migrations_are_idempotent_and_the_app_role_cannot_bypass_rls(live_db: LiveDB) -> None:
    assert live_db.run(apply_migrations(live_db.db.admin_dsn, "supportgraph_app")) == []

    async def roles() -> None:
        async with live_db.db.pool.acquire() as conn:
            await check_app_role(conn)  # the pool's role passes
        admin = await asyncpg.connect(live_db.db.admin_dsn)
        try:
            with pytest.raises(MigrationError, match="bypasses row-level security"):
                await check_app_role(admin)
            rls = await admin.fetch(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = ANY($1)",
                TABLES,
            )
        finally:
            await admin.close()
        assert len(rls) == len(TABLES) and all(r["relrowsecurity"] and r["relforcerowsecurity"] for r in rls)

    live_db.run(roles())


def test_rls_hides_and_protects_other_tenants_rows(live_db: LiveDB) -> None:
    async def scenario() -> None:
        await put(live_db, "rls-a", "secret.md", "tenant a private refund policy")
        async with live_db.db.tenant("rls-b") as conn:
            await ensure_tenant(conn, "rls-b")
            for table in TABLES:
                rows = await conn.fetch(
                    f"SELECT * FROM {table} WHERE {'id' if table == 'tenants' else 'tenant_id'} = 'rls-a'"
                )
                assert rows == [], table
            assert await conn.execute("UPDATE knowledge_chunks SET content = 'x'") == "UPDATE 0"
            assert (
                await conn.execute("DELETE FROM knowledge_documents WHERE source = 'secret.md'") == "DELETE 0"
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with live_db.db.tenant("rls-b") as conn:
                await conn.execute(
                    "INSERT INTO knowledge_documents (tenant_id, source, content_hash)"
                    " VALUES ('rls-a', 'x', 'h')"
                )
        async with live_db.db.pool.acquire() as conn:  # no tenant set: nothing visible
            assert await conn.fetchval("SELECT count(*) FROM knowledge_chunks") == 0
        async with live_db.db.tenant("rls-a") as conn:
            assert await conn.fetchval("SELECT count(*) FROM knowledge_chunks") == 1

    live_db.run(scenario())


def test_the_tenant_setting_ends_with_its_transaction(live_db: LiveDB) -> None:
    async def scenario() -> None:
        async with live_db.db.pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        async with live_db.db.tenant("scope-a") as conn:
            assert await conn.fetchval("SELECT current_tenant()") == "scope-a"
        async with live_db.db.pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same pooled connection
            assert await conn.fetchval("SELECT current_tenant()") is None
            # set_config(..., true) outside a transaction lasts one statement: never a way to scope a session
            await conn.execute("SELECT set_config('app.current_tenant_id', 'scope-a', true)")
            assert await conn.fetchval("SELECT current_tenant()") is None

    live_db.run(scenario())


def test_search_settings_hold_in_every_tenant_transaction(live_db: LiveDB) -> None:
    """HNSW settings travel with the tenant transaction: a pooled connection's RESET ALL cannot drop them."""

    async def settings() -> list[tuple[str, str, str]]:
        seen = []
        for _ in range(3):  # the same pooled connection, reset between uses
            async with live_db.db.tenant("cfg-t") as conn:
                seen.append(
                    tuple(
                        await conn.fetchrow(
                            "SELECT current_setting('hnsw.ef_search'),"
                            " current_setting('hnsw.iterative_scan'), current_tenant()"
                        )
                    )
                )
        return seen

    expected = (str(live_db.db.cfg.hnsw_ef_search), "relaxed_order", "cfg-t")
    assert live_db.run(settings()) == [expected] * 3


def test_no_rows_leak_between_tenants_under_concurrency(live_db: LiveDB) -> None:
    tenants = [f"leak-{i}" for i in range(8)]

    async def writer(tenant: str, n: int) -> None:
        await put(live_db, tenant, f"doc-{n}.md", f"marker {tenant} note {n}", seed=n)

    async def reader(tenant: str) -> list[str]:
        async with live_db.db.tenant(tenant) as conn:
            rows = await conn.fetch(
                "SELECT tenant_id, content FROM knowledge_chunks ORDER BY embedding <=> $1 LIMIT 50", unit(1)
            )
            rows += await conn.fetch(
                "SELECT tenant_id, content FROM knowledge_chunks WHERE tsv @@ to_tsquery('marker')"
            )
        return [f"{r['tenant_id']}|{r['content']}" for r in rows]

    async def scenario() -> list[tuple[str, list[str]]]:
        for t in tenants:
            await writer(t, 0)
        reads = [(t, reader(t)) for _ in range(5) for t in tenants]
        writes = [writer(t, n) for n in range(1, 6) for t in tenants]
        results = await asyncio.gather(*(coro for _, coro in reads), *writes)  # interleaved on one pool
        return [(t, rows) for (t, _), rows in zip(reads, results, strict=False)]

    readers = live_db.run(scenario())
    assert len(readers) == 40
    leaked = [
        row for tenant, rows in readers for row in rows if not row.startswith(f"{tenant}|marker {tenant} ")
    ]
    assert leaked == []
    assert all(rows for _, rows in readers)


def test_ingest_is_idempotent_incremental_and_prunes(live_db: LiveDB, embedder, tmp_path: Path) -> None:
    corpus = tmp_path / "hc"
    shutil.copytree(SAMPLES, corpus)
    first = live_db.run(ingest_path(live_db.db, embedder, corpus, "ingest-t"))
    assert (first.files, first.written, first.unchanged, first.failed, first.maintained) == (
        16,
        16,
        0,
        {},
        True,
    )
    again = live_db.run(ingest_path(live_db.db, embedder, corpus, "ingest-t"))
    assert (again.written, again.unchanged, again.chunks) == (0, 16, 0)

    async def totals() -> dict[str, int]:
        async with live_db.db.tenant("ingest-t") as conn:
            return await store.counts(conn)

    before = live_db.run(totals())
    (corpus / "billing-and-plans.md").write_text("# Billing\n\nEverything is free now.\n")
    (corpus / "mobile-app.txt").unlink()
    changed = live_db.run(ingest_path(live_db.db, embedder, corpus, "ingest-t", prune=True))
    assert (changed.written, changed.unchanged, changed.removed) == (1, 14, 1)
    after = live_db.run(totals())
    assert after["documents"] == before["documents"] - 1 and after["chunks"] < before["chunks"]


class FailingEmbedder:
    """Delegates, but raises on call number `fail_on` (an interrupted ingest)."""

    def __init__(self, inner, fail_on: int):
        self.inner, self.fail_on, self.calls = inner, fail_on, 0
        self.name, self.dim = inner.name, inner.dim

    def embed(self, texts: list[str]) -> tuple[np.ndarray, None]:
        self.calls += 1
        if self.calls == self.fail_on:
            raise ConnectionError("embedding backend went away")
        return self.inner.embed(texts)


def test_interrupted_ingest_resumes_without_duplicates(live_db: LiveDB, embedder) -> None:
    flaky = FailingEmbedder(embedder, fail_on=3)
    with pytest.raises(ConnectionError):
        live_db.run(ingest_path(live_db.db, flaky, SAMPLES, "resume-t", batch_chunks=1))
    resumed = live_db.run(ingest_path(live_db.db, embedder, SAMPLES, "resume-t", batch_chunks=1))
    assert resumed.unchanged == 2 and resumed.written == 14
    live_db.run(ingest_path(live_db.db, embedder, SAMPLES, "fresh-t"))

    async def chunks(tenant: str) -> list[tuple[str, int]]:
        async with live_db.db.tenant(tenant) as conn:
            rows = await conn.fetch(
                "SELECT d.source, c.ordinal FROM knowledge_chunks c JOIN knowledge_documents d"
                " ON d.id = c.document_id ORDER BY 1, 2"
            )
        return [(r["source"], r["ordinal"]) for r in rows]

    assert live_db.run(chunks("resume-t")) == live_db.run(chunks("fresh-t"))


def test_ingest_goes_past_the_query_cache(live_db: LiveDB, embedder) -> None:
    before = embedder.stats()
    report = live_db.run(ingest_path(live_db.db, embedder, SAMPLES, "nocache-t"))
    assert report.chunks > 0 and embedder.stats() == before  # no chunk evicts a cached query


@pytest.fixture()
def retriever(live_db: LiveDB, embedder) -> Retriever:
    live_db.run(ingest_path(live_db.db, embedder, SAMPLES, "lumen"))
    return Retriever(live_db.db, ThreadedEmbedder(embedder))


@pytest.mark.parametrize(
    ("question", "source"),
    [
        ("Can I get my money back on a yearly subscription?", "billing-and-plans.md"),
        ("I lost my phone and can't log in with two-factor", "account-and-login.md"),
        ("my edits on the laptop don't show up on my other computer", "sync-troubleshooting.md"),
        ("how many API calls per minute are allowed", "integrations.html"),
    ],
)
def test_hybrid_retrieval_finds_the_right_article(
    live_db: LiveDB, retriever: Retriever, question: str, source: str
) -> None:
    result = live_db.run(retriever.search("lumen", question, mode="hybrid", top_k=3))
    assert result.hits[0].passage.source == source, [h.passage.source for h in result.hits]
    assert set(result.timings_ms) >= {"embed", "dense", "lexical", "fuse", "total"}


def test_modes_and_tenant_scope(live_db: LiveDB, retriever: Retriever) -> None:
    for mode in ("bm25", "dense", "hybrid", "hybrid_rerank"):
        hits = live_db.run(retriever.search("lumen", "export notes as markdown", mode=mode)).hits
        assert hits and hits[0].passage.source == "export-and-import.md", mode
    assert live_db.run(retriever.search("nobody-here", "export notes", mode="hybrid")).hits == []


@pytest.mark.parametrize(
    ("tenant", "query", "mode", "error"),
    [
        ("lumen", "", "hybrid", QueryError),
        ("lumen", "   ", "hybrid", QueryError),
        ("lumen", "x" * 2001, "hybrid", QueryError),
        ("lumen", "refund", "magic", QueryError),
        ("Lumen!", "refund", "hybrid", InvalidIdentifier),
    ],
)
def test_bad_queries_are_clear_errors(
    live_db: LiveDB, retriever: Retriever, tenant, query, mode, error
) -> None:
    with pytest.raises(error):
        live_db.run(retriever.search(tenant, query, mode=mode))


def test_sql_looking_and_unicode_queries_are_just_text(live_db: LiveDB, retriever: Retriever) -> None:
    for query in [
        "'; DROP TABLE knowledge_chunks; --",
        "rückerstattung für jahresabo ✨",
        "a | b & !c <-> d:*",
    ]:
        live_db.run(retriever.search("lumen", query, mode="hybrid"))
    assert live_db.run(retriever.search("lumen", "refund annual plan", mode="bm25")).hits


def test_bm25_statistics_follow_inserts_replacements_and_deletes(
    live_db: LiveDB, embedder, tmp_path: Path
) -> None:
    corpus = tmp_path / "hc"
    shutil.copytree(SAMPLES, corpus)
    live_db.run(ingest_path(live_db.db, embedder, corpus, "stats-t"))
    (corpus / "billing-and-plans.md").write_text("# Billing\n\nEverything is free now, invoices included.\n")
    (corpus / "mobile-app.txt").unlink()
    live_db.run(ingest_path(live_db.db, embedder, corpus, "stats-t", prune=True))

    async def check() -> None:
        async with live_db.db.tenant("stats-t") as conn:
            df = {
                r["lexeme"]: r["df"]
                for r in await conn.fetch("SELECT lexeme, df FROM knowledge_terms WHERE df > 0")
            }
            actual = {
                r["lexeme"]: r["n"]
                for r in await conn.fetch(
                    "SELECT u.lexeme, count(*) AS n FROM knowledge_chunks c, unnest(c.tsv) u"
                    " GROUP BY u.lexeme"
                )
            }
            stats = await conn.fetchrow("SELECT chunks, total_dl FROM knowledge_corpus_stats")
            expected = await conn.fetchrow(
                "SELECT count(*) AS chunks, coalesce(sum((SELECT sum(coalesce(array_length(positions, 1), 1))"
                " FROM unnest(tsv))), 0) AS total_dl FROM knowledge_chunks"
            )
            postings = await conn.fetchval("SELECT count(*) FROM knowledge_postings")
        assert df == actual
        assert (stats["chunks"], stats["total_dl"]) == (expected["chunks"], expected["total_dl"])
        assert postings == sum(actual.values())

    live_db.run(check())


def test_bm25_ranks_rare_terms_above_common_ones(live_db: LiveDB, embedder) -> None:
    async def scenario() -> list[str]:
        for n in range(6):
            await put(live_db, "bm25-t", f"common-{n}.md", f"notes notes notes sync folder {n}", seed=n)
        await put(live_db, "bm25-t", "rare.md", "notes about the zeppelin export format", seed=9)
        async with live_db.db.tenant("bm25-t") as conn:
            return [p.source for p in await store.fulltext(conn, "zeppelin notes", 3)]

    assert live_db.run(scenario())[0] == "rare.md"


class BrokenReranker:
    name = "broken"

    def rerank(self, query: str, candidates: list[Candidate], top_n: int) -> tuple[Ranking, None]:
        raise TimeoutError("rerank backend timed out")


class ReversingReranker:
    """Puts the fused order upside down: a visible, deterministic effect."""

    name = "reverse"

    def rerank(self, query: str, candidates: list[Candidate], top_n: int) -> tuple[Ranking, None]:
        return [(i, float(i)) for i in reversed(range(len(candidates)))][:top_n], None


def test_ab_arms_split_requests_and_keep_per_arm_metrics(live_db: LiveDB, embedder) -> None:
    from serve_app.knowledge.rerankers import NoReranker

    live_db.run(ingest_path(live_db.db, embedder, SAMPLES, "ab-t"))
    retriever = Retriever(
        live_db.db,
        ThreadedEmbedder(embedder),
        {"none": ThreadedReranker(NoReranker()), "reverse": ThreadedReranker(ReversingReranker())},
        {"none": 1.0, "reverse": 1.0},
        split_by="request",
    )

    async def run_all() -> list:
        return [
            await retriever.search("ab-t", "refund for annual plan", request_id=f"r{i}") for i in range(40)
        ]

    results = live_db.run(run_all())
    arms = {r.arm for r in results}
    assert arms == {"none", "reverse"}
    first = {r.arm: [h.passage.chunk_id for h in r.hits] for r in results}
    assert first["reverse"] != first["none"]  # the arm really changed the order
    stats = {name: s.summary() for name, s in retriever.arm_stats.items()}
    assert stats["none"]["requests"] + stats["reverse"]["requests"] == 40
    assert all(
        s["requests"] > 5 and s["failures"] == 0 and s["p95_ms"] >= s["p50_ms"] for s in stats.values()
    )


def test_a_failing_reranker_falls_back_to_the_fused_order(live_db: LiveDB, embedder) -> None:
    live_db.run(ingest_path(live_db.db, embedder, SAMPLES, "ab-t"))
    broken = Retriever(live_db.db, ThreadedEmbedder(embedder), {"broken": ThreadedReranker(BrokenReranker())})
    plain = Retriever(live_db.db, ThreadedEmbedder(embedder))
    got = live_db.run(broken.search("ab-t", "reset two-factor", mode="hybrid_rerank"))
    fused = live_db.run(plain.search("ab-t", "reset two-factor", mode="hybrid"))
    assert [h.passage.chunk_id for h in got.hits] == [h.passage.chunk_id for h in fused.hits]
    assert broken.arm_stats["broken"].failures == 1


def test_ready_starts_the_pool_once_under_concurrent_first_use(kb_settings) -> None:
    async def scenario():
        db = Database.of(kb_settings)
        starts = []
        start = db.start

        async def counted(*args, **kwargs):
            starts.append(1)
            return await start(*args, **kwargs)

        db.start = counted
        ready = await asyncio.gather(db.ready(), db.ready(), db.ready())
        await db.ready()
        pool = db.pool
        await db.close()
        return starts, ready, db, pool

    starts, ready, db, pool = asyncio.run(scenario())
    assert starts == [1] and all(r is db for r in ready) and pool is not None


def test_the_learned_arm_reorders_fused_candidates_by_their_evidence(live_db: LiveDB, embedder) -> None:
    """Weights that trust only the dense list must give the dense order (among the fused candidates)."""
    from serve_app.knowledge.rerankers.learned import LearnedFusionReranker

    live_db.run(ingest_path(live_db.db, embedder, SAMPLES, "ab-t"))
    learned = InlineReranker(LearnedFusionReranker(weights=[0, 1, 0, 0]))
    dense_only = Retriever(live_db.db, ThreadedEmbedder(embedder), {"learned": learned})
    query = "how do I export my data"
    got = live_db.run(dense_only.search("ab-t", query, mode="hybrid_rerank", top_k=5))
    dense = live_db.run(dense_only.search("ab-t", query, mode="dense", top_k=50))
    fused = live_db.run(dense_only.search("ab-t", query, mode="hybrid", top_k=30))
    assert got.arm == "learned" and all(h.evidence is not None for h in fused.hits)
    dense_docs = list(dict.fromkeys(h.passage.document_id for h in dense.hits))
    assert [h.passage.document_id for h in got.hits] == dense_docs[: len(got.hits)]
    assert [h.evidence.dense_rank for h in got.hits] == list(range(1, len(got.hits) + 1))
    assert dense_only.arm_stats["learned"].failures == 0


def test_the_chat_turns_vector_stands_for_the_query_only_in_the_same_space(live_db: LiveDB, embedder) -> None:
    """The Router's intent step embeds the turn with the bundled MiniLM; a search of the same text takes
    that vector instead of embedding it again, but only when it is the search embedder's space (and
    size): a vector of another model would find nearest neighbours by accident."""
    from serve_app.answers.intent import IntentClassifier
    from serve_app.knowledge.factory import build_retriever
    from serve_app.settings import EmbedderSettings, KnowledgeSettings

    live_db.run(ingest_path(live_db.db, embedder, SAMPLES, "lumen"))
    retriever = build_retriever(live_db.db, KnowledgeSettings(), rerank=False)
    question = "how many API calls per minute are allowed"
    classifier = IntentClassifier.load()
    intent = classifier.classify(question)
    assert intent.label == "question" and intent.vector is not None
    space = classifier.space
    assert space == EmbedderSettings().space()  # the default knowledge embedder is the same model

    embedded = live_db.run(retriever.search("lumen", question, mode="dense", top_k=3))
    calls = retriever.embedder.embedder.stats()
    reused = live_db.run(
        retriever.search(
            "lumen", question, mode="dense", top_k=3, vector=intent.vector.tolist(), vector_space=space
        )
    )
    assert retriever.reused_vectors == 1 and retriever.embedder.embedder.stats() == calls  # not embedded
    assert [h.passage.chunk_id for h in reused.hits] == [h.passage.chunk_id for h in embedded.hits]
    for bad_space, vector in [
        ("openai-compatible/all-MiniLM-L6-v2/384", intent.vector),
        (space, intent.vector[:100]),
        (space, np.full(384, np.nan)),
        (None, intent.vector),
    ]:
        live_db.run(
            retriever.search(
                "lumen", question, mode="dense", top_k=3, vector=list(vector), vector_space=bad_space
            )
        )
    assert retriever.reused_vectors == 1  # each of those was embedded again
    assert retriever.embedder.embedder.stats() != calls
