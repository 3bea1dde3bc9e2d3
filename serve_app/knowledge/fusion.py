"""Reciprocal Rank Fusion: score(d) = sum over rankings of weight / (k + rank), ranks from 1."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def rrf(
    rankings: Sequence[Sequence[T]],
    key: Callable[[T], Hashable] = lambda item: item,
    k: int = 60,
    weights: Sequence[float] | None = None,
) -> list[tuple[T, float]]:
    """Fuse ranked lists; items equal by `key` merge (first seen kept). Best first, ties by best rank."""
    weights = weights or [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    scores: dict[Hashable, float] = {}
    items: dict[Hashable, T] = {}
    best_rank: dict[Hashable, int] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            ident = key(item)
            scores[ident] = scores.get(ident, 0.0) + weight / (k + rank)
            items.setdefault(ident, item)
            best_rank[ident] = min(rank, best_rank.get(ident, rank))
    order = sorted(scores, key=lambda ident: (-scores[ident], best_rank[ident]))
    return [(items[ident], scores[ident]) for ident in order]
