"""`supportgraph eval-router`: simulate weak -> strong escalation on logged answers of two models.

Input: RouteLLM-style CSVs (prompt, per-model correctness, per-model response text). Every prompt is
answered by the weak model first; a scorer rates that answer; below a threshold the prompt escalates to
the strong model (paying both attempts). Costs come from the pricing table with token counts estimated
from the texts; savings are against sending everything to the strong model.

Thresholds are chosen on the fit file (the cheapest one whose accuracy is >= `quality` x the strong
model's accuracy there) and applied unchanged to the test file, which is only reported. The test curve's
best point at that quality is printed too, the way RouteLLM reports its routers.

The guaranteed threshold (`risk`): Learn then Test on the fit file. The default loss is the paired one
(`quality x strong_ok - routed_ok` per request, betting p-values): the bar "accuracy >= quality x the
strong model's accuracy" on the same requests, with the strong accuracy's own sampling error inside the
bound; `loss="wrong"` is the earlier one (the wrong-answer rate against alpha = 1 - quality x the
strong model's accuracy on the fit file, a plug-in, exact binomial bound). A scorer fitted on data (the
learned one, the pre-call one) is calibrated on out-of-fold scores (5-fold cross-fitting on the fit
file), never on scores of the rows it was fitted on. How often the bar holds is measured over random
resplits of the whole file (fit-sized calibration part, the rest to test), refitting what was fitted on
each calibration part: the guarantee says >= 1 - delta of them.

Three routes are simulated:
- post-hoc (`posthoc`): the weak model answers; its answer is kept when the scorer's confidence >= t.
- pre-call (`precall`): a query-only scorer (`routing.precall`) predicts from the prompt alone whether
  the weak model will be right; at >= t the weak model answers and its answer is kept, below t the
  prompt goes straight to the strong model (the weak attempt is not paid).
- both (`combined`): below a pre-call threshold g the prompt goes straight to the strong model; the rest
  are answered by the weak model and judged post-hoc. g is one of a fixed grid (`PRECALL_GRID`, 0: off);
  each g gets its own fixed sequence at delta / len(grid) (Bonferroni), and the certified pair with the
  best expected saving is chosen, so every certified pair holds at once with probability >= 1 - delta.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from serve_app.costs.pricing import PricingTable, estimate_tokens
from serve_app.routing.confidence import (
    HEURISTIC_SCORERS,
    RESPONSE_TAIL,
    Embed,
    LearnedScorer,
    Scorer,
    _principal,
    features,
    standardized_logistic,
)
from serve_app.routing.precall import HEAD_COMPONENTS, HEAD_L2, Linear, head_design
from serve_app.routing.risk import Bound, Calibrated, PairedCalibrated, calibrate, calibrate_paired

WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
Loss = Literal["paired", "wrong"]
Route = Literal["posthoc", "precall", "combined"]
# pre-call thresholds tried with the post-hoc scorer (predicted chance that the weak model is right
# below which a prompt goes straight to the strong one); fixed in advance, 0 = pre-call off
PRECALL_GRID = (0.0, 0.2, 0.3, 0.4)


@dataclass(frozen=True)
class Logged:
    prompt: str
    weak_response: str
    weak_ok: bool
    strong_ok: bool
    weak_cost: float
    strong_cost: float


@dataclass(frozen=True)
class Outcomes:
    """The logged rows as arrays (what the simulation needs of them)."""

    weak_ok: np.ndarray
    strong_ok: np.ndarray
    weak_cost: np.ndarray
    strong_cost: np.ndarray

    @classmethod
    def of(cls, rows: list[Logged] | Outcomes) -> Outcomes:
        if isinstance(rows, Outcomes):
            return rows
        return cls(
            np.array([r.weak_ok for r in rows], bool),
            np.array([r.strong_ok for r in rows], bool),
            np.array([r.weak_cost for r in rows], float),
            np.array([r.strong_cost for r in rows], float),
        )

    def take(self, idx: np.ndarray) -> Outcomes:
        return Outcomes(self.weak_ok[idx], self.strong_ok[idx], self.weak_cost[idx], self.strong_cost[idx])

    def __len__(self) -> int:
        return len(self.weak_ok)


Rows = list[Logged] | Outcomes


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
    escalated: float  # share of prompts sent to the strong model (after the weak one, or straight)
    accuracy: float
    cost: float
    saved: float  # 1 - cost / all-strong cost
    direct: float = 0.0  # share sent straight to the strong model by the pre-call step

    def summary(self) -> dict[str, float | None]:
        """Rounded figures for reports; an infinite threshold (escalate everything) becomes None."""
        out: dict[str, float | None] = {
            k: round(getattr(self, k), 4) for k in ("escalated", "accuracy", "saved")
        }
        out["threshold"] = None if np.isinf(self.threshold) else round(self.threshold, 4)
        if self.direct:
            out["direct"] = round(self.direct, 4)
        return out


def _points(
    o: Outcomes, accepted: np.ndarray, tried: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(escalated, accuracy, cost, saved) for rows of `accepted` / `tried` masks (thresholds x requests):
    accepted keeps the weak answer, tried pays the weak attempt; everything not accepted pays the strong."""
    routed_ok = np.where(accepted, o.weak_ok, o.strong_ok)
    cost = tried @ o.weak_cost + (~accepted) @ o.strong_cost
    return (~accepted).mean(axis=1), routed_ok.mean(axis=1), cost, 1 - cost / o.strong_cost.sum()


