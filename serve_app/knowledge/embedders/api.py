"""Embeddings from an OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, TEI, Voyage's
compatible route...), through the official `openai` SDK."""

from __future__ import annotations

import os

import numpy as np


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

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), np.float32)
        response = self.client.embeddings.create(model=self.model, input=texts)
        rows = sorted(response.data, key=lambda d: d.index)
        vectors = np.asarray([r.embedding for r in rows], dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise ValueError(
                f"embedding API returned shape {vectors.shape}, expected ({len(texts)}, {self.dim})"
            )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
