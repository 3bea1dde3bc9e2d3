"""Experiments: configuration and sticky, independent assignment; request arms and outcomes in Postgres
under RLS; POST /v1/feedback (idempotent, 404 across tenants, 422 bad rating); the report with its
difference to control, sequential test and sample-ratio check, over HTTP and from the CLI."""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serve_app.db.database import Database
from serve_app.experiments.backend import DbExperiments
from serve_app.experiments.config import Assignment, Experiments, ExperimentSettings, live_config
from serve_app.experiments.report import build_report, format_report
from serve_app.experiments.store import (
    ImplicitOutcome,
    record_feedback,
    record_request,
    record_session_feedback,
    report_rows,
)
from serve_app.knowledge.rerankers import assign_arm
from serve_app.settings import load_settings
from tests.conftest import LiveDB

RR = {"name": "rr", "arms": {"none": 1, "learned": 1}, "unit": "session", "control": "none"}


def test_assignment_is_sticky_weighted_and_independent_across_experiments() -> None:
    exps = Experiments(
        [RR, {"name": "prompt", "arms": {"a": 1, "b": 1}, "unit": "request"}], rerankers={"none", "learned"}
    )
    first = exps.assign("acme", "s-1", "r-1")
    # the session's arm sticks across its requests; the request-unit experiment varies by request
    assert all(exps.assign("acme", "s-1", f"r-{i}")[0] == first[0] for i in range(20))
    assert len({exps.assign("acme", "s-1", f"r-{i}")[1].arm for i in range(20)}) == 2
    assert first[0] == Assignment("rr", first[0].arm, "s-1") and first[1].unit == "r-1"
    # the same unit ids split independently: the joint split is about a quarter each
    joint = Counter(tuple(a.arm for a in exps.assign("acme", f"u{i}", f"u{i}")) for i in range(4000))
    assert len(joint) == 4 and all(800 < n < 1200 for n in joint.values())
    weighted = ExperimentSettings(name="w", arms={"a": 9, "b": 1})
    share = sum(weighted.arm_of(f"t{i}") == "b" for i in range(5000)) / 5000
    assert 0.08 < share < 0.12
    assert exps.reranker().name == "rr" and exps.reranker_arm(first) == first[0].arm


def test_window_validation_and_the_default_reranker_experiment() -> None:
    now = datetime.now(UTC)
    later = ExperimentSettings(name="later", arms={"a": 1}, start=now + timedelta(days=1))
    assert not later.active() and later.active(now + timedelta(days=2))
    assert not ExperimentSettings(name="done", arms={"a": 1}, stop=now - timedelta(seconds=1)).active()
    for bad in (
        {"name": "x", "arms": {}},
        {"name": "x", "arms": {"a": 0}},
        {"name": "x", "arms": {"a": 1}, "control": "b"},
        {"name": "x", "arms": {"a": 1}, "start": now, "stop": now},
        {"name": "Bad Name", "arms": {"a": 1}},
    ):
        with pytest.raises(ValidationError):
            ExperimentSettings(**bad)
    with pytest.raises(ValidationError, match="unique"):
        load_settings(experiments=[RR, RR])
    # ab_weights stays the default experiment, and a tenant keeps the arm assign_arm gave it before
    settings = load_settings(knowledge={"ab_weights": {"learned": 1, "none": 1}})
    exps = settings.experiment_set()
    assert list(exps.all()) == ["reranker"]
    for tenant in ("acme", "globex", "initech"):
        (a,) = exps.assign(tenant, None, "r")
        assert a.arm == assign_arm({"learned": 1, "none": 1}, tenant) == exps.reranker_arm([a])
    # a configured reranker experiment replaces it; reconfiguring (user_config) takes effect at once
    exps.configure(live_config([ExperimentSettings(**RR)])["experiments"])
    assert list(exps.all()) == ["rr"] and exps.assign("acme", "s", "r")[0].experiment == "rr"
    exps.configure([])
    assert list(exps.all()) == ["reranker"]


def _seed(live_db: LiveDB, tenant: str, n: int, rates: dict[str, float], seed: int = 0) -> list[uuid.UUID]:
    """n routed requests of `tenant` in experiment rr (one session each), resolved at the arm's rate."""
    rng = np.random.default_rng(seed)
    exps = Experiments([RR], rerankers={"none", "learned"})

    async def go() -> list[uuid.UUID]:
        ids = []
        for i in range(n):
            rid, sid = uuid.uuid4(), uuid.uuid4()
            assigned = exps.assign(tenant, sid, rid)
            implicit = ImplicitOutcome(bool(i % 4 == 0), "extractive", 0.7, 0.001, 10.0 + i % 50)
            await record_request(live_db.db, tenant, rid, sid, assigned, implicit)
            resolved = bool(rng.random() < rates[assigned[0].arm])
            await record_feedback(live_db.db, tenant, rid, resolved, 1 + i % 5)
            ids.append(rid)
        return ids

    return live_db.run(go())


