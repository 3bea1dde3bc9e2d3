"""Cohere Rerank through the official `cohere` SDK (v2 client); `base_url` points it at a proxy or a
local server speaking the same wire format (tests)."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from serve_app.costs.usage import Usage
from serve_app.settings import COHERE_DEFAULT_MODEL

if TYPE_CHECKING:
    from serve_app.knowledge.rerankers import Candidate, Ranking


class CohereReranker:
    def __init__(
        self,
        model: str = COHERE_DEFAULT_MODEL,
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

    def rerank(self, query: str, candidates: list[Candidate], top_n: int) -> tuple[Ranking, Usage | None]:
        """The ranking and the search units Cohere billed for it (from the response's meta; when a
        server leaves them out, one unit per 100 documents, Cohere's own rule)."""
        documents = [c.text for c in candidates]
        if not documents:
            return [], None
        response = self.client.rerank(
            model=self.model, query=query, documents=documents, top_n=min(top_n, len(documents))
        )
        billed = getattr(getattr(response.meta, "billed_units", None), "search_units", None)
        searches = int(billed) if billed is not None else math.ceil(len(documents) / 100)
        order = [(r.index, float(r.relevance_score)) for r in response.results]
        return order, Usage("rerank", self.model, searches=searches)
