"""Embeddings from an OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, TEI, Voyage's
compatible route...), through the official `openai` SDK."""

from __future__ import annotations

import os

import numpy as np

from serve_app.costs.pricing import estimate_tokens
from serve_app.costs.usage import Usage


class OpenAICompatibleEmbedder:
    def __init__(
        self,
        model: str,
        base_url: str,
        dim: int,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 30.0,
        max_retries: int = 2,
    ):
        from openai import OpenAI

        self.client = OpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env, "unset"),
            timeout=timeout_s,
            max_retries=max_retries,
        )
        self.model = model
        self.name = f"api:{base_url}:{model}"
        self.dim = dim

    def embed(self, texts: list[str]) -> tuple[np.ndarray, Usage | None]:
        """The vectors and the input tokens the API billed for them (its `usage`; estimated from the
        text when a server reports none)."""
        if not texts:
            return np.empty((0, self.dim), np.float32), None
        response = self.client.embeddings.create(model=self.model, input=texts)
        rows = sorted(response.data, key=lambda d: d.index)
        vectors = np.asarray([r.embedding for r in rows], dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise ValueError(
                f"embedding API returned shape {vectors.shape}, expected ({len(texts)}, {self.dim})"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        usage = getattr(response, "usage", None)
        tokens = getattr(usage, "prompt_tokens", None) or getattr(usage, "total_tokens", None)
        if tokens is None:
            tokens = sum(estimate_tokens(t) for t in texts)
        return vectors / np.maximum(norms, 1e-12), Usage("embeddings", self.model, input_tokens=int(tokens))
