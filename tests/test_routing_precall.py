"""The paired loss and its betting bound, the vectorised routing simulation (post-hoc, pre-call and both),
the query-only (pre-call) scorer and the router's pre-call step. Quick and deterministic: no dataset, a
letter-count stand-in for the sentence embedder."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize

from serve_app.routing.confidence import logistic
from serve_app.routing.precall import QUERY_FEATURES, Linear, QueryScorer, load_background, query_features
from serve_app.routing.providers.base import Message, Prompt
from serve_app.routing.risk import betting_pvalues, betting_ucb, calibrate_paired, paired_losses
from serve_app.settings import RoutingPolicySettings
from supportgraph_tools.routing.evaluate import (
    Logged,
    Outcomes,
    apply,
    choose,
    curve,
    evaluate_threshold,
    precall_split_scores,
    stored_embed,
)
from tests.test_router_policy import SURE, UNSURE, Scripted, answer, ladder


def letters(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for MiniLM: letter and digit counts."""
    return np.array(
        [[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz0123456789"] for t in texts], float
    )


def test_betting_pvalues_are_valid_at_the_null_and_powerful_below_it() -> None:
    rng = np.random.default_rng(3)
    values, probs = np.array([-0.05, 0.95, -1.0, 0.0]), np.array([0.8, 0.05, 0.03, 0.12])
    mean = float(values @ probs)
    draws = rng.choice(values, (2000, 500), p=probs)  # 2000 calibration sets, losses of a paired shape
    at_null = betting_pvalues(draws, mean, 0.95, 0.1, -1.0)
    assert (at_null <= 0.1).mean() <= 0.1  # Ville: a true "mean >= limit" is rejected <= delta of the time
    assert (betting_pvalues(draws, mean + 0.05, 0.95, 0.1, -1.0) <= 0.1).mean() > 0.9
    ucb = betting_ucb(draws[0], 0.95, 0.1, -1.0)
    clt = draws[0].mean() + 1.2816 * draws[0].std() / math.sqrt(500)
    assert draws[0].mean() < ucb < clt + 0.02  # above the mean, not far from the normal approximation
    with pytest.raises(ValueError):
        betting_pvalues(draws[:1], 1.0, 0.95, 0.1, -1.0)


def test_paired_losses_charge_the_bar_on_the_same_prompts() -> None:
    scores = np.array([0.9, 0.2, 0.5])
    weak, strong = np.array([True, True, False]), np.array([True, False, True])
    thresholds, losses = paired_losses(scores, weak, strong, 0.95)
    assert list(thresholds) == [np.inf, 0.9, 0.5, 0.2]
    # escalated: 0.95 s - s; accepted: 0.95 s - w
    np.testing.assert_allclose(losses[0], [-0.05, 0.0, -0.05])
    np.testing.assert_allclose(losses[-1], [-0.05, -1.0, 0.95])  # the weak-only right answer is a gain
    _, direct = paired_losses(scores, weak, strong, 0.95, direct=np.array([False, False, True]))
    np.testing.assert_allclose(direct[-1], [-0.05, -1.0, -0.05])  # sent straight up: the strong answer


def test_calibrate_paired_holds_the_bar_in_at_least_one_minus_delta_of_draws() -> None:
    """Weak right with probability 0.1 + 0.85 s (s uniform), strong right with 0.85 independently: the
    population's accuracy at threshold t is known; the chosen threshold must keep >= 95% of the strong
    model's in >= 90% of calibration draws, and not by escalating everything."""
    rng = np.random.default_rng(11)
    q, delta, n = 0.95, 0.1, 500

    def gap(t: float) -> float:  # routed accuracy - q x strong accuracy, exactly
        t = min(t, 1.0)
        accepted = 1 - t
        weak_right = 0.1 * accepted + 0.85 * (1 - t * t) / 2
        return weak_right + 0.85 * t - q * 0.85

    chosen = []
    for _ in range(60):
        s = rng.random(n)
        result = calibrate_paired(s, rng.random(n) < 0.1 + 0.85 * s, rng.random(n) < 0.85, q, delta)
        chosen.append(result.threshold)
        assert result.ucb >= result.mean_loss
    violations = np.mean([gap(t) < 0 for t in chosen])
    assert violations <= delta
    assert np.median(chosen) < 0.9  # it accepts a good share of the weak answers
    with pytest.raises(ValueError, match="not binary"):
        calibrate_paired(s, s > 0.5, s > 0.1, q, delta, bound="binomial")


def test_newton_logistic_matches_a_generic_optimiser() -> None:
    rng = np.random.default_rng(5)
    x = np.hstack([rng.normal(size=(300, 4)), np.ones((300, 1))])
    y = (rng.random(300) < 1 / (1 + np.exp(-x[:, 0] + 0.5 * x[:, 1]))).astype(float)
    penalty = np.r_[np.full(4, 0.2), 0.0]

    def objective(w: np.ndarray) -> float:
        m = x @ w
        return float(np.mean(np.logaddexp(0, m) - y * m) + 0.5 * np.sum(penalty * w * w))

    reference = optimize.minimize(objective, np.zeros(5), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(logistic(x, y, 0.2), reference, atol=1e-5)


def outcomes(weak: list[bool], strong: list[bool]) -> Outcomes:
    return Outcomes(np.array(weak), np.array(strong), np.ones(len(weak)), np.full(len(weak), 10.0))


def test_precall_and_combined_routes_pay_what_they_ask() -> None:
    o = outcomes([True, False, False, True], [True, True, False, False])
    post = np.array([0.9, 0.8, 0.1, 0.7])
    # post-hoc: everyone pays the weak attempt; 0.1 escalates
    p = evaluate_threshold(o, post, 0.5)
    assert (p.escalated, p.accuracy, p.cost) == (0.25, 0.5, 4 + 10)
    # pre-call alone: below the threshold straight up (no weak attempt), the rest keep the weak answer
    pre = np.array([0.9, 0.1, 0.2, 0.8])
    p = evaluate_threshold(o, pre, 0.5, route="precall")
    assert (p.escalated, p.accuracy, p.cost) == (0.5, 0.75, 2 + 20)
    # both: the pre-call step sends the second straight up; the post-hoc scorer escalates the third
    p = evaluate_threshold(o, post, 0.5, direct=pre < 0.15)
    assert (p.escalated, p.accuracy, p.cost, p.direct) == (0.5, 0.75, 3 + 20, 0.25)
    # the vectorised curve equals the point-by-point evaluation
    points = curve(o, post, direct=pre < 0.15)
    assert [q.threshold for q in points] == [0.1, 0.7, 0.8, 0.9, np.inf]
    for q in points:
        assert q == evaluate_threshold(o, post, q.threshold, direct=pre < 0.15)


def test_the_combined_route_finds_a_precall_setting_that_keeps_the_bar() -> None:
    """Post-hoc scores that are no help on the hard prompts (weak wrong, yet confident), which the
    pre-call score spots: only with the pre-call step does a cheap setting hold."""
    rng = np.random.default_rng(2)
    n = 600
    hard = rng.random(n) < 0.3
    weak = np.where(hard, False, rng.random(n) < 0.9)
    o = outcomes(list(weak), [True] * n)
    post = np.where(hard, 0.95, np.where(weak, 0.6 + 0.4 * rng.random(n), 0.4 * rng.random(n)))
    pre = np.where(hard, 0.05, 0.5 + 0.5 * rng.random(n))
    alone = choose(o, post, "posthoc", 0.95, 0.1)
    both = choose(o, np.stack([pre, post]), "combined", 0.95, 0.1, grid=(0.0, 0.1))
    assert math.isinf(alone.threshold) or alone.threshold > 0.95  # escalate (nearly) everything
    assert both.precall_threshold == 0.1 and both.threshold < 0.6
    point = apply(o, np.stack([pre, post]), "combined", both)
    assert point.accuracy >= 0.95 and point.direct == pytest.approx(hard.mean())


def test_query_features_count_what_makes_a_question_hard() -> None:
    x = query_features("A train goes 120.5 km at 60% speed. How long?\nA. 1\nB. 2")
    assert len(x) == len(QUERY_FEATURES)
    f = dict(zip(QUERY_FEATURES, x, strict=True))
    assert (f["numbers"], f["decimals"], f["percents"], f["choices"]) == (4, 1, 1, 2)
    assert np.isfinite(query_features("9" * 400)).all()


def hard_or_easy(n: int) -> tuple[list[str], np.ndarray]:
    """Prompts with many figures are the ones the cheap tier gets wrong."""
    prompts = [
        f"Question {i}: "
        + (" ".join(str(7 * i + k) for k in range(9)) if i % 3 == 0 else "what is the plan?")
        for i in range(n)
    ]
    return prompts, np.array([i % 3 != 0 for i in range(n)])


def test_query_scorer_learns_from_the_prompt_alone_and_round_trips(tmp_path: Path) -> None:
    prompts, right = hard_or_easy(60)
    background = QueryScorer.fit_background(letters(prompts), prompts, right)
    scorer = QueryScorer.fit(prompts, right, letters, "letters", background)
    scores = scorer.scores(prompts)
    assert scores[right].min() > 0.5 > scores[~right].max()
    scorer.save(tmp_path / "p.json")
    again = QueryScorer.load(tmp_path / "p.json", embed=letters, embedder_name="letters")
    assert again.score(prompts[0]) == pytest.approx(scorer.score(prompts[0]))
    with pytest.raises(ValueError, match="fitted with embedder 'letters'"):
        QueryScorer.load(tmp_path / "p.json", embed=letters, embedder_name="other")
    with pytest.raises(ValueError, match="right and wrong"):
        Linear.fit(np.ones((3, 2)), np.array([True, True, True]), 0.1)


def test_precall_split_scores_are_out_of_fold_on_calibration_rows() -> None:
    prompts, right = hard_or_easy(90)
    rows = [Logged(p, "", bool(ok), True, 1.0, 10.0) for p, ok in zip(prompts, right, strict=True)]
    split = precall_split_scores(rows, letters, None)
    cal, test = np.arange(60), np.arange(60, 90)
    cal_scores, test_scores = split(cal, test)
    assert cal_scores.shape == (60,) and test_scores.shape == (30,)
    assert test_scores[right[test]].min() > 0.5 > test_scores[~right[test]].max()
    # changing a test row's label changes nothing: nothing is fitted on the test rows
    flipped = [
        Logged(r.prompt, "", not r.weak_ok if i >= 60 else r.weak_ok, True, 1.0, 10.0)
        for i, r in enumerate(rows)
    ]
    again = precall_split_scores(flipped, letters, None)(cal, test)
    np.testing.assert_allclose(again[0], cal_scores)
    np.testing.assert_allclose(again[1], test_scores)


def test_background_logs_leave_out_the_grading_artefact(tmp_path: Path) -> None:
    weak = "mistralai/Mixtral-8x7B-Instruct-v0.1"
    (tmp_path / "mmlu_anatomy.csv").write_text(f"prompt,{weak},gpt\nq1,True,True\nq2,False,True\n")
    (tmp_path / "mmlu_high_school_mathematics.csv").write_text(f"prompt,{weak},gpt\nq3,True,False\n")
    prompts, labels = load_background(tmp_path, weak)
    assert prompts == ["q1", "q2"] and list(labels) == [True, False]
    with pytest.raises(ValueError, match="missing column"):
        load_background(tmp_path, "other-model")


def test_the_router_sends_a_hard_question_straight_to_the_next_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts, right = hard_or_easy(60)
    QueryScorer.fit(prompts, right, letters, "letters").save(tmp_path / "precall.json")
    real_load = QueryScorer.load.__func__
    monkeypatch.setattr(
        QueryScorer,
        "load",
        classmethod(lambda cls, path, embed=None, name=None: real_load(cls, path, letters, "letters")),
    )
    lite, sonnet = Scripted("lite", SURE), Scripted("sonnet", SURE)
    router = ladder(lite, sonnet)  # off by default
    hard = Prompt((Message("user", prompts[0]),))
    easy = Prompt((Message("user", prompts[1]),))
    assert answer(router, prompt=hard).tier == "t0" and router.precall is None
    router.configure(RoutingPolicySettings(precall_scorer=tmp_path / "precall.json", precall_threshold=0.5))
    skipped = answer(router, prompt=hard)
    assert skipped.tier == "t1" and [a.tier for a in skipped.attempts] == ["t1"]  # the cheap one not asked
    assert skipped.to_dict()["precall"]["skipped_first_tier"] and skipped.precall < 0.5
    kept = answer(router, prompt=easy)
    assert kept.tier == "t0" and not kept.precall_skipped and kept.precall > 0.5
    assert len(lite.prompts) == 2 and len(sonnet.prompts) == 1
    # the pinned-tier override and a one-tier ladder skip the step
    assert asyncio.run(router.answer(hard, "acme", ladder=["t0"])).tier == "t0"
    assert router.status()["precall_threshold"] == 0.5
    unsure = ladder(Scripted("lite", UNSURE), Scripted("sonnet", SURE))
    assert answer(unsure, prompt=easy).tier == "t1"  # post-hoc escalation unchanged
    with pytest.raises(ValueError, match="precall_scorer"):
        RoutingPolicySettings(precall_threshold=0.3)


def test_stored_embeddings_are_not_computed_twice(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return letters(texts)

    store = tmp_path / "cache" / "e.npz"
    first = stored_embed(counting, store)(["ab", "cd", "ab"])
    again = stored_embed(counting, store)(["cd", "ab"])  # a later run: read from the file
    np.testing.assert_allclose(again, first[[1, 0]])
    assert calls == [["ab", "cd"]]
