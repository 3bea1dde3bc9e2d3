"""Rerankers: one protocol, one module per backend (none, learned, cross-encoder, Cohere), a registry,
and the A/B split that assigns a request to an arm by tenant or by request hash. Text rerankers score
(query, passage) pairs; evidence rerankers (`uses_evidence`, the learned one) score what the retrievers
said about each candidate and run in the Retriever's process."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from serve_app.stats import percentile

if TYPE_CHECKING:
    from serve_app.costs.usage import Usage


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, documents: list[str], top_n: int) -> list[tuple[int, float]]:
        """(index into documents, relevance) for the best `top_n`, best first."""
        ...


class NoReranker:
    """Keeps the fused order."""

    name = "none"

    def rerank(self, query: str, documents: list[str], top_n: int) -> list[tuple[int, float]]:
        return [(i, 1.0 / (1 + i)) for i in range(min(top_n, len(documents)))]


def rerank_billed(
    reranker: Reranker, query: str, documents: list[str], top_n: int
) -> tuple[list[tuple[int, float]], Usage | None]:
    """The ranking, and what it was billed when the backend bills (an API: `rerank_billed`)."""
    if hasattr(reranker, "rerank_billed"):
        return reranker.rerank_billed(query, documents, top_n)
    return reranker.rerank(query, documents, top_n), None


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
    raise ValueError(f"unknown reranker backend {backend!r} (none, learned, cross-encoder, cohere)")


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


def assign_arm(arms: dict[str, float], unit: str) -> str:
    """Deterministic weighted split: the same unit (tenant id or request id) always gets the same arm."""
    if not arms:
        raise ValueError("at least one arm")
    total = sum(arms.values())
    if total <= 0 or any(w < 0 for w in arms.values()):
        raise ValueError("arm weights must be >= 0 and not all 0")
    point = int.from_bytes(hashlib.blake2b(unit.encode(), digest_size=8).digest(), "big") / 2**64 * total
    for name, weight in sorted(arms.items()):
        if point < weight:
            return name
        point -= weight
    return sorted(arms)[-1]
