"""Embedders: one small protocol, one module per backend, a registry from config names to classes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from serve_app.costs.usage import Usage


class Embedder(Protocol):
    name: str  # model identity, part of cache keys
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dim], L2-normalised rows."""
        ...


def embed_billed(embedder: Embedder, texts: list[str]) -> tuple[np.ndarray, Usage | None]:
    """Vectors, and what the call was billed when the embedder bills (an API: `embed_billed`)."""
    if hasattr(embedder, "embed_billed"):
        return embedder.embed_billed(texts)
    return embedder.embed(texts), None


def create_embedder(backend: str, **options: Any) -> Embedder:
    if backend == "sentence-transformers":
        from serve_app.knowledge.embedders.local import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(**options)
    if backend == "openai-compatible":
        from serve_app.knowledge.embedders.api import OpenAICompatibleEmbedder

        return OpenAICompatibleEmbedder(**options)
    raise ValueError(f"unknown embedder backend {backend!r} (sentence-transformers, openai-compatible)")
