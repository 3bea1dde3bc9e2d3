"""Cohere Rerank through the official `cohere` SDK (v2 client); `base_url` points it at a proxy or a
local server speaking the same wire format (tests)."""

from __future__ import annotations

import os


class CohereReranker:
    def __init__(
        self,
        model: str = "rerank-v3.5",
        api_key_env: str = "CO_API_KEY",
        base_url: str | None = None,
        timeout_s: float = 10.0,
    ):
        import cohere

        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"Cohere reranker needs an API key in ${api_key_env}")
        self.client = cohere.ClientV2(api_key=key, base_url=base_url, timeout=timeout_s)
        self.model = model
        self.name = f"cohere:{model}"

    def rerank(self, query: str, documents: list[str], top_n: int) -> list[tuple[int, float]]:
        if not documents:
            return []
        response = self.client.rerank(
            model=self.model, query=query, documents=documents, top_n=min(top_n, len(documents))
        )
        return [(r.index, float(r.relevance_score)) for r in response.results]
