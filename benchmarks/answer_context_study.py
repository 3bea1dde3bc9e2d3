"""Is the answer in the passages the answering tiers get? For each answerable question with a gold answer,
whether any of the prompt's passages carries it (the `eval-answers` grader applied to the passage), for
today's passages (the first `--passages` of the default search, one per document) and with more chunks
of the first document: its next chunks in chunk-level fused order, or all of them (an upper bound).

    SUPPORTGRAPH_STATE_DIR=/work/state-aws python benchmarks/answer_context_study.py --tenant eval \\
        --queries ../shared/datasets/aws_docs_qa/queries.dev.jsonl evals/answers/customer.jsonl --split dev

Set beside `eval-answers`' "best attempt right" it splits the misses between retrieval (the gold is in no
passage) and the extractive tier's selector (it is, and another unit was quoted). A table per question
file and one JSON line. Choose on dev-split files only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from serve_app.cli.common import _with_knowledge
from serve_app.knowledge import store
from serve_app.knowledge.factory import build_retriever
from serve_app.knowledge.fusion import rrf
from serve_app.knowledge.retrieval import prompt_text
from serve_app.settings import load_settings
from supportgraph_tools.answers.evaluate import grade

VARIANTS = ("today", "+1 chunk", "+2 chunks", "+3 chunks", "whole first document")


def answerable(path: Path, split: str | None) -> list[tuple[str, str]]:
    """(question, gold answer) of a file's answerable rows in `split` (rows without a split count)."""
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        wanted = split is None or row.get("split", split) == split
        if row.get("answer") and row.get("kind", "answerable") == "answerable" and wanted:
            out.append((row["text"], row["answer"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--queries", type=Path, nargs="+", required=True)
    ap.add_argument("--split", default=None, help="only rows of this split (files without splits: all)")
    ap.add_argument("--passages", type=int, default=None, help="routing.context_passages")
    args = ap.parse_args()
    settings = load_settings(None)
    cfg = settings.knowledge
    passages = args.passages or settings.routing.context_passages
    lists: dict[str, list[store.Passage]] = {}
    chunk_dense, chunk_fulltext = store.dense, store.fulltext

    async def dense(conn, vector, k):  # type: ignore[no-untyped-def]
        lists["dense"] = await chunk_dense(conn, vector, k)
        return lists["dense"]

    async def fulltext(conn, query, k, *rest):  # type: ignore[no-untyped-def]
        lists["lexical"] = await chunk_fulltext(conn, query, k, *rest)
        return lists["lexical"]

    store.dense, store.fulltext = dense, fulltext  # the chunk-level lists of each search, kept

    async def work(db, embedder, bill) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
        retriever = build_retriever(db, cfg, embedder)
        rows = []
        for path in args.queries:
            found = dict.fromkeys(VARIANTS, 0)
            questions = answerable(path, args.split)
            for text, gold in questions:
                result = await retriever.search(args.tenant, text, mode="hybrid_rerank", top_k=passages)
                given = [
                    prompt_text(h.passage.heading, h.passage.title, h.passage.content) for h in result.hits
                ]
                first = result.hits[0].passage
                fused = rrf(
                    [lists["lexical"], lists["dense"]],
                    key=lambda p: p.chunk_id,
                    k=cfg.rrf_k,
                    weights=[cfg.lexical_weight, cfg.dense_weight],
                )
                more = [
                    prompt_text(p.heading, p.title, p.content)
                    for p, _ in fused
                    if p.document_id == first.document_id and p.chunk_id != first.chunk_id
                ]
                async with db.tenant(args.tenant) as conn:
                    whole = [
                        prompt_text(r["heading"], first.title, r["content"])
                        for r in await conn.fetch(
                            "SELECT heading, content FROM knowledge_chunks WHERE document_id = $1",
                            first.document_id,
                        )
                    ]
                for name, texts in zip(
                    VARIANTS,
                    (given, given + more[:1], given + more[:2], given + more[:3], given + whole),
                    strict=True,
                ):
                    found[name] += any(grade(t, gold) for t in texts)
            rows.append({"queries": path.name, "questions": len(questions), "passages": passages} | found)
        return rows

    rows = asyncio.run(_with_knowledge(settings, args.tenant, work))
    print(f"\n{'questions':<22}{'n':>5}" + "".join(f"{v:>22}" for v in VARIANTS))
    for r in rows:
        print(f"{r['queries']:<22}{r['questions']:>5}" + "".join(f"{r[v]:>22}" for v in VARIANTS))
    print(json.dumps({"study": "answer_context", "tenant": args.tenant, "split": args.split, "rows": rows}))


if __name__ == "__main__":
    main()
