"""A learned reranker over retrieval evidence: no text model, so it runs anywhere in microseconds.

RRF looks only at ranks, with one fixed discount. This reranker re-scores the fused candidates with a
linear model over what both retrievers said about each one (`Evidence.features()`: a log discount of its
BM25 rank and of its dense rank, and its best BM25 score and cosine relative to each list's top), fitted
as pairwise logistic regression (each relevant candidate against each other candidate of its query) on
judged queries: `supportgraph fit-reranker`. The bundled weights (`learned_fusion.json`) were fitted on
the aws_docs_qa dev split; fit your own on your tenants' judged queries.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from serve_app.costs.usage import Usage
    from serve_app.knowledge.rerankers import Candidate, Ranking

FEATURES = ("lexical_rank", "dense_rank", "lexical_share", "dense_share")
BUNDLED = Path(__file__).with_name("learned_fusion.json")


@dataclass(frozen=True)
class Evidence:
    """What the two retrievers said about one fused candidate (a document or a chunk): its rank in each
    list from 1 (None where the list missed it) and its best score relative to that list's top score.
    A candidate the dense list missed gets the list's last cosine (an upper bound of its own)."""

    lexical_rank: int | None
    dense_rank: int | None
    lexical_share: float
    dense_share: float

    def features(self) -> list[float]:
        def discount(rank: int | None) -> float:
            return 0.0 if rank is None else 1.0 / math.log2(1 + rank)

        return [discount(self.lexical_rank), discount(self.dense_rank), self.lexical_share, self.dense_share]


def evidence_for(
    lexical: list[tuple[object, float]], dense: list[tuple[object, float]]
) -> dict[object, Evidence]:
    """Evidence per key from two best-first lists of (key, score), each key at most once per list."""
    lex_top = lexical[0][1] if lexical else 0.0
    dense_top = dense[0][1] if dense else 0.0
    dense_floor = dense[-1][1] if dense else 0.0
    lex_at = {key: (rank, score) for rank, (key, score) in enumerate(lexical, 1)}
    dense_at = {key: (rank, score) for rank, (key, score) in enumerate(dense, 1)}

    def share(score: float, top: float) -> float:
        return score / top if top > 0 else 0.0

    out = {}
    for key in lex_at.keys() | dense_at.keys():
        lex_rank, lex_score = lex_at.get(key, (None, 0.0))
        dense_rank, dense_score = dense_at.get(key, (None, dense_floor))
        out[key] = Evidence(lex_rank, dense_rank, share(lex_score, lex_top), share(dense_score, dense_top))
    return out


class LearnedFusionReranker:
    """Ranks candidates by `weights . Evidence.features()` (their evidence; their texts are not read)."""

    def __init__(self, path: str | Path | None = None, weights: list[float] | None = None):
        if weights is None:
            source = Path(path) if path else BUNDLED
            data = json.loads(source.read_text())
            if tuple(data.get("features", ())) != FEATURES:
                raise ValueError(f"{source}: fitted on features {data.get('features')}, expected {FEATURES}")
            weights = data["weights"]
            self.name = f"learned:{source.name}"
        else:
            self.name = "learned"
        if len(weights) != len(FEATURES) or not all(math.isfinite(w) for w in weights):
            raise ValueError(f"need {len(FEATURES)} finite weights, got {weights}")
        self.weights = np.asarray(weights, dtype=float)

    def rerank_evidence(self, evidence: list[Evidence], top_n: int) -> list[tuple[int, float]]:
        """(index, score) of the best `top_n`, best first: the model itself, for fitting and evaluation."""
        if not evidence:
            return []
        scores = np.asarray([e.features() for e in evidence]) @ self.weights
        order = np.argsort(-scores, kind="stable")[:top_n]
        return [(int(i), float(scores[i])) for i in order]

    def rerank(self, query: str, candidates: list[Candidate], top_n: int) -> tuple[Ranking, Usage | None]:
        evidence = [c.evidence for c in candidates]
        if any(e is None for e in evidence):
            raise TypeError("the learned reranker ranks retrieval evidence: a candidate has none")
        return self.rerank_evidence(evidence, top_n), None


def fit_pairwise(
    queries: list[tuple[list[Evidence], list[bool]]], l2: float = 0.1, steps: int = 2000, lr: float = 0.2
) -> list[float]:
    """Weights that rank each query's relevant candidates above its others (pairwise logistic loss with
    L2). Queries without a relevant candidate teach nothing and are skipped."""
    pairs = []
    for evidence, relevant in queries:
        x = np.asarray([e.features() for e in evidence], dtype=float)
        rel = np.asarray(relevant, dtype=bool)
        if x.size == 0 or not rel.any() or rel.all():
            continue
        pairs.extend((g - x[~rel]) for g in x[rel])
    if not pairs:
        raise ValueError("no query has both a relevant and a non-relevant candidate")
    diffs = np.vstack(pairs)
    w = np.zeros(diffs.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(diffs @ w)))
        w -= lr * (-(diffs.T @ (1 - p)) / len(diffs) + l2 * w)
    return [float(v) for v in w / np.abs(w).sum()]


def save_weights(path: Path, weights: list[float], fitted_on: str) -> None:
    path.write_text(json.dumps({"features": FEATURES, "weights": weights, "fitted_on": fitted_on}, indent=1))
