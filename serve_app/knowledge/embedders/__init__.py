"""Embedders: one small protocol (`embed(texts) -> (vectors, Usage | None)`), one module per backend, a
registry from config names to classes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from serve_app.costs.usage import Usage


class Embedder(Protocol):
    """A text embedding backend. Its one method runs where it is called (blocking); the Retriever reaches
    it through an adapter (a worker thread, or a deployment handle): see knowledge/adapters.py."""

    name: str  # model identity, part of cache keys
    dim: int

    def embed(self, texts: list[str]) -> tuple[np.ndarray, Usage | None]:
        """float32 [len(texts), dim], L2-normalised rows, and what the call was billed (an API's tokens;
        None when nothing was billed: a self-hosted model, nothing to embed)."""
        ...


def create_embedder(backend: str, **options: Any) -> Embedder:
    if backend == "sentence-transformers":
        from serve_app.knowledge.embedders.local import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(**options)
    if backend == "openai-compatible":
        from serve_app.knowledge.embedders.api import OpenAICompatibleEmbedder

        return OpenAICompatibleEmbedder(**options)
    raise ValueError(f"unknown embedder backend {backend!r} (sentence-transformers, openai-compatible)")
