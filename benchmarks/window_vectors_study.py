"""Would several vectors per long chunk pay? Measured without building them, on two ingested tenants of
the same documents: TENANT (the default chunks, whose BM25 and cited passages stay) and WINDOWS (the same
documents ingested again with chunks short enough for MiniLM's 256-token window, e.g.
`SUPPORTGRAPH_KNOWLEDGE__CHUNK_WORDS=100 SUPPORTGRAPH_KNOWLEDGE__CHUNK_OVERLAP=20`).

    SUPPORTGRAPH_STATE_DIR=/work/state-aws python benchmarks/window_vectors_study.py \\
        --tenant eval --windows eval100 --dataset ../shared/datasets/aws_docs_qa \\
        --queries ../shared/datasets/aws_docs_qa/queries.dev.jsonl evals/retrieval/paraphrase.jsonl

Three dense sides, each fused with TENANT's BM25 and reranked as the default mode does (document
fusion, the learned evidence reranker): `chunk` (today: one vector per chunk), `window` (the short
chunks' vectors, each document ranked by its best window: what per-window vectors of the long chunks
would give at document level) and `both` (the two lists merged by cosine). Document-level R@1 / R@5 /
MRR@10 per question file, for `hybrid_rerank`, `hybrid` and `dense`; a table per file and one JSON line.
Choose on dev-split files only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np

from serve_app.cli.common import _with_knowledge
from serve_app.knowledge import store
from serve_app.knowledge.factory import build_retriever
from serve_app.knowledge.store import Passage
from serve_app.settings import load_settings
from supportgraph_tools.knowledge.evaluate import print_study, study_rows

SIDES = ("chunk", "window", "both")
MODES = ("hybrid_rerank", "hybrid", "dense")
OFFSET = 1 << 40  # window passages get chunk ids no real chunk has, so chunk-level fusion never merges them


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenant", required=True, help="tenant with the default chunks")
    ap.add_argument("--windows", required=True, help="tenant with the same documents in short chunks")
    ap.add_argument("--dataset", type=Path, required=True, help="BEIR-style dataset (its qrels)")
    ap.add_argument("--queries", type=Path, nargs="+", required=True)
    args = ap.parse_args()
    settings = load_settings(None)
    chunk_dense = store.dense

    async def work(db, embedder, bill) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
        async with db.tenant(args.tenant) as conn:
            ids = {
                r["source"]: r["id"] for r in await conn.fetch("SELECT id, source FROM knowledge_documents")
            }
        side = {"name": "chunk"}

        async def dense(conn, vector: np.ndarray, k: int) -> list[Passage]:  # type: ignore[no-untyped-def]
            own = await chunk_dense(conn, vector, k)
            if side["name"] == "chunk":
                return own
            async with db.tenant(args.windows) as other:
                found = await chunk_dense(other, vector, k)
            windows = [  # onto the default tenant's documents, by source
                Passage(p.chunk_id + OFFSET, ids[p.source], p.source, p.title, p.heading, p.content, p.score)
                for p in found
                if p.source in ids
            ]
            if side["name"] == "window":
                return windows
            return sorted(own + windows, key=lambda p: -p.score)[:k]

        store.dense = dense  # the retriever calls store.dense: this study's dense side stands in for it
        retriever = build_retriever(db, settings.knowledge, embedder)

        def use(name: str) -> None:
            side["name"] = name

        return await study_rows(
            retriever, args.tenant, args.dataset, args.queries, list(SIDES), use, MODES, "dense_side"
        )

    rows = asyncio.run(_with_knowledge(settings, args.tenant, work))
    print_study(rows, args.queries, list(SIDES), MODES, "dense_side", width=10)
    print(
        json.dumps({"study": "window_vectors", "tenant": args.tenant, "windows": args.windows, "rows": rows})
    )


if __name__ == "__main__":
    main()
