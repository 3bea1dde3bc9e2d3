"""Knowledge deployments: Embeddings (batched, cached), Reranker (every configured backend, one per arm),
KnowledgeBase (Postgres pool + hybrid retrieval, calling the other two through handles)."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.db.database import Database
from serve_app.knowledge.factory import build_embedder, build_rerankers, retrieval_config
from serve_app.knowledge.rerankers import create_reranker
from serve_app.knowledge.retrieval import Retriever
from serve_app.metrics import Metrics
from serve_app.settings import Settings


class Embeddings:
    """Query embeddings: concurrent requests are embedded in one batch; an LRU serves repeats."""

    def __init__(self, settings: Settings):
        self.embedder = build_embedder(settings.knowledge.embedder)
        self.embedder.metrics = Metrics.ray()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed(self, texts: list[str]) -> list[list[float]]:
        # the model runs in a thread so the replica keeps accepting (and batching) requests meanwhile
        return (await asyncio.to_thread(self.embedder.embed, texts)).tolist()

    async def stats(self) -> dict[str, Any]:
        return {"model": self.embedder.name, "dim": self.embedder.dim, **self.embedder.stats()}


class Reranker:
    def __init__(self, settings: Settings):
        self.rerankers = build_rerankers(settings.knowledge)

    async def rerank(self, arm: str, query: str, documents: list[str], top_n: int) -> list[tuple[int, float]]:
        if arm not in self.rerankers:
            raise ValueError(f"unknown reranker arm {arm!r}")
        return await asyncio.to_thread(self.rerankers[arm].rerank, query, documents, top_n)


class _EmbeddingsHandle:
    def __init__(self, handle: DeploymentHandle, name: str, dim: int):
        self.handle, self.name, self.dim = handle, name, dim

    async def aembed(self, text: str) -> list[float]:
        return await self.handle.embed.remote(text)


class _RerankerHandle:
    def __init__(self, handle: DeploymentHandle, arm: str):
        self.handle, self.arm, self.name = handle, arm, f"arm:{arm}"

    async def arerank(self, query: str, documents: list[str], top_n: int) -> list[tuple[int, float]]:
        return await self.handle.rerank.remote(self.arm, query, documents, top_n)


class KnowledgeBase:
    def __init__(self, settings: Settings, embeddings: DeploymentHandle, reranker: DeploymentHandle):
        cfg = settings.knowledge
        self.db = Database(settings)
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

    async def search(
        self,
        tenant_id: str,
        query: str,
        mode: str = "hybrid_rerank",
        top_k: int | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        await self.db.ready()
        result = await self.retriever.search(tenant_id, query, mode=mode, top_k=top_k, request_id=request_id)
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
        return {"arms": arms, "embeddings": await self.embeddings.stats.remote()}
