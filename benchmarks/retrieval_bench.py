"""Hybrid retrieval at 100k chunks: latency per stage and HNSW recall@10 against exact search.

    python benchmarks/retrieval_bench.py [--chunks 100000] [--queries 200] [--state-dir /tmp/sg-bench]

Builds a throwaway embedded Postgres with one tenant holding N generated chunks: Zipf-distributed words
for full text and clustered, normalised 384-d vectors (embedding-like: many near neighbours). Loads
them with COPY as the owner (fast; the app role goes through RLS) with the chunk triggers off and their
postings, term and corpus rows rebuilt set-wise, builds the HNSW index (timed), then
runs the app's own Retriever as the app role (RLS on) with precomputed query vectors, so the figures
are the database stages: dense top-50, full-text top-50, RRF. Query vectors are noisy copies of stored
ones. Recall@10 compares the HNSW top-10 with a brute-force numpy top-10 over the same vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import asyncpg
import numpy as np

from serve_app.db.database import Database, ensure_tenant
from serve_app.knowledge import store
from serve_app.knowledge.factory import build_retriever
from serve_app.settings import load_settings
from serve_app.stats import percentile

DIM = 384
TENANT = "bench"


class FixedEmbedder:
    """Hands the Retriever the query vector chosen for the current query (no model in the loop)."""

    name, dim = "fixed", DIM

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> tuple[np.ndarray, None]:
        return np.stack([self.vectors[t] for t in texts]), None


def corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    ranks = rng.zipf(1.3, size=(n, 60)) % len(vocab)
    texts = [" ".join(vocab[r]) for r in ranks]
    centers = rng.normal(size=(1000, DIM)).astype(np.float32)
    vectors = centers[rng.integers(0, 1000, n)] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return texts, vectors


# What the chunk triggers of migration 002 keep up row by row, computed set-wise for one tenant. One
# COPY of N rows with the triggers on updates the same term and corpus rows N times in one transaction,
# and every update walks the versions the transaction already made: quadratic (20k rows took 6 min).
REINDEX = (
    """INSERT INTO knowledge_postings (tenant_id, lexeme, chunk_id, tf, dl)
       SELECT c.tenant_id, u.lexeme, c.id, coalesce(array_length(u.positions, 1), 1),
              (SELECT coalesce(sum(coalesce(array_length(v.positions, 1), 1)), 0) FROM unnest(c.tsv) v)
         FROM knowledge_chunks c, unnest(c.tsv) u WHERE c.tenant_id = $1""",
    """INSERT INTO knowledge_terms (tenant_id, lexeme, df)
       SELECT tenant_id, lexeme, count(*) FROM knowledge_postings WHERE tenant_id = $1
        GROUP BY tenant_id, lexeme""",
    """INSERT INTO knowledge_corpus_stats (tenant_id, chunks, total_dl)
       SELECT tenant_id, count(DISTINCT chunk_id), sum(tf) FROM knowledge_postings WHERE tenant_id = $1
        GROUP BY tenant_id""",
)


async def load(admin_dsn: str, texts: list[str], vectors: np.ndarray) -> float:
    """Replaces the bench tenant's chunks (triggers off, derived rows rebuilt set-wise); returns the
    HNSW build time."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        from pgvector.asyncpg import register_vector

        await register_vector(conn)
        await ensure_tenant(conn, TENANT)
        async with conn.transaction():
            await conn.execute("ALTER TABLE knowledge_chunks DISABLE TRIGGER USER")
            for table in ("knowledge_terms", "knowledge_corpus_stats", "knowledge_documents"):
                await conn.execute(f"DELETE FROM {table} WHERE tenant_id = $1", TENANT)  # chunks cascade
            doc = await conn.fetchval(
                "INSERT INTO knowledge_documents (tenant_id, source, content_hash)"
                " VALUES ($1, 'bench', 'x') RETURNING id",
                TENANT,
            )
            await conn.execute("DROP INDEX IF EXISTS knowledge_chunks_embedding_hnsw")
            await conn.copy_records_to_table(
                "knowledge_chunks",
                records=(
                    (TENANT, doc, i, "", t, v) for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
                ),
                columns=["tenant_id", "document_id", "ordinal", "heading", "content", "embedding"],
            )
            for statement in REINDEX:
                await conn.execute(statement, TENANT)
            await conn.execute("ALTER TABLE knowledge_chunks ENABLE TRIGGER USER")
        started = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute(
            "CREATE INDEX knowledge_chunks_embedding_hnsw ON knowledge_chunks"
            " USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        build_s = time.perf_counter() - started
        await conn.execute("VACUUM (ANALYZE) knowledge_chunks, knowledge_postings, knowledge_terms")
        return build_s
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=100)
    parser.add_argument("--state-dir", type=Path, default=Path("/tmp/sg-bench"))
    args = parser.parse_args()
    settings = load_settings(state_dir=args.state_dir, db={"hnsw_ef_search": args.ef_search})
    db = await Database.of(settings).start()
    try:
        async with db.tenant(TENANT) as conn:
            await ensure_tenant(conn, TENANT)
            have = (await store.counts(conn))["chunks"]
        texts, vectors = corpus(args.chunks)
        build_s = None
        if have != args.chunks:
            t = time.perf_counter()
            build_s = await load(db.admin_dsn, texts, vectors)
            print(
                f"loaded {args.chunks} chunks in {time.perf_counter() - t:.1f} s (HNSW build {build_s:.1f} s)"
            )
        async with db.tenant(TENANT) as conn:
            ids = [r["id"] for r in await conn.fetch("SELECT id FROM knowledge_chunks ORDER BY ordinal")]
        rng = np.random.default_rng(1)
        embedder = FixedEmbedder()
        retriever = build_retriever(db, settings.knowledge, embedder, rerank=False)
        picks = rng.integers(0, args.chunks, args.queries)
        timings: dict[str, list[float]] = {}
        recalls = []
        for n, pick in enumerate(picks):
            query_vec = vectors[pick] + 0.05 * rng.normal(size=DIM).astype(np.float32)
            query_vec /= np.linalg.norm(query_vec)
            words = texts[pick].split()
            text = " ".join(rng.choice(words, size=4)) + f" q{n}"
            embedder.vectors[text] = query_vec
            result = await retriever.search(TENANT, text, mode="hybrid", top_k=10)
            for stage, ms in result.timings_ms.items():
                timings.setdefault(stage, []).append(ms)
            async with db.tenant(TENANT) as conn:
                dense = await store.dense(conn, query_vec, 10)
            exact = {ids[i] for i in np.argsort(-(vectors @ query_vec))[:10]}
            recalls.append(len(exact & {p.chunk_id for p in dense}) / 10)
        db_ms = [timings["dense"][i] + timings["lexical"][i] + timings["fuse"][i] for i in range(len(picks))]
        report = {
            "bench": "retrieval",
            "chunks": args.chunks,
            "queries": len(picks),
            "ef_search": args.ef_search,
            "hnsw_build_s": None if build_s is None else round(build_s, 1),
            "hybrid_db_p50_ms": round(percentile(db_ms, 0.5), 2),
            "hybrid_db_p95_ms": round(percentile(db_ms, 0.95), 2),
            **{
                f"{s}_p95_ms": round(percentile(v, 0.95), 2)
                for s, v in timings.items()
                if s in ("dense", "lexical")
            },
            "hnsw_recall_at_10": round(statistics.fmean(recalls), 4),
        }
        print(json.dumps(report))
    finally:
        await db.close()


if __name__ == "__main__":
    asyncio.run(main())