def _masks(
    scores: np.ndarray, thresholds: np.ndarray, direct: np.ndarray | None, route: Route
) -> tuple[np.ndarray, np.ndarray]:
    accepted = np.asarray(scores, float)[None, :] >= thresholds[:, None]
    if route == "precall":  # the weak model is asked only when its answer will be kept
        return accepted, accepted
    if direct is None:
        return accepted, np.ones_like(accepted)
    return accepted & ~direct[None, :], np.broadcast_to(~direct[None, :], accepted.shape)


def evaluate_threshold(
    rows: Rows,
    scores: np.ndarray,
    threshold: float,
    direct: np.ndarray | None = None,
    route: Route = "posthoc",
) -> Point:
    """The route at one threshold: `scores` >= threshold keep the weak answer; `direct` rows (the
    pre-call step's) go straight to the strong model; route "precall": `scores` are pre-call scores and
    the weak model is only asked where its answer is kept."""
    return curve(rows, scores, direct, route, thresholds=np.array([threshold], float))[0]


def curve(
    rows: Rows,
    scores: np.ndarray,
    direct: np.ndarray | None = None,
    route: Route = "posthoc",
    thresholds: np.ndarray | None = None,
) -> list[Point]:
    """Every distinct threshold's point (vectorised), lowest threshold first, +inf (escalate all) last."""
    o = Outcomes.of(rows)
    scores = np.asarray(scores, float)
    thresholds = np.unique(np.r_[scores, np.inf]) if thresholds is None else thresholds
    direct = None if direct is None else np.asarray(direct, bool)
    accepted, tried = _masks(scores, thresholds, direct, route)
    escalated, accuracy, cost, saved = _points(o, accepted, tried, thresholds)
    share = float(direct.mean()) if direct is not None else 0.0
    return [
        Point(float(t), float(e), float(a), float(c), float(s), share)
        for t, e, a, c, s in zip(thresholds, escalated, accuracy, cost, saved, strict=True)
    ]


def strong_accuracy(rows: Rows) -> float:
    return float(np.mean(Outcomes.of(rows).strong_ok))


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
class Choice:
    """A route's guaranteed setting: the post-hoc (or pre-call) threshold, and for the combined route
    the pre-call threshold below which prompts go straight to the strong model."""

    calibrated: Calibrated | PairedCalibrated
    precall_threshold: float | None = None

    @property
    def threshold(self) -> float:
        return self.calibrated.threshold


