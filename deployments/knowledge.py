"""Knowledge deployments: Embeddings (batched, cached), RerankerArms (every configured backend, one per
arm; the `adapted` arm's per-tenant models loaded through Serve's model multiplexing), KnowledgeBase
(Postgres pool + hybrid retrieval, calling the other two through handles; what a billed embedder or
reranker charged for a search goes to the tenant's cost ledger, written before the search returns).
Each is built from its own settings section; factory.build_retriever wires the KnowledgeBase's
retriever."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.costs.ledger import CostLedger
from serve_app.costs.usage import Usage
from serve_app.db.database import Database
from serve_app.experiments.config import Experiments, default_reranker_experiment
from serve_app.knowledge.factory import build_embedder, build_rerankers, build_retriever
from serve_app.knowledge.rerankers import Candidate, Ranking
from serve_app.knowledge.rerankers.adapted import AdaptedReranker, TenantModel
from serve_app.metrics import Metrics
from serve_app.settings import DatabaseSettings, EmbedderSettings, KnowledgeSettings, PricingSettings


class Embeddings:
    """Query embeddings: concurrent requests are embedded in one batch; an LRU serves repeats. Each
    request gets its vector and its share of what an API embedder billed for the batch."""

    def __init__(self, embedder: EmbedderSettings):
        self.embedder = build_embedder(embedder)
        self.embedder.metrics = Metrics.ray()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed(self, texts: list[str]) -> list[tuple[list[float], Usage | None]]:
        # the model runs in a thread so the replica keeps accepting (and batching) requests meanwhile
        vectors, usage = await asyncio.to_thread(self.embedder.embed_each, texts)
        return list(zip(vectors.tolist(), usage, strict=True))

    async def stats(self) -> dict[str, Any]:
        return {"model": self.embedder.name, "dim": self.embedder.dim, **self.embedder.stats()}


class RerankerArms:
    """Every configured reranker, by arm name (its Serve deployment is named `Reranker`).

    A per-tenant arm (`adapted`) gets the tenant as the request's multiplexed model id: the replica
    loads that tenant's model through `tenant_model` (Serve keeps the last MODELS_PER_REPLICA per
    replica, least recently used out first, and routes a tenant's requests to a replica holding its
    model). A tenant without a model is never loaded: its request is ranked by the arm's fallback."""

    MODELS_PER_REPLICA = 4

    def __init__(self, knowledge: KnowledgeSettings, state_dir: Path | None = None):
        self.rerankers = build_rerankers(knowledge, state_dir)

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def tenant_model(self, tenant_id: str) -> TenantModel:
        """Serve's loader for one model id (a tenant); every adapted arm shares the tenant's model."""
        adapted = next(r for r in self.rerankers.values() if isinstance(r, AdaptedReranker))
        return await asyncio.to_thread(adapted.load, tenant_id)

    async def rerank(
        self, arm: str, query: str, candidates: list[Candidate], top_n: int
    ) -> tuple[Ranking, Usage | None]:
        """The ranking, and what the backend billed for it (None for self-hosted ones)."""
        if arm not in self.rerankers:
            raise ValueError(f"unknown reranker arm {arm!r}")
        reranker = self.rerankers[arm]
        if isinstance(reranker, AdaptedReranker):
            model = await self._adapted_model(reranker, serve.get_multiplexed_model_id())
            return await asyncio.to_thread(reranker.rerank_with, model, query, candidates, top_n)
        return await asyncio.to_thread(reranker.rerank, query, candidates, top_n)

    async def _adapted_model(self, reranker: AdaptedReranker, tenant_id: str) -> TenantModel | None:
        """The tenant's model (None: no tenant on the request, or no model for it: the fallback ranks).
        A model retrained since it was loaded is read again in place."""
        if not tenant_id or not reranker.has_model(tenant_id):
            return None
        model = await self.tenant_model(tenant_id)
        return await asyncio.to_thread(model.refreshed)


class KnowledgeBase:
    def __init__(
        self,
        knowledge: KnowledgeSettings,
        db: DatabaseSettings,
        state_dir: Path,
        pricing: PricingSettings,
        embeddings: DeploymentHandle,
        reranker_arms: DeploymentHandle,
    ):
        self.db = Database(db, state_dir)
        self.retriever = build_retriever(
            self.db, knowledge, embeddings=embeddings, reranker_arms=reranker_arms
        )
        self.retriever.metrics = Metrics.ray()
        self.embeddings = embeddings
        self.prices = pricing.load()
        self.ledger = CostLedger(self.db)
        default = default_reranker_experiment(knowledge.ab_weights, knowledge.ab_split_by)
        self.experiments = Experiments((), knowledge.rerankers, default)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`{"experiments": [...]}` (serve_app.experiments): which reranker arm a request gets."""
        self.experiments.configure(user_config.get("experiments", ()))

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
        arm: str | None = None,
        query_vector: list[float] | None = None,
        vector_space: str | None = None,
    ) -> dict[str, Any]:
        """`arm`: the reranker arm the caller's experiment assignment chose; else a configured reranker
        experiment's arm for this tenant or request, else the `ab_weights` split. `query_vector`: the
        query's embedding the caller already made (the Router's, for the turn's intent) in
        `vector_space` (`EmbedderSettings.space()`); used when it is the configured embedder's."""
        await self._ready()
        if arm is None and self.experiments.items:
            unit = request_id or str(uuid.uuid4())
            arm = self.experiments.reranker_arm(self.experiments.assign(tenant_id, None, unit))
        result = await self.retriever.search(
            tenant_id,
            query,
            mode=mode,
            top_k=top_k,
            request_id=request_id,
            arm=arm,
            vector=query_vector,
            vector_space=vector_space,
        )
        billed_for = _request_uuid(request_id)
        for usage in result.usage:
            self.ledger.record(usage.event(tenant_id, self.prices, request_id=billed_for))
        if result.usage:
            await self.ledger.durable(billed_for)  # the search returns once what it billed is written
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
        ledger = {"written": self.ledger.written, "pending": self.ledger.pending, "late": self.ledger.late}
        return {
            "arms": arms,
            "embeddings": await self.embeddings.stats.remote(),
            "ledger": ledger,
            "reused_query_vectors": self.retriever.reused_vectors,  # the caller's embedding, not re-made
        }

    async def __del__(self) -> None:
        await self.ledger.stop()
        await self.db.close()


def _request_uuid(request_id: str | None) -> uuid.UUID | None:
    """The caller's request id when it is a UUID, so a search's billed calls can be joined to its request."""
    try:
        return uuid.UUID(request_id) if request_id else None
    except ValueError:
        return None
