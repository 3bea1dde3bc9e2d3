"""Offline A/B on an evaluation set: every reranker arm ranks the same queries, and the differences to the
first arm get paired bootstrap intervals (queries resampled with replacement, the same draw for both arms,
so what the arms share, easy and hard queries, cancels out)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from serve_app.costs.usage import Usage
from serve_app.stats import percentile
from supportgraph_tools.knowledge.evaluate import Query, corpus_id, metrics_for

COMPARED = ("R@5", "MRR@10", "nDCG@10")


def paired_bootstrap(
    base: Sequence[float], other: Sequence[float], draws: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Mean of other - base per query, its percentile bootstrap interval and a two-sided bootstrap p
    (twice the share of resampled differences on the far side of 0)."""
    diff = np.asarray(other, float) - np.asarray(base, float)
    if diff.size == 0:
        raise ValueError("no paired values")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (draws, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    p = 1.0 if not diff.any() else min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean()))
    return {"estimate": float(diff.mean()), "low": float(low), "high": float(high), "p_value": float(p)}


async def evaluate_arms(
    retriever: Any,
    tenant_id: str,
    queries: list[Query],
    qrels: dict[str, set[str]],
    arms: Sequence[str],
    passages: int = 60,
    bill: Callable[[Usage], None] | None = None,
    draws: int = 2000,
) -> dict[str, Any]:
    """Per arm: the mean metrics over the judged queries and the search latency (p50, p95 ms, with the
    query's embedding cached by an untimed dense search first); per arm after the first: paired
    bootstrap intervals of its difference to the first on R@5, MRR@10 and nDCG@10."""
    unknown = [a for a in arms if a not in retriever.rerankers]
    if unknown or len(arms) < 2:
        raise ValueError(f"--arms needs two or more configured rerankers; unknown: {unknown}")
    judged = [q for q in queries if q.id in qrels]
    if not judged:
        raise ValueError("none of the queries has relevance judgements")
    scores: dict[str, list[dict[str, float]]] = {a: [] for a in arms}
    took: dict[str, list[float]] = {a: [] for a in arms}
    for q in judged:
        # untimed, so every arm is timed with the query's embedding cached (the first would pay for it)
        warm = await retriever.search(tenant_id, q.text, mode="dense", top_k=1)
        for usage in warm.usage if bill else ():
            bill(usage)
        for arm in arms:
            started = time.perf_counter()
            result = await retriever.search(tenant_id, q.text, mode="hybrid_rerank", top_k=passages, arm=arm)
            took[arm].append((time.perf_counter() - started) * 1000)
            for usage in result.usage if bill else ():
                bill(usage)
            docs = list(dict.fromkeys(corpus_id(h.passage.source) for h in result.hits))
            scores[arm].append(metrics_for(docs, qrels[q.id]))
    summary = {
        arm: {name: round(statistics.fmean(m[name] for m in per), 4) for name in per[0]}
        for arm, per in scores.items()
    }
    control = arms[0]
    differences = {
        arm: {
            name: paired_bootstrap(
                [m[name] for m in scores[control]], [m[name] for m in scores[arm]], draws=draws
            )
            for name in COMPARED
        }
        for arm in arms[1:]
    }
    latency = {
        arm: {"p50": round(percentile(ms, 0.5), 2), "p95": round(percentile(ms, 0.95), 2)}
        for arm, ms in took.items()
    }
    return {
        "queries": len(judged),
        "control": control,
        "arms": summary,
        "vs_control": differences,
        "latency_ms": latency,
    }