def guaranteed_threshold(
    rows: Rows,
    scores: np.ndarray,
    quality: float,
    delta: float,
    bound: Bound | None = None,
    loss: Loss = "paired",
    direct: np.ndarray | None = None,
    with_ucb: bool = True,
) -> Calibrated | PairedCalibrated:
    """The cheapest threshold that keeps the bar with probability >= 1 - delta: with the paired loss,
    routed accuracy >= quality x strong accuracy (betting bound by default); with "wrong", the
    wrong-answer rate <= 1 - quality x the strong accuracy of `rows` (exact binomial by default).
    `direct` rows go straight to the strong model whatever their score."""
    o = Outcomes.of(rows)
    if loss == "paired":
        return calibrate_paired(
            scores, o.weak_ok, o.strong_ok, quality, delta, bound or "betting", direct, with_ucb
        )
    if bound == "betting":
        raise ValueError("the wrong-answer loss uses the binomial or Hoeffding-Bentkus bound")
    weak_wrong, strong_wrong = ~o.weak_ok, ~o.strong_ok
    if direct is not None:
        weak_wrong = np.where(direct, strong_wrong, weak_wrong)
    alpha = 1 - quality * strong_accuracy(o)
    return calibrate(scores, weak_wrong, strong_wrong, alpha, delta, bound or "binomial")


def choose(
    rows: Rows,
    scores: np.ndarray,
    route: Route,
    quality: float,
    delta: float,
    bound: Bound | None = None,
    loss: Loss = "paired",
    grid: tuple[float, ...] = PRECALL_GRID,
    with_ucb: bool = True,
) -> Choice:
    """The guaranteed setting of a route on calibration rows. `scores`: one array (post-hoc or
    pre-call), or for "combined" a (pre-call, post-hoc) pair of arrays."""
    if route != "combined":
        return Choice(guaranteed_threshold(rows, scores, quality, delta, bound, loss, with_ucb=with_ucb))
    precall, posthoc = scores
    best: tuple[float, Choice] | None = None
    for g in grid:  # Bonferroni over the fixed grid: each sequence at delta / len(grid)
        direct = precall < g
        chosen = guaranteed_threshold(
            rows, posthoc, quality, delta / len(grid), bound, loss, direct, with_ucb
        )
        saved = evaluate_threshold(rows, posthoc, chosen.threshold, direct).saved
        if best is None or saved > best[0] + 1e-12:
            best = saved, Choice(chosen, g)
    assert best is not None
    return best[1]


def apply(rows: Rows, scores: np.ndarray, route: Route, choice: Choice) -> Point:
    """The route at a chosen setting on (other) rows."""
    if route == "combined":
        precall, posthoc = scores
        return evaluate_threshold(rows, posthoc, choice.threshold, precall < (choice.precall_threshold or 0))
    return evaluate_threshold(rows, scores, choice.threshold, route=route)


def route_curve(
    rows: Rows, scores: np.ndarray, route: Route, grid: tuple[float, ...] = PRECALL_GRID
) -> list[Point]:
    """Every point of the route (for "combined": every grid value's post-hoc curve)."""
    if route != "combined":
        return curve(rows, scores, route=route)
    precall, posthoc = scores
    return [p for g in grid for p in curve(rows, posthoc, precall < g)]


@dataclass(frozen=True)
class Guaranteed:
    """The guaranteed threshold of one scorer: chosen on the fit file, reported on the test file."""

    choice: Choice
    expected: Point  # on the calibration (fit) data
    test: Point
    held: bool  # test accuracy >= quality x the strong model's test accuracy
    resplit_hold_rate: float | None  # share of random resplits where the bar held on the test part
    resplit_saved: float | None  # mean test saving over those resplits
    loss: Loss = "paired"

    @property
    def calibrated(self) -> Calibrated | PairedCalibrated:
        return self.choice.calibrated

    def summary(self) -> dict[str, float | bool | str | None]:
        threshold = self.calibrated.threshold
        ucb = self.calibrated.ucb
        out: dict[str, float | bool | str | None] = {
            "threshold": None if np.isinf(threshold) else round(threshold, 4),
            "saved": round(self.test.saved, 4),
            "accuracy": round(self.test.accuracy, 4),
            "held": self.held,
            "resplit_hold_rate": None if self.resplit_hold_rate is None else round(self.resplit_hold_rate, 4),
            "expected_saved": round(self.expected.saved, 4),
            "escalated": round(self.test.escalated, 4),
            "ucb_error": None if np.isnan(ucb) else round(ucb, 4),  # the loss's upper bound
            "alpha": round(self.calibrated.alpha, 4),  # the loss's limit
            "resplit_mean_saved": None if self.resplit_saved is None else round(self.resplit_saved, 4),
            "loss": self.loss,
        }
        if self.choice.precall_threshold is not None:
            out["precall_threshold"] = self.choice.precall_threshold
            out["direct"] = round(self.test.direct, 4)
        return out


