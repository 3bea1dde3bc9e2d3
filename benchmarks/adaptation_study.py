"""What tenant adaptation buys, measured on judged questions of an ingested tenant (never a test split).

    SUPPORTGRAPH_STATE_DIR=/work/state-aws python benchmarks/adaptation_study.py --tenant eval \\
        --dataset ../shared/datasets/aws_docs_qa \\
        --queries ../shared/datasets/aws_docs_qa/queries.dev.jsonl evals/retrieval/paraphrase.jsonl

For each question: today's default (hybrid fusion, learned evidence reranker, `rerank_candidates`
candidates) and, on the same candidates, (1) the tenant's adapted cross-encoder alone on the first N,
(2) the cross-encoder blended with the learned order (z-scored sum, weight w on the learned score), and
(3) a query-side linear adapter of the bi-encoder (trained on the tenant's `adapt` pairs: each question's
vector mapped towards its passage's, against the batch's other passages), whose
dense list is fused and reranked as today. It also counts the tenant's chunks longer than MiniLM's
256-token window. Prints one table per question file and ends with one JSON line. Choose on dev-split
files only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import numpy as np

from serve_app.db.database import Database
from serve_app.knowledge import store
from serve_app.knowledge.adapt import tenant_dir
from serve_app.knowledge.factory import build_embedder
from serve_app.knowledge.pairs import load_pairs
from serve_app.knowledge.rerankers import Candidate
from serve_app.knowledge.rerankers.adapted import AdaptedReranker
from serve_app.knowledge.rerankers.learned import LearnedFusionReranker
from serve_app.knowledge.retrieval import fuse
from serve_app.settings import load_settings
from supportgraph_tools.knowledge.evaluate import (
    corpus_id,
    inline_qrels,
    load_qrels,
    load_queries,
    metrics_for,
)

NAMES = ("R@1", "R@5", "MRR@10")


def z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def docs_of(passages: list, order: list[int]) -> list[str]:
    return list(dict.fromkeys(corpus_id(passages[i].source) for i in order))


def train_adapter(q: np.ndarray, pos: np.ndarray, epochs: int = 30, tau: float = 0.05) -> np.ndarray:
    """W (d x d, from the identity): softmax of q W . [own passage, the batch's other passages]."""
    import torch

    tq, tp = (torch.tensor(a) for a in (q, pos))
    w = torch.nn.Parameter(torch.eye(q.shape[1]))
    opt = torch.optim.Adam([w], lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in torch.randperm(len(tq), generator=gen).split(64):
            qa = torch.nn.functional.normalize(tq[batch] @ w, dim=-1)
            logits = qa @ tp[batch].T / tau  # own passage on the diagonal
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))
            loss = loss + 0.1 * ((w - torch.eye(w.shape[0])) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return w.detach().numpy()


async def candidates_for(db, tenant, cfg, vector, text):
    async with db.tenant(tenant) as conn:
        dense = await store.dense(conn, vector, cfg.dense_k)
        lexical = await store.fulltext(conn, text, cfg.lexical_k, cfg.lexical_postings_cap)
    return fuse(dense, lexical, cfg)[: cfg.rerank_candidates]


async def study(args: argparse.Namespace) -> dict:
    settings = load_settings(None)
    cfg = settings.knowledge
    embedder = build_embedder(cfg.embedder).inner
    learned = LearnedFusionReranker()
    adapted = AdaptedReranker(settings.state_dir / "models")
    model = adapted.model_for(args.tenant)
    pairs = load_pairs(tenant_dir(settings.state_dir, args.tenant) / "work" / "pairs.jsonl")[
        : args.adapter_pairs
    ]
    qrels = load_qrels(args.dataset)
    async with Database.of(settings) as db:
        started = time.perf_counter()
        q = embedder.embed([p.query for p in pairs])[0]
        # the passages' stored vectors (a cloze pair's: its whole chunk)
        async with db.tenant(args.tenant) as conn:
            stored = await conn.fetch(
                "SELECT id, embedding FROM knowledge_chunks WHERE id = ANY($1::bigint[])",
                [p.chunk_id for p in pairs],
            )
        by_id = {r["id"]: np.asarray(r["embedding"].to_numpy(), np.float32) for r in stored}
        pos = np.stack([by_id[p.chunk_id] for p in pairs])
        w = train_adapter(q, pos)
        adapter_s = time.perf_counter() - started
        out: dict = {"adapter_seconds": round(adapter_s, 1), "adapter_pairs": len(pairs), "files": {}}
        for path in args.queries:
            judged = qrels | inline_qrels(path)
            queries = [x for x in load_queries(path) if x.id in judged]
            rows: dict[str, list[dict]] = {}
            for query in queries:
                vector = embedder.embed([query.text])[0][0]
                fused = await candidates_for(db, args.tenant, cfg, vector, query.text)
                passages = [p for p, _, _ in fused]
                base = np.asarray(
                    [s for _, s in learned.rerank_evidence([e for _, _, e in fused], len(fused))]
                )
                base_order = [i for i, _ in learned.rerank_evidence([e for _, _, e in fused], len(fused))]
                base_score = np.empty(len(fused))
                base_score[base_order] = base
                variants = {"default (learned)": base_order}
                if model is not None:
                    texts = [Candidate(f"{p.heading}\n{p.content}") for p in passages]
                    for n in args.top:
                        head = base_order[:n]
                        ranking = model.rerank(query.text, [texts[i] for i in head], n)
                        ce = np.full(len(fused), -np.inf)
                        for j, s in ranking:
                            ce[head[j]] = s
                        variants[f"CE top{n}"] = [head[j] for j, _ in ranking] + base_order[n:]
                        for weight in args.blend:
                            mix = z(ce[head]) + weight * z(base_score[head])
                            order = [head[j] for j in np.argsort(-mix, kind="stable")]
                            variants[f"CE top{n} + {weight} learned"] = order + base_order[n:]
                adapted_vector = vector @ w
                adapted_vector = adapted_vector / np.linalg.norm(adapted_vector)
                fused_a = await candidates_for(
                    db, args.tenant, cfg, adapted_vector.astype(np.float32), query.text
                )
                order_a = [i for i, _ in learned.rerank_evidence([e for _, _, e in fused_a], len(fused_a))]
                for name, order in variants.items():
                    rows.setdefault(name, []).append(metrics_for(docs_of(passages, order), judged[query.id]))
                rows.setdefault("query adapter", []).append(
                    metrics_for(docs_of([p for p, _, _ in fused_a], order_a), judged[query.id])
                )
            table = {
                name: {k: round(statistics.fmean(m[k] for m in ms), 4) for k in NAMES}
                for name, ms in rows.items()
            }
            print(f"\n{path.name} ({len(queries)} questions)")
            for name, figures in table.items():
                print(f"  {name:<28} " + "  ".join(f"{k} {v:.3f}" for k, v in figures.items()))
            out["files"][path.name] = table
        async with db.tenant(args.tenant) as conn:
            texts = [
                r["t"]
                for r in await conn.fetch("SELECT heading || E'\\n' || content AS t FROM knowledge_chunks")
            ]
    tokenizer = embedder.model.tokenizer
    lengths = np.asarray([len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]])
    out["chunks"] = {
        "count": len(texts),
        "over_256_tokens": round(float((lengths > 256).mean()), 4),
        "median_tokens": int(np.median(lengths)),
    }
    print(f"\nchunks: {out['chunks']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenant", default="eval")
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--queries", type=Path, nargs="+", required=True)
    parser.add_argument("--top", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--blend", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--adapter-pairs", type=int, default=1200)
    args = parser.parse_args()
    print(json.dumps({"study": "adaptation", **asyncio.run(study(args))}))


if __name__ == "__main__":
    main()
