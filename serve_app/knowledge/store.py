"""SQL over the knowledge tables. Every function takes a tenant-scoped connection (`Database.tenant`):
row-level security, not these queries, keeps tenants apart."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import numpy as np

from serve_app.knowledge.chunking import Chunk, Document

UPSERT_DOCUMENT = """
INSERT INTO knowledge_documents (tenant_id, source, title, content_hash, chunk_count)
VALUES (current_tenant(), $1, $2, $3, $4)
ON CONFLICT (tenant_id, source) DO UPDATE
   SET title = EXCLUDED.title, content_hash = EXCLUDED.content_hash,
       chunk_count = EXCLUDED.chunk_count, updated_at = now()
RETURNING id
"""

# The nearest chunks are found first, on knowledge_chunks alone, so the planner always takes the HNSW
# index (with a join in the same ORDER BY it may pick a sequential scan and sort instead).
DENSE = """
SELECT c.id, c.document_id, d.source, d.title, c.heading, c.content, 1 - c.distance AS score
  FROM (SELECT id, document_id, heading, content, embedding <=> $1 AS distance
          FROM knowledge_chunks ORDER BY embedding <=> $1 LIMIT $2) c
  JOIN knowledge_documents d ON d.id = c.document_id
 ORDER BY c.distance, c.id
"""

# Full-text side: Okapi BM25 (k1 = 1.2, b = 0.75) over the inverted index that migration 002 derives
# from each chunk's tsvector; query terms are the query's lexemes under the same 'english' config.
# Terms in more than 30% of chunks are dropped unless nothing else is left (they barely move BM25), and
# each term contributes at most its $3 highest-impact postings (tf / length, an index order): the
# classic impact-ordered cut that bounds a query's work on large corpora; a chunk outside every term's
# cut can only have a small score.
BM25 = """
WITH st AS (
    SELECT chunks::float8 AS n, total_dl::float8 / greatest(chunks, 1) AS avgdl FROM knowledge_corpus_stats
), q AS (
    SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', $1))
), df AS (
    SELECT t.lexeme, t.df::float8 AS df FROM knowledge_terms t JOIN q USING (lexeme)
), terms AS (
    SELECT df.lexeme, ln(1 + (st.n - df.df + 0.5) / (df.df + 0.5)) AS idf
      FROM df, st
     WHERE df.df > 0 AND (df.df <= $4 * st.n OR NOT EXISTS (SELECT 1 FROM df d2 WHERE d2.df <= $4 * st.n))
), scored AS (
    SELECT p.chunk_id, sum(t.idf * p.tf * 2.2 / (p.tf + 1.2 * (0.25 + 0.75 * p.dl / st.avgdl))) AS score
      FROM terms t
     CROSS JOIN LATERAL (  -- per term: an index scan in impact order, cut at $3
           SELECT chunk_id, tf, dl FROM knowledge_postings p WHERE p.lexeme = t.lexeme
            ORDER BY p.tf::float4 / greatest(p.dl, 1) DESC LIMIT $3) p
     CROSS JOIN st
     GROUP BY p.chunk_id
     ORDER BY score DESC, p.chunk_id
     LIMIT $2
)
SELECT c.id, c.document_id, d.source, d.title, c.heading, c.content, s.score
  FROM scored s JOIN knowledge_chunks c ON c.id = s.chunk_id
  JOIN knowledge_documents d ON d.id = c.document_id
 ORDER BY s.score DESC, c.id
"""


@dataclass(frozen=True)
class Passage:
    chunk_id: int
    document_id: int
    source: str
    title: str
    heading: str
    content: str
    score: float

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Passage:
        return cls(
            row["id"],
            row["document_id"],
            row["source"],
            row["title"],
            row["heading"],
            row["content"],
            float(row["score"]),
        )


async def document_hashes(conn: asyncpg.Connection) -> dict[str, str]:
    """source -> content hash of the tenant's documents (each is written whole, in one transaction)."""
    rows = await conn.fetch("SELECT source, content_hash FROM knowledge_documents")
    return {r["source"]: r["content_hash"] for r in rows}


async def replace_document(
    conn: asyncpg.Connection, doc: Document, chunks: list[Chunk], embeddings: np.ndarray
) -> int:
    """Write a document and its chunks (old chunks replaced); call inside the tenant transaction."""
    if len(chunks) != len(embeddings):
        raise ValueError("one embedding per chunk")
    doc_id = await conn.fetchval(UPSERT_DOCUMENT, doc.source, doc.title, doc.content_hash, len(chunks))
    await conn.execute("DELETE FROM knowledge_chunks WHERE document_id = $1", doc_id)
    await conn.executemany(  # COPY is refused under row-level security; executemany pipelines inserts
        "INSERT INTO knowledge_chunks (tenant_id, document_id, ordinal, heading, content, embedding)"
        " VALUES (current_tenant(), $1, $2, $3, $4, $5)",
        [(doc_id, c.ordinal, c.heading, c.content, e) for c, e in zip(chunks, embeddings, strict=True)],
    )
    return doc_id


async def delete_documents(conn: asyncpg.Connection, sources: list[str]) -> int:
    result = await conn.execute("DELETE FROM knowledge_documents WHERE source = ANY($1::text[])", sources)
    return int(result.split()[-1])


async def dense(conn: asyncpg.Connection, query_vector: np.ndarray, k: int) -> list[Passage]:
    return [Passage.from_row(r) for r in await conn.fetch(DENSE, np.asarray(query_vector, np.float32), k)]


async def fulltext(
    conn: asyncpg.Connection, query: str, k: int, per_term: int = 3000, max_df: float = 0.3
) -> list[Passage]:
    """BM25 top-k over the tenant's chunks (empty when the query has no indexable words); terms in more
    than `max_df` of the chunks are dropped (dev split: 0.1 costs 0.04 MRR@10), `per_term` caps postings."""
    return [Passage.from_row(r) for r in await conn.fetch(BM25, query, k, per_term, max_df)]


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM knowledge_documents) AS documents,"
        " (SELECT count(*) FROM knowledge_chunks) AS chunks"
    )
    return dict(row)