@dataclass(frozen=True)
class ScorerResult:
    scorer: str
    fit_threshold: float | None
    test_at_fit_threshold: Point | None
    test_best: Point | None
    test_curve: list[Point]
    guaranteed: Guaranteed | None = None
    route: Route = "posthoc"


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


def held(rows: Rows, point: Point, quality: float) -> bool:
    return point.accuracy >= quality * strong_accuracy(rows) - 1e-12


# (calibration rows, test rows) -> (calibration scores, test scores), for one split of the rows; for the
# combined route each is a (pre-call, post-hoc) pair
SplitScores = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def resplits(
    rows: Rows,
    split_scores: SplitScores,
    n_fit: int,
    quality: float,
    delta: float,
    times: int,
    seed: int = 0,
    bound: Bound | None = None,
    loss: Loss = "paired",
    route: Route = "posthoc",
) -> tuple[float, float]:
    """(share of random resplits where the guaranteed threshold held the bar on the test part, mean test
    saving): `rows` shuffled, the first `n_fit` calibrate, the rest test."""
    o = Outcomes.of(rows)
    rng = np.random.default_rng(seed)
    hits, saved = 0, []
    for _ in range(times):
        order = rng.permutation(len(o))
        cal, test = order[:n_fit], order[n_fit:]
        cal_scores, test_scores = split_scores(cal, test)
        cal_rows, test_rows = o.take(cal), o.take(test)
        chosen = choose(cal_rows, cal_scores, route, quality, delta, bound, loss, with_ucb=False)
        point = apply(test_rows, test_scores, route, chosen)
        hits += held(test_rows, point, quality)
        saved.append(point.saved)
    return hits / times, float(np.mean(saved))


def stored_embed(embed: Embed, path: Path | None) -> Embed:
    """`embed` with its vectors kept: in memory, and in `path` (an .npz keyed by the texts' SHA-256)
    when given, so that a later run (another --resplits, --loss, the pre-call background) does not
    embed the same thousands of texts again. Use one file per embedder."""
    vectors: dict[str, np.ndarray] = {}
    if path is not None and path.exists():
        with np.load(path) as stored:
            vectors.update(zip(stored["keys"].tolist(), stored["vectors"], strict=True))

    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def lookup(batch: list[str]) -> np.ndarray:
        keys = [key(t) for t in batch]
        missing = {k: t for k, t in zip(keys, batch, strict=True) if k not in vectors}
        if missing:
            fresh = np.asarray(embed(list(missing.values())), dtype=float)
            vectors.update(zip(missing, fresh, strict=True))
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, keys=np.array(list(vectors)), vectors=np.stack(list(vectors.values())))
        return np.stack([vectors[k] for k in keys]) if keys else np.zeros((0, 0))

    return lookup


def cached_embed(embed: Embed, rows: list[Logged], path: Path | None = None) -> Embed:
    """`embed` with the questions and answer tails of `rows` embedded once, up front (others on demand),
    kept in `path` too when given (`stored_embed`)."""
    texts = sorted({r.prompt for r in rows} | {r.weak_response[-RESPONSE_TAIL:] for r in rows})
    lookup = stored_embed(embed, path)
    lookup(texts)
    return lookup


