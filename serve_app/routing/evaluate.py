"""`supportgraph eval-router`: simulate weak -> strong escalation on logged answers of two models.

Input: RouteLLM-style CSVs (prompt, per-model correctness, per-model response text). Every prompt is
answered by the weak model first; a scorer rates that answer; below a threshold the prompt escalates to
the strong model (paying both attempts). Costs come from the pricing table with token counts estimated
from the texts; savings are against sending everything to the strong model.

Thresholds are chosen on the fit file (the cheapest one whose accuracy is >= `quality` x the strong
model's accuracy there) and applied unchanged to the test file, which is only reported. The test curve's
best point at that quality is printed too, the way RouteLLM reports its routers.

The guaranteed threshold (`risk`): Learn then Test on the fit file with the wrong-answer rate as the
loss and alpha = 1 - quality x the strong model's accuracy on the fit file: the cheapest threshold
whose exact binomial upper bound (level 1 - delta) stays <= alpha, thresholds tested highest first. A
scorer fitted on data (the learned one) is calibrated on out-of-fold scores (5-fold cross-fitting on
the fit file), never on scores of the rows it was fitted on. How often the bar holds is measured over
random resplits of the whole file (fit-sized calibration part, the rest to test), refitting the learned
scorer on each calibration part: the guarantee says >= 1 - delta of them.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve_app.costs.pricing import PricingTable, estimate_tokens
from serve_app.routing.confidence import HEURISTIC_SCORERS, Embed, LearnedScorer, Scorer
from serve_app.routing.risk import Bound, Calibrated, calibrate

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
class Guaranteed:
    """The guaranteed threshold of one scorer: chosen on the fit file, reported on the test file."""

    calibrated: Calibrated
    expected: Point  # on the calibration (fit) data
    test: Point
    held: bool  # test accuracy >= quality x the strong model's test accuracy
    resplit_hold_rate: float | None  # share of random resplits where the bar held on the test part
    resplit_saved: float | None  # mean test saving over those resplits

    def summary(self) -> dict[str, float | bool | None]:
        threshold = self.calibrated.threshold
        return {
            "threshold": None if np.isinf(threshold) else round(threshold, 4),
            "saved": round(self.test.saved, 4),
            "accuracy": round(self.test.accuracy, 4),
            "held": self.held,
            "resplit_hold_rate": None if self.resplit_hold_rate is None else round(self.resplit_hold_rate, 4),
            "expected_saved": round(self.expected.saved, 4),
            "escalated": round(self.test.escalated, 4),
            "ucb_error": round(self.calibrated.ucb, 4),
            "alpha": round(self.calibrated.alpha, 4),
            "resplit_mean_saved": None if self.resplit_saved is None else round(self.resplit_saved, 4),
        }


@dataclass(frozen=True)
class ScorerResult:
    scorer: str
    fit_threshold: float | None
    test_at_fit_threshold: Point | None
    test_best: Point | None
    test_curve: list[Point]
    guaranteed: Guaranteed | None = None


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


def guaranteed_threshold(
    rows: list[Logged], scores: np.ndarray, quality: float, delta: float, bound: Bound = "binomial"
) -> Calibrated:
    """The cheapest threshold whose wrong-answer rate is <= 1 - quality x strong accuracy (of `rows`)
    with probability >= 1 - delta."""
    weak_wrong = np.array([not r.weak_ok for r in rows])
    strong_wrong = np.array([not r.strong_ok for r in rows])
    alpha = 1 - quality * strong_accuracy(rows)
    return calibrate(scores, weak_wrong, strong_wrong, alpha, delta, bound)


def held(rows: list[Logged], point: Point, quality: float) -> bool:
    return point.accuracy >= quality * strong_accuracy(rows) - 1e-12


# (calibration rows, test rows) -> (calibration scores, test scores), for one split of the rows
SplitScores = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def resplits(
    rows: list[Logged],
    split_scores: SplitScores,
    n_fit: int,
    quality: float,
    delta: float,
    times: int,
    seed: int = 0,
    bound: Bound = "binomial",
) -> tuple[float, float]:
    """(share of random resplits where the guaranteed threshold held the bar on the test part, mean test
    saving): `rows` shuffled, the first `n_fit` calibrate, the rest test."""
    rng = np.random.default_rng(seed)
    hits, saved = 0, []
    for _ in range(times):
        order = rng.permutation(len(rows))
        cal, test = order[:n_fit], order[n_fit:]
        cal_scores, test_scores = split_scores(cal, test)
        cal_rows, test_rows = [rows[i] for i in cal], [rows[i] for i in test]
        chosen = guaranteed_threshold(cal_rows, cal_scores, quality, delta, bound)
        point = evaluate_threshold(test_rows, test_scores, chosen.threshold)
        hits += held(test_rows, point, quality)
        saved.append(point.saved)
    return hits / times, float(np.mean(saved))


class _Memo(LearnedScorer):
    """A learned scorer whose text features and embeddings come from tables (resplits refit it often)."""

    def __init__(self, table: dict[tuple[str, str], np.ndarray], embed: Embed | None, name: str | None):
        super().__init__(embed=embed, embedder_name=name)
        self.table = table

    def _features(self, rows: list[tuple[str, str, str]]) -> np.ndarray:
        return np.stack([self.table[r[0], r[1]] for r in rows])


def cached_embed(embed: Embed, rows: list[Logged]) -> Embed:
    """`embed` with the questions and answer tails of `rows` embedded once, up front (others on demand)."""
    from serve_app.routing.confidence import RESPONSE_TAIL

    texts = sorted({r.prompt for r in rows} | {r.weak_response[-RESPONSE_TAIL:] for r in rows})
    vectors = dict(zip(texts, np.asarray(embed(texts), dtype=float), strict=True))

    def lookup(batch: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(batch) if t not in vectors]
        if missing:
            vectors.update(zip(missing, np.asarray(embed(missing), dtype=float), strict=True))
        return np.stack([vectors[t] for t in batch])

    return lookup


def learned_split_scores(
    rows: list[Logged], embed: Embed | None = None, embedder_name: str | None = None, folds: int = 5
) -> SplitScores:
    """Scores for a split: out-of-fold scores (`folds`-fold cross-fitting) on the calibration rows, the
    scorer fitted on all calibration rows on the test rows."""
    from serve_app.routing.confidence import features

    table = {(r.prompt, r.weak_response): features(r.prompt, r.weak_response) for r in rows}
    if embed is not None:
        embed = cached_embed(embed, rows)
    triples = [(r.prompt, r.weak_response, "") for r in rows]
    labels = np.array([r.weak_ok for r in rows])

    def fitted(idx: np.ndarray, projections: dict | None = None) -> LearnedScorer:
        return _Memo(table, embed, embedder_name).fit(
            [triples[i] for i in idx],
            list(labels[idx]),
            embed=embed,
            embedder_name=embedder_name,
            projections=projections,
        )

    def split(cal: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        whole = fitted(cal)
        fold = np.arange(len(cal)) % folds
        cal_scores = np.zeros(len(cal))
        for k in range(folds):
            held_out = fold == k
            model = fitted(cal[~held_out], whole.projections or None)  # label-free components shared
            cal_scores[held_out] = model.scores([triples[i] for i in cal[held_out]])
        return cal_scores, whole.scores([triples[i] for i in test])

    return split


def run(
    fit: list[Logged],
    test: list[Logged],
    quality: float = 0.95,
    seed: int = 0,
    learned: LearnedScorer | None = None,
    delta: float = 0.1,
    resplit_times: int = 0,
    embed: Embed | None = None,
    embedder_name: str | None = None,
    bound: Bound = "binomial",
) -> list[ScorerResult]:
    """Each scorer's fit-file threshold on the test file, the test curve's best point at the bar, and
    the guaranteed threshold (with its resplit hold rate when `resplit_times` > 0). `embed` is the
    learned scorer's embedder (for its cross-fitting and resplits)."""
    learned = learned or fit_learned(fit, embed, embedder_name)
    rng = np.random.default_rng(seed)
    everything = fit + test
    learned_split = learned_split_scores(everything, embed, embedder_name)
    fit_idx, test_idx = np.arange(len(fit)), np.arange(len(fit), len(everything))
    scorers: list[tuple[str, Callable[[list[Logged]], np.ndarray]]] = [
        *((s.name, lambda rows, s=s: score_rows(rows, s)) for s in HEURISTIC_SCORERS),
        ("learned", lambda rows: score_rows(rows, learned)),
        ("random", lambda rows: rng.random(len(rows))),
        ("oracle", lambda rows: np.array([float(r.weak_ok) for r in rows])),
    ]
    results = []
    for name, scores_of in scorers:
        fit_scores = scores_of(fit)
        fit_point = cheapest_at_quality(curve(fit, fit_scores), quality * strong_accuracy(fit))
        test_scores = scores_of(test)
        test_curve = curve(test, test_scores)
        at_fit = evaluate_threshold(test, test_scores, fit_point.threshold) if fit_point else None
        best = cheapest_at_quality(test_curve, quality * strong_accuracy(test))
        if name == "learned":  # calibrated on out-of-fold scores, never on its own training rows
            split_scores = learned_split
            fit_scores = split_scores(fit_idx, test_idx)[0]
        else:
            all_scores = np.r_[fit_scores, test_scores]

            def split_scores(cal, rest, all_scores=all_scores):
                return all_scores[cal], all_scores[rest]

        chosen = guaranteed_threshold(fit, fit_scores, quality, delta, bound)
        at_chosen = evaluate_threshold(test, test_scores, chosen.threshold)
        rate, mean_saved = (
            resplits(everything, split_scores, len(fit), quality, delta, resplit_times, seed, bound)
            if resplit_times
            else (None, None)
        )
        guaranteed = Guaranteed(
            chosen,
            evaluate_threshold(fit, fit_scores, chosen.threshold),
            at_chosen,
            held(test, at_chosen, quality),
            rate,
            mean_saved,
        )
        results.append(
            ScorerResult(
                name, fit_point.threshold if fit_point else None, at_fit, best, test_curve, guaranteed
            )
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
