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
    name: str

    async def rerank(
        self, query: str, candidates: list[Candidate], top_n: int
    ) -> tuple[Ranking, Usage | None]: ...


class ThreadedEmbedder:
    """An in-process embedder, run in a worker thread so the event loop keeps serving."""

    def __init__(self, embedder: Embedder):
        self.embedder, self.name, self.dim = embedder, embedder.name, embedder.dim

    async def embed(self, texts: list[str]) -> tuple[np.ndarray, Usage | None]:
        return await asyncio.to_thread(self.embedder.embed, texts)


class HandleEmbedder:
    """The `Embeddings` deployment: one call per text (the deployment batches concurrent calls), each
    answered with its vector and its share of the batch's bill."""

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

    async def rerank(
        self, query: str, candidates: list[Candidate], top_n: int
    ) -> tuple[Ranking, Usage | None]:
        return self.reranker.rerank(query, candidates, top_n)


class ThreadedReranker(InlineReranker):
    """An in-process text reranker (a model, an SDK call), run in a worker thread."""

    async def rerank(
        self, query: str, candidates: list[Candidate], top_n: int
    ) -> tuple[Ranking, Usage | None]:
        return await asyncio.to_thread(self.reranker.rerank, query, candidates, top_n)


class HandleReranker:
    """One arm of the `RerankerArms` deployment."""

    def __init__(self, handle: DeploymentHandle, arm: str):
        self.handle, self.arm, self.name = handle, arm, f"arm:{arm}"

    async def rerank(
        self, query: str, candidates: list[Candidate], top_n: int
    ) -> tuple[Ranking, Usage | None]:
        return await self.handle.rerank.remote(self.arm, query, candidates, top_n)
