"""How the Retriever reaches its embedder and its rerankers: the backends' one signature, awaited.

A backend's `embed` / `rerank` blocks where it runs. The Retriever awaits the same signature through an
adapter that says where the backend runs: inline in the caller's process (the learned reranker: a few
multiplications), in a worker thread (a model or an SDK call in this process), or in another deployment
through its handle (`Embeddings`, `RerankerArms`). knowledge/factory.py picks the adapter for each.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

import numpy as np

from serve_app.costs.usage import Usage

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

    from serve_app.knowledge.embedders import Embedder
    from serve_app.knowledge.rerankers import Candidate, Ranking, Reranker


class AsyncEmbedder(Protocol):
    name: str
    dim: int

    async def embed(self, texts: list[str]) -> tuple[np.ndarray, Usage | None]: ...


class AsyncReranker(Protocol):
    """`tenant_id`: whose search it is (a per-tenant backend, `adapted`, ranks with that tenant's model;
    the others ignore it)."""

    name: str

    async def rerank(
        self, query: str, candidates: list[Candidate], top_n: int, tenant_id: str | None = None
    ) -> tuple[Ranking, Usage | None]: ...


class ThreadedEmbedder:
    """An in-process embedder, run in a worker thread so the event loop keeps serving."""

    space: str | None = None  # settings.EmbedderSettings.space() when built from them

    def __init__(self, embedder: Embedder):
        self.embedder, self.name, self.dim = embedder, embedder.name, embedder.dim

    async def embed(self, texts: list[str]) -> tuple[np.ndarray, Usage | None]:
        return await asyncio.to_thread(self.embedder.embed, texts)


class HandleEmbedder:
    """The `Embeddings` deployment: one call per text (the deployment batches concurrent calls), each
    answered with its vector and its share of the batch's bill."""

    space: str | None = None  # settings.EmbedderSettings.space() when built from them

    def __init__(self, handle: DeploymentHandle, name: str, dim: int):
        self.handle, self.name, self.dim = handle, name, dim

    async def embed(self, texts: list[str]) -> tuple[np.ndarray, Usage | None]:
        replies = await asyncio.gather(*(self.handle.embed.remote(text) for text in texts))
        vectors = np.asarray([vector for vector, _ in replies], np.float32).reshape(len(texts), self.dim)
        billed = [usage for _, usage in replies if usage is not None]
        if not billed:
            return vectors, None
        first = billed[0]
        return vectors, Usage(
            first.service,
            first.model,
            sum(u.input_tokens for u in billed),
            sum(u.searches for u in billed),
        )


class InlineReranker:
    """A reranker cheap enough to run on the caller's event loop (the learned one: microseconds)."""

    def __init__(self, reranker: Reranker):
        self.reranker, self.name = reranker, reranker.name

    def _call(
        self, query: str, candidates: list[Candidate], top_n: int, tenant_id: str | None
    ) -> tuple[Ranking, Usage | None]:
        per_tenant = getattr(self.reranker, "rerank_for", None)
        if per_tenant is not None:
            if tenant_id is None:
                raise TypeError(f"reranker {self.name} ranks per tenant: the search's tenant is needed")
            return per_tenant(tenant_id, query, candidates, top_n)
        return self.reranker.rerank(query, candidates, top_n)

    async def rerank(
        self, query: str, candidates: list[Candidate], top_n: int, tenant_id: str | None = None
    ) -> tuple[Ranking, Usage | None]:
        return self._call(query, candidates, top_n, tenant_id)


class ThreadedReranker(InlineReranker):
    """An in-process text reranker (a model, an SDK call), run in a worker thread."""

    async def rerank(
        self, query: str, candidates: list[Candidate], top_n: int, tenant_id: str | None = None
    ) -> tuple[Ranking, Usage | None]:
        return await asyncio.to_thread(self._call, query, candidates, top_n, tenant_id)


class HandleReranker:
    """One arm of the `RerankerArms` deployment. A per-tenant arm sends the tenant as the request's
    multiplexed model id, so Serve routes it to a replica that has the tenant's model loaded."""

    def __init__(self, handle: DeploymentHandle, arm: str, per_tenant: bool = False):
        self.handle, self.arm, self.name, self.per_tenant = handle, arm, f"arm:{arm}", per_tenant

    async def rerank(
        self, query: str, candidates: list[Candidate], top_n: int, tenant_id: str | None = None
    ) -> tuple[Ranking, Usage | None]:
        handle = self.handle
        if self.per_tenant and tenant_id:
            handle = handle.options(multiplexed_model_id=tenant_id)
        return await handle.rerank.remote(self.arm, query, candidates, top_n)