def test_feedback_is_idempotent_and_tenant_isolated(live_db: LiveDB) -> None:
    rid, sid = uuid.uuid4(), uuid.uuid4()
    assigned = [Assignment("rr", "learned", str(sid))]

    async def go():
        db = live_db.db
        implicit = ImplicitOutcome(True, "smollm2", 0.4, 0.002, 120)
        await record_request(db, "fb-a", rid, sid, assigned, implicit)
        await record_request(db, "fb-a", rid, sid, assigned, None)  # a repeat changes nothing
        first = await record_feedback(db, "fb-a", rid, True, 4, "thanks")
        again = await record_feedback(db, "fb-a", rid, True, 4, "thanks")
        other = await record_feedback(db, "fb-b", rid, False, 1)  # another tenant: not found (RLS)
        unknown = await record_feedback(db, "fb-a", uuid.uuid4(), True)
        async with db.tenant("fb-b") as conn:
            seen_by_b = await conn.fetchval("SELECT count(*) FROM outcomes")
        async with db.tenant("fb-a") as conn:
            row = await conn.fetchrow("SELECT * FROM outcomes WHERE request_id = $1", rid)
            arms = await conn.fetch(
                "SELECT experiment, arm, unit FROM request_arms WHERE request_id = $1", rid
            )
        changed = await record_feedback(db, "fb-a", rid, False, 2)
        session = await record_session_feedback(db, "fb-a", sid, True)  # has feedback already: untouched
        later = uuid.uuid4()  # a second turn of the session, no feedback: the session's outcome applies
        await record_request(db, "fb-a", later, sid, assigned, implicit)
        session += 10 * await record_session_feedback(db, "fb-a", sid, True, 5)
        session += 100 * await record_session_feedback(db, "fb-b", sid, True, 5)  # RLS: not b's session
        return first, again, other, unknown, seen_by_b, row, arms, changed, session

    first, again, other, unknown, seen_by_b, row, arms, changed, session = live_db.run(go())
    assert first["resolved"] and first["rating"] == 4 and first["request_id"] == str(rid)
    assert {k: v for k, v in again.items() if k != "feedback_at"} == {
        k: v for k, v in first.items() if k != "feedback_at"
    }
    assert other is None and unknown is None and seen_by_b == 0
    assert row["escalated"] and row["final_tier"] == "smollm2" and float(row["cost_usd"]) == 0.002
    assert [tuple(a) for a in arms] == [("rr", "learned", str(sid))]
    assert changed["resolved"] is False and changed["rating"] == 2 and changed["comment"] is None
    assert session == 10


def test_report_finds_an_injected_difference_and_flags_no_srm(live_db: LiveDB) -> None:
    _seed(live_db, "exp-a", 600, {"none": 0.35, "learned": 0.6}, seed=1)
    arms, daily = live_db.run(report_rows(live_db.db, "rr", "exp-a"))
    report = build_report("rr", arms, daily, ExperimentSettings(**RR))
    none, learned = report["arms"]["none"], report["arms"]["learned"]
    assert none["requests"] + learned["requests"] == 600 and none["units"] == none["requests"]
    lo, hi = learned["resolution_rate"]["low"], learned["resolution_rate"]["high"]
    assert lo < learned["resolution_rate"]["estimate"] < hi and hi > 0.5
    assert learned["escalation_rate"]["estimate"] == pytest.approx(0.25, abs=0.06)
    assert 1 <= learned["rating"]["low"] < learned["rating"]["estimate"] < learned["rating"]["high"] <= 5
    assert learned["cost_per_resolved_usd"] > 0.001 and learned["latency_p95_ms"] > learned["latency_p50_ms"]
    diff = report["vs_control"]["learned"]
    assert diff["resolution_rate"]["low"] > 0 and diff["resolution_rate"]["p_value"] < 0.001
    assert diff["sequential"]["p_value"] < 0.05 and not report["srm"]["mismatch"]
    assert report["days"] == 1 and {d["arm"] for d in report["daily"]} == {"none", "learned"}
    text = format_report(report)
    assert "learned vs none: resolution +" in text and json.loads(text.splitlines()[-1])["experiment"] == "rr"


def test_srm_flags_a_broken_split() -> None:
    rows = [
        {"arm": "none", "units": 1300, "requests": 1300, "with_feedback": 1300, "resolved": 400},
        {"arm": "learned", "units": 700, "requests": 700, "with_feedback": 700, "resolved": 210},
    ]
    report = build_report("rr", rows, [], ExperimentSettings(**RR))
    assert report["srm"]["mismatch"] and "MISMATCH" in format_report(report)
    assert not report["vs_control"]["learned"]["sequential"]["p_value"] < 0.05


