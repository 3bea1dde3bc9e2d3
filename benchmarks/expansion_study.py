"""Would pseudo-relevance feedback on the BM25 side pay? Customers do not use the documentation's words,
so BM25 misses the article a customer describes while the dense side, which reads meaning, often finds
it. This study expands each question's BM25 query with the terms of the passages the first pass ranks
highest (RM3-style: a term's weight is its share of each feedback passage, weighted by the passage's
rank and by the term's idf), runs the weighted BM25 again and fuses and reranks as the default mode does.
Measured on an ingested tenant, without changing the served code:

    SUPPORTGRAPH_STATE_DIR=/work/state-aws python benchmarks/expansion_study.py --tenant eval \\
        --dataset ../shared/datasets/aws_docs_qa \\
        --queries ../shared/datasets/aws_docs_qa/queries.dev.jsonl evals/retrieval/paraphrase.jsonl

Variants: `off` (today), and for feedback from the dense list (`dense`) or the fused first pass
(`fused`), M feedback passages, N expansion terms at weight W relative to the question's own terms
(`fused m3 n10 w0.3`). Document-level R@1 / R@5 / MRR@10 per question file for `hybrid_rerank` (the
default mode) and `bm25`, a table per file and one JSON line. Choose on dev-split files only. (`bm25`
mode has no dense list: its `dense` rows are the `off` row again, and its `fused` rows expand from the
BM25 first pass alone.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from pathlib import Path

import asyncpg
import numpy as np

from serve_app.cli.common import _with_knowledge
from serve_app.knowledge import store
from serve_app.knowledge.factory import build_retriever
from serve_app.knowledge.retrieval import fuse
from serve_app.knowledge.store import Passage
from serve_app.settings import load_settings
from supportgraph_tools.knowledge.evaluate import print_study, study_rows

MODES = ("hybrid_rerank", "bm25")

# store.BM25 with a weight per query term: the terms and weights arrive as arrays instead of the text
WEIGHTED_BM25 = (
    store.BM25.replace(
        "SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', $1))",
        "SELECT lexeme, weight FROM unnest($1::text[], $5::float8[]) AS u(lexeme, weight)",
    )
    .replace("SELECT df.lexeme, ln(", "SELECT df.lexeme, q.weight * ln(")
    .replace("FROM df, st", "FROM df JOIN q USING (lexeme), st")
)

QUERY_TERMS = "SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', $1))"

FEEDBACK_TERMS = """
SELECT p.chunk_id, p.lexeme, p.tf, p.dl, t.df, s.chunks::float8 AS n
  FROM knowledge_postings p JOIN knowledge_terms t USING (tenant_id, lexeme), knowledge_corpus_stats s
 WHERE p.chunk_id = ANY($1::bigint[])
"""


async def expansion(
    conn: asyncpg.Connection, own: set[str], feedback: list[int], terms: int, weight: float
) -> dict[str, float]:
    """Expansion terms and weights from the feedback chunks (in rank order): RM3-like, a term scores
    the sum over passages of tf / length times 1 / (rank + 1), times its idf; terms in more than 10% of
    the chunks, the question's own, and terms shorter than 3 letters or all digits are left out."""
    rank = {c: i for i, c in enumerate(feedback)}
    score: dict[str, float] = {}
    for r in await conn.fetch(FEEDBACK_TERMS, feedback):
        lexeme = r["lexeme"]
        if lexeme in own or len(lexeme) < 3 or lexeme.isdigit() or r["df"] > 0.1 * r["n"]:
            continue
        idf = math.log(1 + (r["n"] - r["df"] + 0.5) / (r["df"] + 0.5))
        share = r["tf"] / max(r["dl"], 1) / (rank[r["chunk_id"]] + 1)
        score[lexeme] = score.get(lexeme, 0.0) + share * idf
    best = sorted(score.items(), key=lambda kv: -kv[1])[:terms]
    top = best[0][1] if best else 1.0
    return {lexeme: weight * s / top for lexeme, s in best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--dataset", type=Path, required=True, help="BEIR-style dataset (its qrels)")
    ap.add_argument("--queries", type=Path, nargs="+", required=True)
    ap.add_argument("--variants", nargs="+", default=["off", "dense m3 n10 w0.3", "fused m3 n10 w0.3"])
    args = ap.parse_args()
    settings = load_settings(None)
    cfg = settings.knowledge
    chunk_dense, chunk_fulltext = store.dense, store.fulltext
    state: dict[str, object] = {"variant": "off", "dense": []}

    async def dense(conn, vector: np.ndarray, k: int) -> list[Passage]:  # type: ignore[no-untyped-def]
        found = await chunk_dense(conn, vector, k)
        state["dense"] = found
        return found

    async def fulltext(conn, query: str, k: int, per_term: int = 3000, max_df: float = 0.3):  # type: ignore[no-untyped-def]
        first = await chunk_fulltext(conn, query, k, per_term, max_df)
        dense_list, state["dense"] = state["dense"], []  # this query's (bm25 mode has none)
        variant = str(state["variant"])
        if variant == "off":
            return first
        source, m, n, w = variant.split()
        m_, n_, w_ = int(m[1:]), int(n[1:]), float(w[1:])
        if source == "dense":
            picked = [p.chunk_id for p in dense_list][:m_]  # type: ignore[attr-defined]
        else:
            picked = [p.chunk_id for p, _, _ in fuse(dense_list, first, cfg)][:m_]  # type: ignore[arg-type]
        own = {r["lexeme"] for r in await conn.fetch(QUERY_TERMS, query)}
        extra = await expansion(conn, own, picked, n_, w_) if picked else {}
        lexemes = [*own, *extra]
        weights = [1.0] * len(own) + list(extra.values())
        rows = await conn.fetch(WEIGHTED_BM25, lexemes, k, per_term, max_df, weights)
        return [Passage.from_row(r) for r in rows]

    store.dense, store.fulltext = dense, fulltext  # the retriever calls these: the study's stand in

    async def work(db, embedder, bill) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
        retriever = build_retriever(db, cfg, embedder)
        return await study_rows(retriever, args.tenant, args.dataset, args.queries, args.variants, use, MODES)

    def use(variant: str) -> None:
        state["variant"] = variant

    rows = asyncio.run(_with_knowledge(settings, args.tenant, work))
    print_study(rows, args.queries, args.variants, MODES, "variant")
    print(json.dumps({"study": "query_expansion", "tenant": args.tenant, "rows": rows}))


if __name__ == "__main__":
    main()
