"""`supportgraph eval-router`: simulate weak -> strong escalation on logged answers of two models.

Input: RouteLLM-style CSVs (prompt, per-model correctness, per-model response text). Every prompt is
answered by the weak model first; a scorer rates that answer; below a threshold the prompt escalates to
the strong model (paying both attempts). Costs come from the pricing table with token counts estimated
from the texts; savings are against sending everything to the strong model.

Thresholds are chosen on the fit file (the cheapest one whose accuracy is >= `quality` x the strong
model's accuracy there) and applied unchanged to the test file, which is only reported. The test curve's
best point at that quality is printed too, the way RouteLLM reports its routers.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve_app.costs.pricing import PricingTable, estimate_tokens
from serve_app.routing.confidence import HEURISTIC_SCORERS, Embed, LearnedScorer, Scorer

WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"


@dataclass(frozen=True)
class Logged:
    prompt: str
    weak_response: str
    weak_ok: bool
    strong_ok: bool
    weak_cost: float
    strong_cost: float


def load_logged(
    path: Path,
    prices: PricingTable,
    weak_model: str,
    strong_model: str,
    weak_column: str = WEAK,
    strong_column: str = STRONG,
) -> list[Logged]:
    weak_price, strong_price = prices[weak_model], prices[strong_model]
    rows = []
    with path.open(newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), 2):
            try:
                prompt, weak_resp, strong_resp = (
                    row["prompt"],
                    row[f"{weak_column}_response"],
                    row[f"{strong_column}_response"],
                )
                weak_ok, strong_ok = row[weak_column] == "True", row[strong_column] == "True"
            except KeyError as exc:
                raise ValueError(f"{path}:{n}: missing column {exc}") from None
            p = estimate_tokens(prompt)
            rows.append(
                Logged(
                    prompt,
                    weak_resp,
                    weak_ok,
                    strong_ok,
                    weak_price.cost(p, estimate_tokens(weak_resp)),
                    strong_price.cost(p, estimate_tokens(strong_resp)),
                )
            )
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


@dataclass(frozen=True)
class Point:
    threshold: float
    escalated: float  # share of prompts sent to the strong model too
    accuracy: float
    cost: float
    saved: float  # 1 - cost / all-strong cost

    def summary(self) -> dict[str, float | None]:
        """Rounded figures for reports; an infinite threshold (escalate everything) becomes None."""
        out: dict[str, float | None] = {
            k: round(getattr(self, k), 4) for k in ("escalated", "accuracy", "saved")
        }
        out["threshold"] = None if np.isinf(self.threshold) else round(self.threshold, 4)
        return out


def evaluate_threshold(rows: list[Logged], scores: np.ndarray, threshold: float) -> Point:
    escalate = scores < threshold
    ok = np.where(escalate, [r.strong_ok for r in rows], [r.weak_ok for r in rows])
    weak = np.array([r.weak_cost for r in rows])
    strong = np.array([r.strong_cost for r in rows])
    cost = float(weak.sum() + strong[escalate].sum())
    return Point(threshold, float(escalate.mean()), float(ok.mean()), cost, 1 - cost / float(strong.sum()))


def curve(rows: list[Logged], scores: np.ndarray) -> list[Point]:
    thresholds = np.unique(np.r_[scores, np.inf])
    return [evaluate_threshold(rows, scores, float(t)) for t in thresholds]


def strong_accuracy(rows: list[Logged]) -> float:
    return float(np.mean([r.strong_ok for r in rows]))


def cheapest_at_quality(points: list[Point], target: float) -> Point | None:
    good = [p for p in points if p.accuracy >= target]
    return max(good, key=lambda p: (p.saved, p.accuracy)) if good else None


def score_rows(rows: list[Logged], scorer: Scorer | Callable[[Logged], float]) -> np.ndarray:
    if isinstance(scorer, LearnedScorer):  # batched: embeds all texts at once
        return scorer.scores([(r.prompt, r.weak_response, "") for r in rows])
    if hasattr(scorer, "score"):
        return np.array([scorer.score(r.prompt, r.weak_response) for r in rows])
    return np.array([scorer(r) for r in rows])


@dataclass(frozen=True)
class ScorerResult:
    scorer: str
    fit_threshold: float | None
    test_at_fit_threshold: Point | None
    test_best: Point | None
    test_curve: list[Point]


def fit_learned(
    fit: list[Logged], embed: Embed | None = None, embedder_name: str | None = None
) -> LearnedScorer:
    """The learned scorer on the fit file (with sentence-embedding components when `embed` is given)."""
    return LearnedScorer().fit(
        [(r.prompt, r.weak_response, "") for r in fit],
        [r.weak_ok for r in fit],
        embed=embed,
        embedder_name=embedder_name,
    )


def run(
    fit: list[Logged],
    test: list[Logged],
    quality: float = 0.95,
    seed: int = 0,
    learned: LearnedScorer | None = None,
) -> list[ScorerResult]:
    learned = learned or fit_learned(fit)
    rng = np.random.default_rng(seed)
    scorers: list[tuple[str, Callable[[list[Logged]], np.ndarray]]] = [
        *((s.name, lambda rows, s=s: score_rows(rows, s)) for s in HEURISTIC_SCORERS),
        ("learned", lambda rows: score_rows(rows, learned)),
        ("random", lambda rows: rng.random(len(rows))),
        ("oracle", lambda rows: np.array([float(r.weak_ok) for r in rows])),
    ]
    results = []
    for name, scores_of in scorers:
        fit_point = cheapest_at_quality(curve(fit, scores_of(fit)), quality * strong_accuracy(fit))
        test_scores = scores_of(test)
        test_curve = curve(test, test_scores)
        at_fit = evaluate_threshold(test, test_scores, fit_point.threshold) if fit_point else None
        best = cheapest_at_quality(test_curve, quality * strong_accuracy(test))
        results.append(
            ScorerResult(name, fit_point.threshold if fit_point else None, at_fit, best, test_curve)
        )
    return results


def plot(results: list[ScorerResult], test: list[Logged], path: Path, quality: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ax.plot([p.saved * 100 for p in r.test_curve], [p.accuracy for p in r.test_curve], label=r.scorer)
    strong = strong_accuracy(test)
    ax.axhline(strong, color="k", lw=0.8, ls=":", label="strong model")
    ax.axhline(quality * strong, color="r", lw=0.8, ls="--", label=f"{quality:.0%} of strong")
    ax.set_xlabel("cost saved vs all-strong (%)")
    ax.set_ylabel("accuracy (test)")
    ax.set_title("weak -> strong escalation by confidence scorer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
