"""Rerankers: one protocol (`rerank(query, candidates, top_n) -> (ranking, Usage | None)`), one module
per backend (none, learned, cross-encoder, Cohere, adapted: a per-tenant cross-encoder, which ranks
through `rerank_for(tenant_id, ...)`), a registry, and the A/B split that assigns a request to an arm by
tenant or by request hash (`assign_arm`, owned by `serve_app.experiments.config`). Each candidate carries
its text and its retrieval evidence: text rerankers score (query, text) pairs, the learned one scores what
the retrievers said about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from serve_app.experiments.config import assign_arm  # noqa: F401 (re-exported)
from serve_app.stats import percentile

if TYPE_CHECKING:
    from serve_app.costs.usage import Usage
    from serve_app.knowledge.rerankers.learned import Evidence


@dataclass(frozen=True)
class Candidate:
    """One fused hit to rerank: its text (heading and content), and what the two retrievers said about
    it (None outside fusion)."""

    text: str
    evidence: Evidence | None = None


Ranking = list[tuple[int, float]]  # (index into the candidates, relevance), best first


class Reranker(Protocol):
    """A rerank backend. Its one method runs where it is called (blocking); the Retriever reaches it
    through an adapter (inline, a worker thread, or a deployment handle): see knowledge/adapters.py."""

    name: str

    def rerank(self, query: str, candidates: list[Candidate], top_n: int) -> tuple[Ranking, Usage | None]:
        """The best `top_n` candidates, and what the call was billed (an API's searches; else None)."""
        ...


class NoReranker:
    """Keeps the fused order."""

    name = "none"

    def rerank(self, query: str, candidates: list[Candidate], top_n: int) -> tuple[Ranking, Usage | None]:
        return [(i, 1.0 / (1 + i)) for i in range(min(top_n, len(candidates)))], None


def create_reranker(backend: str, **options: Any) -> Reranker:
    if backend == "none":
        return NoReranker()
    if backend == "learned":
        from serve_app.knowledge.rerankers.learned import LearnedFusionReranker

        return LearnedFusionReranker(**options)
    if backend == "cross-encoder":
        from serve_app.knowledge.rerankers.cross_encoder import CrossEncoderReranker

        return CrossEncoderReranker(**options)
    if backend == "cohere":
        from serve_app.knowledge.rerankers.cohere import CohereReranker

        return CohereReranker(**options)
    if backend == "adapted":
        from serve_app.knowledge.rerankers.adapted import AdaptedReranker

        return AdaptedReranker(**options)
    raise ValueError(f"unknown reranker backend {backend!r} (none, learned, cross-encoder, cohere, adapted)")


@dataclass
class ArmStats:
    requests: int = 0
    failures: int = 0
    latency_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "p50_ms": percentile(self.latency_ms, 0.5),
            "p95_ms": percentile(self.latency_ms, 0.95),
        }