def test_feedback_and_experiment_over_http(live_db: LiveDB, kb_settings) -> None:
    from serve_app.http import create_app

    ids = _seed(live_db, "http-a", 40, {"none": 0.5, "learned": 0.5}, seed=2)
    app = create_app()
    db = Database.of(kb_settings)
    app.state.experiments = DbExperiments(db, Experiments([RR], rerankers={"none", "learned"}))
    with TestClient(app) as client:
        h = {"X-Tenant-Id": "http-a"}
        body = {"request_id": str(ids[0]), "resolved": True, "rating": 5, "comment": "great"}
        one = client.post("/v1/feedback", json=body, headers=h)
        two = client.post("/v1/feedback", json=body, headers=h)
        assert one.status_code == two.status_code == 200 and one.json()["rating"] == 5
        assert one.json()["request_id"] == two.json()["request_id"] == str(ids[0])
        assert client.post("/v1/feedback", json=body, headers={"X-Tenant-Id": "http-b"}).status_code == 404
        unknown = {**body, "request_id": str(uuid.uuid4())}
        assert client.post("/v1/feedback", json=unknown, headers=h).status_code == 404
        for bad in ({**body, "rating": 6}, {**body, "rating": 0}, {**body, "request_id": "nope"}):
            assert client.post("/v1/feedback", json=bad, headers=h).status_code == 422
        report = client.get("/v1/experiments/rr", headers=h)
        assert report.status_code == 200
        got = report.json()
        assert sum(a["requests"] for a in got["arms"].values()) == 40 and got["tenant_id"] == "http-a"
        other = client.get("/v1/experiments/rr", headers={"X-Tenant-Id": "http-b"}).json()
        assert sum(a["requests"] for a in other["arms"].values()) == 0  # RLS: none of http-a's rows
        assert client.get("/v1/experiments/nope", headers=h).status_code == 404
        client.portal.call(db.close)


def test_ab_report_command(
    live_db: LiveDB, kb_settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve_app.cli import main

    _seed(live_db, "cli-a", 30, {"none": 0.4, "learned": 0.6}, seed=3)
    _seed(live_db, "cli-b", 30, {"none": 0.4, "learned": 0.6}, seed=4)
    monkeypatch.setenv("SUPPORTGRAPH_STATE_DIR", str(kb_settings.state_dir))
    rr = json.dumps([RR])
    monkeypatch.setenv("SUPPORTGRAPH_EXPERIMENTS", rr)
    assert main(["ab-report", "rr", "--tenant", "cli-a"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("experiment rr  control=none") and "sample ratio" in lines[-2]
    one = json.loads(lines[-1])
    assert sum(a["requests"] for a in one["arms"].values()) == 30 and one["tenant_id"] == "cli-a"
    assert main(["ab-report", "rr"]) == 0  # every tenant's (the embedded admin bypasses RLS)
    every = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sum(a["requests"] for a in every["arms"].values()) >= 60 and every["tenant_id"] is None
    assert main(["ab-report", "nope"]) == 2


def test_paired_bootstrap_sees_a_shift_and_not_noise() -> None:
    from serve_app.experiments.offline import paired_bootstrap

    rng = np.random.default_rng(5)
    base = rng.random(200)
    same = paired_bootstrap(base, base)
    assert same == {"estimate": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}
    shifted = paired_bootstrap(base, base + 0.1 + rng.normal(0, 0.05, 200))
    assert shifted["low"] < 0.1 < shifted["high"] and shifted["low"] > 0 and shifted["p_value"] < 0.01
    noise = paired_bootstrap(base, base + rng.normal(0, 0.05, 200))
    assert noise["low"] < 0 < noise["high"]
    # pairing: the shared per-query spread cancels, so the paired interval is far narrower than unpaired
    se_unpaired = math.sqrt(2 * base.var() / 200)
    assert shifted["high"] - shifted["low"] < se_unpaired


def test_evaluate_arms_scores_every_arm_on_the_same_queries() -> None:
    from types import SimpleNamespace

    from serve_app.experiments.offline import evaluate_arms
    from serve_app.knowledge.evaluate import Query

    class Fake:
        def __init__(self) -> None:
            self.rerankers = {"learned": None, "none": None}
            self.calls: list[tuple[str, str]] = []

        async def search(self, tenant, text, *, mode, top_k, arm):
            self.calls.append((text, arm))
            order = ["good", "bad"] if arm == "learned" or text == "q0" else ["bad", "good"]
            hits = [SimpleNamespace(passage=SimpleNamespace(source=f"{d}.md")) for d in order]
            return SimpleNamespace(hits=hits, usage=[])

    queries = [Query(f"q{i}", f"q{i}") for i in range(10)]
    qrels = {f"q{i}": {"good"} for i in range(10)}
    fake = Fake()
    import asyncio

    got = asyncio.run(evaluate_arms(fake, "t", queries, qrels, ["none", "learned"], draws=500))
    assert got["arms"]["learned"]["MRR@10"] == 1.0 and got["arms"]["none"]["MRR@10"] == 0.55
    assert got["vs_control"]["learned"]["MRR@10"]["estimate"] == pytest.approx(0.45)
    assert got["vs_control"]["learned"]["R@5"]["estimate"] == 0.0  # both found it in the top 5
    assert sorted(fake.calls) == sorted((f"q{i}", a) for i in range(10) for a in ("none", "learned"))
    with pytest.raises(ValueError, match="unknown"):
        asyncio.run(evaluate_arms(fake, "t", queries, qrels, ["none", "cohere"]))
