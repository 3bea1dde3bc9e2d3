"""Knowledge deployments: Embeddings (batched, cached), Reranker (every configured backend, one per arm),
KnowledgeBase (Postgres pool + hybrid retrieval, calling the other two through handles; what a billed
embedder or reranker charged for a search goes to the tenant's cost ledger)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.costs.ledger import CostLedger
from serve_app.costs.usage import Usage
from serve_app.db.database import Database
from serve_app.knowledge.factory import build_embedder, build_rerankers, retrieval_config
from serve_app.knowledge.rerankers import create_reranker, rerank_billed
from serve_app.knowledge.retrieval import Retriever
from serve_app.metrics import Metrics
from serve_app.settings import Settings


class Embeddings:
    """Query embeddings: concurrent requests are embedded in one batch; an LRU serves repeats. Each
    request gets its vector and its share of what an API embedder billed for the batch."""

    def __init__(self, settings: Settings):
        self.embedder = build_embedder(settings.knowledge.embedder)
        self.embedder.metrics = Metrics.ray()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed(self, texts: list[str]) -> list[tuple[list[float], Usage | None]]:
        # the model runs in a thread so the replica keeps accepting (and batching) requests meanwhile
        vectors, usage = await asyncio.to_thread(self.embedder.embed_each, texts)
        return list(zip(vectors.tolist(), usage, strict=True))

    async def stats(self) -> dict[str, Any]:
        return {"model": self.embedder.name, "dim": self.embedder.dim, **self.embedder.stats()}


class Reranker:
    def __init__(self, settings: Settings):
        self.rerankers = build_rerankers(settings.knowledge)

    async def rerank(
        self, arm: str, query: str, documents: list[str], top_n: int
    ) -> tuple[list[tuple[int, float]], Usage | None]:
        """The ranking, and what the backend billed for it (None for self-hosted ones)."""
        if arm not in self.rerankers:
            raise ValueError(f"unknown reranker arm {arm!r}")
        return await asyncio.to_thread(rerank_billed, self.rerankers[arm], query, documents, top_n)


class _EmbeddingsHandle:
    def __init__(self, handle: DeploymentHandle, name: str, dim: int):
        self.handle, self.name, self.dim = handle, name, dim

    async def aembed_billed(self, text: str) -> tuple[list[float], Usage | None]:
        return await self.handle.embed.remote(text)


class _RerankerHandle:
    def __init__(self, handle: DeploymentHandle, arm: str):
        self.handle, self.arm, self.name = handle, arm, f"arm:{arm}"

    async def arerank(
        self, query: str, documents: list[str], top_n: int
    ) -> tuple[list[tuple[int, float]], Usage | None]:
        return await self.handle.rerank.remote(self.arm, query, documents, top_n)


class KnowledgeBase:
    def __init__(self, settings: Settings, embeddings: DeploymentHandle, reranker: DeploymentHandle):
        cfg = settings.knowledge
        self.db = Database.of(settings)
        self.retriever = Retriever(
            self.db,
            _EmbeddingsHandle(embeddings, cfg.embedder.model, cfg.embedder.dim),
            {  # evidence rerankers are a few multiplications: local, not a round trip
                arm: create_reranker(r.backend, **r.options())
                if r.backend == "learned"
                else _RerankerHandle(reranker, arm)
                for arm, r in cfg.rerankers.items()
            },
            cfg.ab_weights,
            cfg.ab_split_by,
            retrieval_config(cfg),
        )
        self.retriever.metrics = Metrics.ray()
        self.embeddings = embeddings
        self.prices = settings.pricing.load()
        self.ledger = CostLedger(self.db)

    async def _ready(self) -> None:
        await self.db.ready()
        self.ledger.start()

    async def search(
        self,
        tenant_id: str,
        query: str,
        mode: str = "hybrid_rerank",
        top_k: int | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        await self._ready()
        result = await self.retriever.search(tenant_id, query, mode=mode, top_k=top_k, request_id=request_id)
        billed_for = _request_uuid(request_id)
        for usage in result.usage:
            self.ledger.record(usage.event(tenant_id, self.prices, request_id=billed_for))
        return {
            "query": result.query,
            "mode": result.mode,
            "arm": result.arm,
            "passages": [
                {
                    "citation": hit.citation(n),
                    "source": hit.passage.source,
                    "title": hit.passage.title,
                    "heading": hit.passage.heading,
                    "content": hit.passage.content,
                    "score": hit.score,
                }
                for n, hit in enumerate(result.hits, 1)
            ],
            "timings_ms": result.timings_ms,
        }

    async def stats(self) -> dict[str, Any]:
        arms = {name: s.summary() for name, s in self.retriever.arm_stats.items()}
        ledger = {"written": self.ledger.written, "pending": self.ledger.pending}
        return {"arms": arms, "embeddings": await self.embeddings.stats.remote(), "ledger": ledger}

    async def __del__(self) -> None:
        await self.ledger.stop()
        await self.db.close()


def _request_uuid(request_id: str | None) -> uuid.UUID | None:
    """The caller's request id when it is a UUID, so a search's billed calls can be joined to its request."""
    try:
        return uuid.UUID(request_id) if request_id else None
    except ValueError:
        return None
