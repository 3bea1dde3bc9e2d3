"""Hybrid retrieval: HNSW cosine top-k + full-text top-k, fused by Reciprocal Rank Fusion, then reranked
by the A/B arm the request falls in. Per-stage latencies and per-arm metrics are kept. The embedder and
the rerankers arrive as adapters (knowledge/adapters.py), built by knowledge/factory.py."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from serve_app.costs.usage import Usage
from serve_app.db.database import Database
from serve_app.knowledge import store
from serve_app.knowledge.fusion import rrf
from serve_app.knowledge.query import Mode, check_mode, check_query
from serve_app.knowledge.rerankers import ArmStats, Candidate, assign_arm
from serve_app.knowledge.rerankers.learned import Evidence, evidence_for
from serve_app.knowledge.store import Passage
from serve_app.metrics import Metrics
from serve_app.settings import KnowledgeSettings

if TYPE_CHECKING:
    from serve_app.knowledge.adapters import AsyncEmbedder, AsyncReranker


def best_per_document(passages: list[Passage]) -> list[Passage]:
    """Each document once, at the rank of its best passage."""
    seen: set[int] = set()
    return [p for p in passages if not (p.document_id in seen or seen.add(p.document_id))]


def fuse(
    dense: list[Passage], lexical: list[Passage], cfg: KnowledgeSettings
) -> list[tuple[Passage, float, Evidence]]:
    """RRF of the two rankings, over chunks or over documents, with each fused unit's evidence (ranks and
    relative scores in each list) for evidence rerankers. Document fusion ranks each document by its
    best passage in each list and cites the passage that fuses best at chunk level."""
    weights = [cfg.lexical_weight, cfg.dense_weight]
    by_chunk = rrf([lexical, dense], key=lambda p: p.chunk_id, k=cfg.rrf_k, weights=weights)
    if cfg.fuse_by == "chunk":
        evidence = evidence_for(
            [(p.chunk_id, p.score) for p in lexical], [(p.chunk_id, p.score) for p in dense]
        )
        return [(p, score, evidence[p.chunk_id]) for p, score in by_chunk]
    cited: dict[int, Passage] = {}
    for passage, _ in by_chunk:
        cited.setdefault(passage.document_id, passage)
    lexical_docs, dense_docs = best_per_document(lexical), best_per_document(dense)
    evidence = evidence_for(
        [(p.document_id, p.score) for p in lexical_docs], [(p.document_id, p.score) for p in dense_docs]
    )
    docs = rrf([lexical_docs, dense_docs], key=lambda p: p.document_id, k=cfg.rrf_k, weights=weights)
    return [(cited[p.document_id], score, evidence[p.document_id]) for p, score in docs]


def prompt_text(heading: str, title: str, content: str) -> str:
    """A passage as the answering tiers get it: its heading path (or title) as a Markdown heading, then
    its content."""
    return f"## {heading or title}\n{content}"


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float  # of the last stage that ranked it
    evidence: Evidence | None = None  # fused hits: what each retriever said about it

    def citation(self, n: int) -> str:
        where = self.passage.heading or self.passage.title
        return f"[{n}] {where} ({self.passage.source})"


@dataclass
class RetrievalResult:
    query: str
    mode: str
    arm: str | None
    hits: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    usage: list[Usage] = field(default_factory=list)  # billed calls made for it (API embedder, Cohere)


class Retriever:
    def __init__(
        self,
        db: Database,
        embedder: AsyncEmbedder,
        rerankers: dict[str, AsyncReranker] | None = None,
        arms: dict[str, float] | None = None,
        split_by: Literal["tenant", "request"] = "tenant",
        config: KnowledgeSettings | None = None,
    ):
        """`config`: the knowledge settings' depths, fusion and top_k (their embedder and arms are
        what factory.build_retriever makes `embedder`, `rerankers` and `arms` of)."""
        self.db = db
        self.embedder = embedder
        self.rerankers = rerankers or {}
        self.arms = arms or {name: 1.0 for name in self.rerankers}
        unknown = set(self.arms) - set(self.rerankers)
        if unknown:
            raise ValueError(f"A/B arms name unknown rerankers: {sorted(unknown)}")
        self.split_by = split_by
        self.config = config or KnowledgeSettings()
        self.arm_stats: dict[str, ArmStats] = {name: ArmStats() for name in self.arms}
        self.metrics: Metrics | None = None
        self.reused_vectors = 0  # queries whose caller's embedding was used (`search(vector=...)`)

    async def search(
        self,
        tenant_id: str,
        query: str,
        *,
        mode: Mode = "hybrid_rerank",
        top_k: int | None = None,
        request_id: str | None = None,
        arm: str | None = None,
        vector: Sequence[float] | None = None,
        vector_space: str | None = None,
    ) -> RetrievalResult:
        """`vector`: the query's embedding made by the caller in `vector_space`; used instead of
        embedding the query again when that is the space of this retriever's embedder."""
        check_mode(mode)
        text = check_query(query)
        cfg, k = self.config, top_k or self.config.top_k
        timings: dict[str, float] = {}
        usage: list[Usage] = []
        t0 = time.perf_counter()
        if mode != "bm25":
            given = self._given(vector, vector_space)
            vector = given if given is not None else await self._embed(text, usage)
            timings["embed"] = (time.perf_counter() - t0) * 1e3
        else:
            vector = None
        t1 = time.perf_counter()
        async with self.db.tenant(tenant_id) as conn:
            dense = await store.dense(conn, vector, cfg.dense_k) if vector is not None else []
            t2 = time.perf_counter()
            lexical = (
                await store.fulltext(conn, text, cfg.lexical_k, cfg.lexical_postings_cap)
                if mode != "dense"
                else []
            )
        t3 = time.perf_counter()
        timings["dense"], timings["lexical"] = (t2 - t1) * 1e3, (t3 - t2) * 1e3
        if mode == "dense":
            ranked = [Hit(p, p.score) for p in dense]
        elif mode == "bm25":
            ranked = [Hit(p, p.score) for p in lexical]
        else:
            ranked = [Hit(p, s, e) for p, s, e in fuse(dense, lexical, cfg)]
        timings["fuse"] = (time.perf_counter() - t3) * 1e3
        chosen, arm = arm, None  # an experiment's arm (serve_app.experiments), else the ab_weights split
        if mode == "hybrid_rerank" and (chosen in self.rerankers or self.arms):
            unit = tenant_id if self.split_by == "tenant" else (request_id or text)
            arm = chosen if chosen in self.rerankers else assign_arm(self.arms, unit)
            ranked = await self._rerank(
                arm, tenant_id, text, ranked[: cfg.rerank_candidates], k, timings, usage
            )
        timings["total"] = (time.perf_counter() - t0) * 1e3
        if self.metrics is not None:
            self.metrics.inc("supportgraph_retrievals", tenant=tenant_id, mode=mode)
            self.metrics.observe(
                "supportgraph_retrieval_latency_ms", timings["total"], tenant=tenant_id, mode=mode
            )
        return RetrievalResult(text, mode, arm, ranked[:k], timings, usage)

    def _given(self, vector: Sequence[float] | None, space: str | None) -> np.ndarray | None:
        """The caller's vector when it is in this retriever's space (else None: embed the query)."""
        ours = getattr(self.embedder, "space", None)
        if vector is None or space is None or ours is None or space != ours:
            return None
        given = np.asarray(vector, np.float32)
        if given.shape != (self.embedder.dim,) or not np.isfinite(given).all():
            return None
        self.reused_vectors += 1
        return given

    async def _embed(self, text: str, usage: list[Usage]) -> np.ndarray:
        """The query's vector; what an API embedder charged for it goes to `usage`."""
        vectors, billed = await self.embedder.embed([text])
        if billed is not None:
            usage.append(billed)
        return np.asarray(vectors[0], np.float32)

    async def _rerank(
        self,
        arm: str,
        tenant_id: str,
        query: str,
        candidates: list[Hit],
        k: int,
        timings: dict[str, float],
        usage: list[Usage],
    ) -> list[Hit]:
        stats = self.arm_stats.setdefault(arm, ArmStats())
        stats.requests += 1
        start = time.perf_counter()
        try:
            order, billed = await self.rerankers[arm].rerank(
                query,
                [Candidate(f"{h.passage.heading}\n{h.passage.content}", h.evidence) for h in candidates],
                k,
                tenant_id,
            )
            if billed is not None:
                usage.append(billed)
        except Exception:  # a failing reranker degrades to the fused order, counted per arm
            stats.failures += 1
            return candidates
        finally:
            elapsed = (time.perf_counter() - start) * 1e3
            stats.latency_ms.append(elapsed)
            timings["rerank"] = elapsed
        return [Hit(candidates[i].passage, score, candidates[i].evidence) for i, score in order]
