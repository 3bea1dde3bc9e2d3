"""Confidence scorers and the escalation simulation behind `supportgraph eval-router`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from serve_app.cli import main
from serve_app.costs.pricing import PricingTable, default_pricing, estimate_tokens
from serve_app.routing.confidence import (
    FEATURES,
    CalculationScorer,
    ConfidenceScorer,
    GroundingScorer,
    LearnedScorer,
    SelfReportedScorer,
    ShapeScorer,
    calculations,
    coverage,
    features,
    revisions,
)
from supportgraph_tools.routing.evaluate import Logged, cheapest_at_quality, curve, evaluate_threshold

PROMPT = (
    "Janet has 16 eggs. She eats 3 and bakes with 4. She sells the rest at $2 each. How much does she make?"
)
RIGHT = "16 - 3 - 4 = 9 eggs left.\nShe makes 9 * $2 = $<<9*2=18>>18.\n#### 18"
WRONG = "16 - 3 = 14 eggs left, maybe. I think she makes about 28"


def test_calculations_are_redone_exactly() -> None:
    assert calculations(RIGHT) == (2, 0)
    assert calculations(WRONG) == (1, 1)
    assert calculations("3 + 4 * 2 = 11, 10 / 4 = 2.5, -2 + 5 = 3, 7 / 0 = 1") == (3, 0)
    assert calculations("no arithmetic here") == (0, 0)


def test_heuristic_scorers_prefer_the_right_answer() -> None:
    for scorer in (CalculationScorer(), ShapeScorer(), GroundingScorer()):
        assert scorer.score(PROMPT, RIGHT) > scorer.score(PROMPT, WRONG), scorer.name
    assert coverage(PROMPT, RIGHT) == 1.0 and coverage(PROMPT, WRONG) < 1.0


def test_revisions_count_an_answer_arguing_with_itself() -> None:
    detour = "9 / 2 = 4.5 cups. However, it's not possible to have half a cup, so it must be either 4 or 5."
    assert revisions(detour) == 4 and revisions(RIGHT) == 0
    assert features(PROMPT, detour)[FEATURES.index("revisions")] == 4.0


def test_self_reported_confidence_is_parsed_and_clamped() -> None:
    scorer = SelfReportedScorer()
    assert scorer.score("", "Answer: 4. Confidence: 85%") == pytest.approx(0.85)
    assert scorer.score("", '{"answer": 4, "confidence": 0.3}') == pytest.approx(0.3)
    assert scorer.score("", "confidence = 7") == 0.07
    assert scorer.score("", "no statement") == 0.5


def test_learned_scorer_fits_saves_and_loads(tmp_path: Path) -> None:
    rows = [(PROMPT, RIGHT, ""), (PROMPT, WRONG, "")] * 20
    labels = [True, False] * 20
    scorer = LearnedScorer().fit(rows, labels)
    assert scorer.score(PROMPT, RIGHT) > 0.8 > 0.2 > scorer.score(PROMPT, WRONG)
    scorer.save(tmp_path / "w.json")
    again = LearnedScorer.load(tmp_path / "w.json")
    assert again.score(PROMPT, RIGHT) == pytest.approx(scorer.score(PROMPT, RIGHT))
    assert len(features(PROMPT, RIGHT)) == len(FEATURES)
    with pytest.raises(ValueError, match="both right and wrong"):
        LearnedScorer().fit(rows[:1], [True])


def test_learned_scorer_with_sentence_embeddings_round_trips(tmp_path: Path) -> None:
    def embed(texts: list[str]) -> np.ndarray:  # a deterministic stand-in for MiniLM: letters counted
        return np.array(
            [[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz0123456789"] for t in texts], float
        )

    rows = [(f"{PROMPT} #{n}", RIGHT if n % 2 else WRONG, "") for n in range(40)]
    labels = [bool(n % 2) for n in range(40)]
    scorer = LearnedScorer().fit(rows, labels, embed=embed, embedder_name="letters", dims=(2, 3))
    assert {k: m.shape for k, (_, m) in scorer.projections.items()} == {
        "question": (2, 36),
        "answer": (3, 36),
    }
    assert scorer.score(PROMPT, RIGHT) > 0.5 > scorer.score(PROMPT, WRONG)
    scorer.save(tmp_path / "e.json")
    again = LearnedScorer.load(tmp_path / "e.json", embed=embed, embedder_name="letters")
    assert again.score(PROMPT, RIGHT) == pytest.approx(scorer.score(PROMPT, RIGHT))
    with pytest.raises(ValueError, match="fitted with embedder 'letters'"):
        LearnedScorer.load(tmp_path / "e.json", embed=embed, embedder_name="other")
    with pytest.raises(RuntimeError, match="give it the embedder"):
        LearnedScorer(scorer.weights, scorer.mean, scorer.scale, scorer.projections).score(PROMPT, RIGHT)


def logged(weak_ok: bool, strong_ok: bool) -> Logged:
    return Logged("p", "r", weak_ok, strong_ok, weak_cost=1.0, strong_cost=10.0)


def test_escalation_accounting() -> None:
    rows = [logged(True, True), logged(False, True), logged(False, False), logged(True, False)]
    scores = np.array([0.9, 0.1, 0.2, 0.8])
    point = evaluate_threshold(rows, scores, 0.5)  # the two low scores escalate
    assert (point.escalated, point.accuracy) == (0.5, 0.75)
    assert point.cost == 4 * 1.0 + 2 * 10.0 and point.saved == pytest.approx(1 - 24 / 40)
    everything = evaluate_threshold(rows, scores, float("inf"))
    assert everything.accuracy == 0.5 and everything.saved == pytest.approx(1 - 44 / 40)
    assert everything.summary()["threshold"] is None
    best = cheapest_at_quality(curve(rows, scores), 0.75)
    assert best is not None and (best.escalated, best.saved) == (
        0.25,
        pytest.approx(1 - 14 / 40),
    )  # only the 0.1 one


def test_pricing_table_costs_and_validation(tmp_path: Path) -> None:
    prices = default_pricing()
    assert prices["claude-sonnet-4-5"].cost(1_000_000, 0) == pytest.approx(3.0)
    assert prices["claude-sonnet-5-5"].cost(0, 1_000_000) == pytest.approx(10.0)  # 4.5's successor
    assert prices["gemini-2.5-flash-lite"].cost(0, 1_000_000) == pytest.approx(0.40)
    with pytest.raises(KeyError, match="no price"):
        prices["gpt-9"]
    bad = tmp_path / "p.yaml"
    bad.write_text("models:\n  x: {provider: p, input_per_mtok: -1, output_per_mtok: 1}\n")
    with pytest.raises(ValueError, match="negative"):
        PricingTable.load(bad)
    assert estimate_tokens("abcd" * 10) == 10
    assert prices.image_usd == 0.002  # the seed's price of one frame to a vision model


def write_logged(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    weak, strong = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["prompt", weak, strong, f"{weak}_response", f"{strong}_response"])
        for i in range(n):
            ok = bool(rng.random() < 0.6)
            out.writerow([PROMPT + f" #{i}", ok, True, RIGHT if ok else WRONG, RIGHT])


def test_eval_router_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPPORTGRAPH_STATE_DIR", str(tmp_path / "state"))
    write_logged(tmp_path / "fit.csv", 60, 0)
    write_logged(tmp_path / "test.csv", 60, 1)
    code = main(
        [
            "eval-router",
            "--fit",
            str(tmp_path / "fit.csv"),
            "--test",
            str(tmp_path / "test.csv"),
            "--plot",
            str(tmp_path / "curve.png"),
            "--save-scorer",
            str(tmp_path / "learned.json"),
            "--resplits",
            "5",
        ]
    )
    assert code == 0 and (tmp_path / "curve.png").stat().st_size > 10_000
    # the saved scorer plugs into the router's live policy
    from serve_app.routing.providers.base import Message, Prompt
    from serve_app.settings import RoutingPolicySettings

    policy = RoutingPolicySettings(scorer_weights={"learned": 1.0}, learned_scorer=tmp_path / "learned.json")
    scorer = ConfidenceScorer.from_policy(policy)
    asked = Prompt((Message("user", PROMPT),))
    assert scorer.score(asked, RIGHT) > 0.5 > scorer.score(asked, WRONG)
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by = {r["scorer"]: r for r in report["results"]}
    # in this synthetic set a right answer is always the worked one: the learned scorer escalates exactly
    # the wrong ones, like the oracle
    assert by["learned"]["test_at_fit_threshold"]["accuracy"] == 1.0
    assert by["learned"]["test_at_fit_threshold"]["saved"] == pytest.approx(
        by["oracle"]["test_best_at_bar"]["saved"]
    )
    # each scorer's guaranteed threshold, reported on the test file and over resplits
    for r in report["results"]:
        assert {"threshold", "saved", "accuracy", "held", "resplit_hold_rate"} <= set(r["guaranteed"])
        assert 0 <= r["guaranteed"]["resplit_hold_rate"] <= 1
    assert report["delta"] == 0.1 and report["resplits"] == 5 and report["loss"] == "paired"
    assert by["oracle"]["guaranteed"]["held"]
    assert by["self_reported"]["guaranteed"]["threshold"] is None  # no signal: escalate everything
    # the query-only scorer alone and with the learned one (no background logs beside these files)
    assert report["precall_background"] is None
    assert {"precall", "precall+learned"} <= set(by)
    assert by["precall+learned"]["guaranteed"]["precall_threshold"] in (0.0, 0.2, 0.3, 0.4)
    # the embeddings are kept for the next run, in the state directory
    assert [p.name for p in (tmp_path / "state" / "cache").iterdir()] == [
        "embeddings-st_all-MiniLM-L6-v2.npz"
    ]


def test_eval_router_guarantee_saves_with_a_good_scorer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Enough prompts for the paired bound to certify the oracle's threshold; text features only (no
    embeddings: no pre-call scorer), so it is quick."""
    write_logged(tmp_path / "fit.csv", 300, 2)
    write_logged(tmp_path / "test.csv", 300, 3)
    args = ["eval-router", "--fit", str(tmp_path / "fit.csv"), "--test", str(tmp_path / "test.csv")]
    assert main([*args, "--no-embeddings", "--resplits", "20"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by = {r["scorer"]: r for r in report["results"]}
    oracle = by["oracle"]["guaranteed"]
    assert oracle["held"] and oracle["saved"] > 0.3 and oracle["resplit_hold_rate"] >= 0.9
    assert oracle["ucb_error"] <= 0 == oracle["alpha"]  # the paired loss's bound is under its limit, 0
    assert "precall" not in by
    assert main([*args, "--no-embeddings", "--resplits", "0", "--loss", "wrong", "--bound", "betting"]) == 2
    assert "binomial or Hoeffding-Bentkus" in capsys.readouterr().err


def test_eval_router_rejects_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.csv").write_text("prompt,answer\nx,y\n")
    assert main(["eval-router", "--fit", str(tmp_path / "bad.csv"), "--test", str(tmp_path / "bad.csv")]) == 2
    assert "missing column" in capsys.readouterr().err