def _cross_fit(
    design: Callable[[np.ndarray], np.ndarray], labels: np.ndarray, l2: float, folds: int
) -> SplitScores:
    """Split scores of a standardised L2 logistic regression on `design(calibration rows)` (a matrix over
    all rows, from what it may learn of the calibration rows without labels): out-of-fold scores on the
    calibration rows (`folds`-fold cross-fitting), the model fitted on all of them on the test rows."""

    def split(cal: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = design(cal)

        def fitted(train: np.ndarray, scored: np.ndarray) -> np.ndarray:
            mean, scale, w = standardized_logistic(x[train], labels[train], l2)
            return 1 / (1 + np.exp(-(((x[scored] - mean) / scale) @ w[:-1] + w[-1])))

        fold = np.arange(len(cal)) % folds
        cal_scores = np.zeros(len(cal))
        for k in range(folds):
            out = fold == k
            cal_scores[out] = fitted(cal[~out], cal[out])
        return cal_scores, fitted(cal, test)

    return split


def learned_split_scores(
    rows: list[Logged], embed: Embed | None = None, embedder_name: str | None = None, folds: int = 5
) -> SplitScores:
    """Split scores of the learned scorer: the same model as `fit_learned` (text features, principal
    components of the calibration rows' embeddings shared by the folds, L2 0.2), on matrices computed
    once: a resplit refits only the regression and the components."""
    text = np.stack([features(r.prompt, r.weak_response) for r in rows])
    labels = np.array([r.weak_ok for r in rows], float)
    if embed is None:
        return _cross_fit(lambda cal: text, labels, 0.2, folds)
    vectors = (
        np.asarray(embed([r.prompt for r in rows]), float),
        np.asarray(embed([r.weak_response[-RESPONSE_TAIL:] for r in rows]), float),
    )

    def design(cal: np.ndarray) -> np.ndarray:
        parts = [text]
        for v in vectors:
            center, components = _principal(v[cal], 4)  # LearnedScorer.fit's dims
            parts.append((v - center) @ components.T)
        return np.hstack(parts)

    return _cross_fit(design, labels, 0.2, folds)


def precall_split_scores(
    rows: list[Logged], embed: Embed, background: Linear | None, folds: int = 5
) -> SplitScores:
    """Split scores of the pre-call scorer (`precall.QueryScorer`): the background model fixed (fitted on
    other data), the head refitted on each calibration part (cross-fitted)."""
    prompts = [r.prompt for r in rows]
    vectors = np.asarray(embed(prompts), float)
    labels = np.array([r.weak_ok for r in rows], float)
    fixed = head_design(
        vectors, prompts, background, np.zeros(vectors.shape[1]), np.zeros((0, vectors.shape[1]))
    )

    def design(cal: np.ndarray) -> np.ndarray:
        center, components = _principal(vectors[cal], HEAD_COMPONENTS)
        return head_design(vectors, prompts, background, center, components, fixed)

    return _cross_fit(design, labels, HEAD_L2, folds)


def _split_of(all_scores: np.ndarray) -> SplitScores:
    def split(cal: np.ndarray, rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return all_scores[cal], all_scores[rest]

    return split


def _paired(a: SplitScores, b: SplitScores) -> SplitScores:
    """The combined route's split: (pre-call, post-hoc) scores of the same split."""

    def split(cal: np.ndarray, rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (pa, pt), (qa, qt) = a(cal, rest), b(cal, rest)
        return np.stack([pa, qa]), np.stack([pt, qt])

    return split


@dataclass(frozen=True)
class Study:
    """What every scorer is measured with: the fit and test rows, the bar and the guarantee's settings."""

    fit: Outcomes
    test: Outcomes
    quality: float = 0.95
    delta: float = 0.1
    resplit_times: int = 0
    seed: int = 0
    bound: Bound | None = None
    loss: Loss = "paired"

    def result(
        self, name: str, route: Route, split: SplitScores, fit_scores: np.ndarray | None = None
    ) -> ScorerResult:
        """One scorer's figures: `split(fit rows, test rows)` (indices into fit + test) gives its
        calibration and test scores; the fit-curve threshold is picked on `fit_scores` (default: the
        calibration scores, out-of-fold for a fitted scorer)."""
        fit, test, quality = self.fit, self.test, self.quality
        n = len(fit)
        cal_scores, test_scores = split(np.arange(n), np.arange(n, n + len(test)))
        fit_scores = cal_scores if fit_scores is None else fit_scores
        target = quality * strong_accuracy(fit)
        at_fit, fit_point = None, None
        if route == "combined":  # the fit curve's cheapest point at the bar over the pre-call grid
            candidates = [
                (p, g)
                for g in PRECALL_GRID
                if (p := cheapest_at_quality(curve(fit, fit_scores[1], fit_scores[0] < g), target))
            ]
            if candidates:
                fit_point, g = max(candidates, key=lambda c: (c[0].saved, c[0].accuracy))
                at_fit = evaluate_threshold(test, test_scores[1], fit_point.threshold, test_scores[0] < g)
        else:
            fit_point = cheapest_at_quality(curve(fit, fit_scores, route=route), target)
            if fit_point is not None:
                at_fit = evaluate_threshold(test, test_scores, fit_point.threshold, route=route)
        test_curve = route_curve(test, test_scores, route)
        best = cheapest_at_quality(test_curve, quality * strong_accuracy(test))
        chosen = choose(fit, cal_scores, route, quality, self.delta, self.bound, self.loss)
        at_chosen = apply(test, test_scores, route, chosen)
        rate, mean_saved = None, None
        if self.resplit_times:
            everything = Outcomes(
                *(np.r_[getattr(fit, f), getattr(test, f)] for f in Outcomes.__dataclass_fields__)
            )
            rate, mean_saved = resplits(
                everything,
                split,
                n,
                quality,
                self.delta,
                self.resplit_times,
                self.seed,
                self.bound,
                self.loss,
                route,
            )
        guaranteed = Guaranteed(
            chosen,
            apply(fit, cal_scores, route, chosen),
            at_chosen,
            held(test, at_chosen, quality),
            rate,
            mean_saved,
            self.loss,
        )
        threshold = fit_point.threshold if fit_point else None
        return ScorerResult(name, threshold, at_fit, best, test_curve, guaranteed, route)


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
    bound: Bound | None = None,
    loss: Loss = "paired",
    precall: SplitScores | None = None,
) -> list[ScorerResult]:
    """Each scorer's fit-file threshold on the test file, the test curve's best point at the bar, and
    the guaranteed threshold (with its resplit hold rate when `resplit_times` > 0). `embed` is the
    learned scorer's embedder (for its cross-fitting and resplits). `precall`: the pre-call scorer's
    split scores over fit + test rows (`routing.precall.precall_split_scores`): adds its own route and
    the combined one."""
    learned = learned or fit_learned(fit, embed, embedder_name)
    rng = np.random.default_rng(seed)
    everything = fit + test
    study = Study(Outcomes.of(fit), Outcomes.of(test), quality, delta, resplit_times, seed, bound, loss)
    learned_split = learned_split_scores(everything, embed, embedder_name)
    results = [
        study.result(s.name, "posthoc", _split_of(score_rows(everything, s))) for s in HEURISTIC_SCORERS
    ]
    # the fit-curve threshold on its own training rows (as deployed); the guarantee on out-of-fold scores
    results.append(study.result("learned", "posthoc", learned_split, fit_scores=score_rows(fit, learned)))
    results.append(study.result("random", "posthoc", _split_of(rng.random(len(everything)))))
    results.append(
        study.result("oracle", "posthoc", _split_of(np.array([float(r.weak_ok) for r in everything])))
    )
    if precall is not None:
        results.append(study.result("precall", "precall", precall))
        results.append(study.result("precall+learned", "combined", _paired(precall, learned_split)))
    return results


def plot(results: list[ScorerResult], test: list[Logged], path: Path, quality: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        points = r.test_curve
        if r.route == "combined":  # the upper envelope over the pre-call grid
            points = sorted(points, key=lambda p: p.saved)
            best, envelope = -1.0, []
            for p in reversed(points):
                if p.accuracy > best:
                    best = p.accuracy
                    envelope.append(p)
            points = envelope[::-1]
        ax.plot([p.saved * 100 for p in points], [p.accuracy for p in points], label=r.scorer)
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
