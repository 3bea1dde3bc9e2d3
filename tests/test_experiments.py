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
from serve_app.experiments.stats import UnitSums
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
    from supportgraph_tools.experiments.offline import paired_bootstrap

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

    from supportgraph_tools.experiments.offline import evaluate_arms
    from supportgraph_tools.knowledge.evaluate import Query

    class Fake:
        def __init__(self) -> None:
            self.rerankers = {"learned": None, "none": None}
            self.calls: list[tuple[str, str]] = []

        async def search(self, tenant, text, *, mode, top_k, arm=None):
            if mode == "dense":  # the untimed search that caches the query embedding
                return SimpleNamespace(hits=[], usage=[])
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


def test_a_session_experiment_is_reported_over_sessions(live_db: LiveDB) -> None:
    """Sessions of several requests whose outcomes go together: the database's unit sums are the log's,
    the report analyses sessions (delta method), and its interval is wider than the per-request one."""
    rng = np.random.default_rng(11)
    exps = Experiments([RR], rerankers={"none", "learned"})
    log = []

    async def go() -> None:
        for _ in range(60):
            sid, size = uuid.uuid4(), int(rng.integers(1, 9))
            solved = rng.random() < 0.5  # the session's question: all its requests resolve alike, mostly
            for i in range(size):
                rid = uuid.uuid4()
                assigned = exps.assign("unit-a", sid, rid)
                implicit = ImplicitOutcome(bool(i == 0), "extractive", 0.6, 0.002, 20.0)
                await record_request(live_db.db, "unit-a", rid, sid, assigned, implicit)
                resolved = bool(solved if rng.random() < 0.9 else not solved)
                await record_feedback(live_db.db, "unit-a", rid, resolved, 4 if resolved else 2)
                row = {"day": None, "arm": assigned[0].arm, "unit": str(sid), "resolved": resolved}
                log.append(row | {"rating": 4 if resolved else 2, "escalated": i == 0, "cost_usd": 0.002})

    live_db.run(go())
    arms, daily = live_db.run(report_rows(live_db.db, "rr", "unit-a"))
    by_arm = {r["arm"]: r for r in arms}
    for arm in ("none", "learned"):
        rows = [r for r in log if r["arm"] == arm]
        units = {u: [r for r in rows if r["unit"] == u] for u in {r["unit"] for r in rows}}
        fed = [len(v) for v in units.values()]
        res = [sum(r["resolved"] for r in v) for v in units.values()]
        cost = [0.002 * len(v) for v in units.values()]
        expected = {
            "res": UnitSums.of(fed, res),
            "rat": UnitSums.of(fed, [4 * r + 2 * (f - r) for f, r in zip(fed, res, strict=True)]),
            "esc": UnitSums.of(fed, [1] * len(fed)),
            "cpr": UnitSums.of(res, cost),
        }
        for prefix, sums in expected.items():
            got = UnitSums.from_row(by_arm[arm], prefix)
            assert got.n == sums.n and got.x == sums.x
            assert (got.y, got.xx, got.yy, got.xy) == pytest.approx((sums.y, sums.xx, sums.yy, sums.xy))
        (today,) = [d for d in daily if d["arm"] == arm]  # one day: the cumulative read is the whole arm
        assert UnitSums.from_row(today, "cum_res") == UnitSums.from_row(by_arm[arm], "res")
    report = build_report("rr", arms, daily, ExperimentSettings(**RR))
    per_request = build_report("rr", arms, daily, ExperimentSettings(**{**RR, "unit": "request"}))
    assert report["analysis"] == "session" and per_request["analysis"] == "request"
    for arm in ("none", "learned"):
        ours, naive = report["arms"][arm]["resolution_rate"], per_request["arms"][arm]["resolution_rate"]
        assert (
            ours["estimate"] == naive["estimate"]
            and ours["high"] - ours["low"] > naive["high"] - naive["low"]
        )
        assert report["arms"][arm]["cost_per_resolved"]["low"] >= 0
    diff, naive_diff = report["vs_control"]["learned"], per_request["vs_control"]["learned"]
    assert diff["resolution_rate"]["high"] - diff["resolution_rate"]["low"] > (
        naive_diff["resolution_rate"]["high"] - naive_diff["resolution_rate"]["low"]
    )
    assert set(diff) == {"resolution_rate", "sequential", "rating", "escalation_rate", "cost_per_resolved"}
    assert "intervals over sessions (delta method)" in format_report(report).splitlines()[0]


def test_a_simulated_tenant_aa_test_is_flagged_per_request_but_not_per_tenant() -> None:
    """A/A with 20 tenants (about 10 an arm) of about 42 correlated requests each over 7 days: read per
    request the report finds a difference that is not there far more often than read per tenant."""
    from serve_app.experiments.simulate import aggregate, simulate_log

    tenant = ExperimentSettings(name="aa", arms={"a": 1, "b": 1}, unit="tenant")
    request = ExperimentSettings(name="aa", arms={"a": 1, "b": 1}, unit="request")
    seeds, flagged = 40, Counter()
    for seed in range(seeds):
        log = simulate_log(
            tenant,
            {"a": 0.5, "b": 0.5},
            days=7,
            per_day=120,
            seed=seed,
            requests_per_unit=42,
            unit_spread=1.5,
        )
        arms, daily = aggregate(log)
        for name, exp in (("tenant", tenant), ("request", request)):
            diff = build_report("aa", arms, daily, exp)["vs_control"]["b"]
            flagged[name] += diff["resolution_rate"]["p_value"] < 0.05
            flagged[name + " sequential"] += diff["sequential"]["p_value"] < 0.05
    assert flagged["tenant"] / seeds <= 0.15 and flagged["tenant sequential"] / seeds <= 0.1
    assert flagged["request"] / seeds >= 0.4 and flagged["request"] >= 3 * max(1, flagged["tenant"])


def test_the_recorded_arm_is_the_served_arm_when_the_configuration_changes_mid_request(
    kb_settings,
) -> None:
    """The Router deployment's class without Serve: a reconfiguration that lands between a request's
    retrieval and its recording does not change the arm it is recorded under."""
    import asyncio
    from types import SimpleNamespace

    from deployments.router import Router
    from serve_app.routing.providers.base import Message
    from serve_app.routing.service import ChatRequest

    settings = load_settings(
        None,
        state_dir=kb_settings.state_dir,
        routing={"tiers": [{"name": "extractive", "backend": "extractive", "model": "extractive-grounded"}]},
    )
    flip = {**RR, "arms": {"none": 1, "learned": 0}}
    served: list[str] = []

    async def search(**kwargs):
        served.append(kwargs["arm"])
        router.reconfigure({"experiments": [{**flip, "arms": {"none": 0, "learned": 1}}]})
        return {"passages": []}

    router = Router(
        settings.routing,
        settings.screen,
        settings.pricing,
        settings.db,
        settings.state_dir,
        knowledge=SimpleNamespace(search=SimpleNamespace(remote=search)),
        experiments=Experiments([flip], rerankers={"none", "learned"}),
    )

    async def scenario() -> list[str]:
        sid = uuid.uuid4()
        reply = await router.chat(
            ChatRequest("arm-r", (Message("user", "How do I export?"),), session_id=sid)
        )
        request_id = uuid.UUID(reply["routing"]["request_id"])
        async with router.db.tenant("arm-r") as conn:
            arms = await conn.fetch("SELECT arm FROM request_arms WHERE request_id = $1", request_id)
        await router.__del__()
        return [r["arm"] for r in arms]

    assert asyncio.run(scenario()) == served == ["none"]


def test_feedback_and_reports_act_for_the_api_keys_tenant(live_db: LiveDB, kb_settings) -> None:
    """With API keys: feedback on another tenant's request is a 404 like an unknown one, naming another
    tenant is a 403, no key a 401; a report shows the key's tenant's rows only."""
    from serve_app.auth import KeyVerifier, new_key
    from serve_app.http import Access, create_app
    from tests.test_auth import bearer, memory_lookup

    ids = _seed(live_db, "keya", 20, {"none": 0.5, "learned": 0.5}, seed=5)
    key_a, key_b = new_key("keya"), new_key("keyb")
    app = create_app(access=Access(KeyVerifier(memory_lookup({key_a, key_b}))))
    db = Database.of(kb_settings)
    app.state.experiments = DbExperiments(db, Experiments([RR], rerankers={"none", "learned"}))
    with TestClient(app) as client:
        body = {"request_id": str(ids[0]), "resolved": False, "rating": 2}
        assert client.post("/v1/feedback", json=body).status_code == 401
        assert client.post("/v1/feedback", json=body, headers=bearer(key_b)).status_code == 404
        named = client.post("/v1/feedback", json={**body, "tenant_id": "keya"}, headers=bearer(key_b))
        assert named.status_code == 403
        own = client.post("/v1/feedback", json=body, headers=bearer(key_a))
        assert own.status_code == 200 and own.json()["resolved"] is False
        mine = client.get("/v1/experiments/rr", headers=bearer(key_a)).json()
        theirs = client.get("/v1/experiments/rr", headers=bearer(key_b)).json()
        assert sum(a["requests"] for a in mine["arms"].values()) == 20
        assert sum(a["requests"] for a in theirs["arms"].values()) == 0
        peek = client.get("/v1/experiments/rr", params={"tenant_id": "keya"}, headers=bearer(key_b))
        assert peek.status_code == 403
        client.portal.call(db.close)


def test_the_daily_unit_sums_accumulate_each_units_requests_as_the_simulation_does(live_db: LiveDB) -> None:
    """Sessions whose requests fall on three days: the database's daily rows (that day's counts and the
    cumulative unit sums the sequential test reads) are what `simulate.aggregate` makes of the same log."""
    import asyncpg

    from serve_app.experiments.simulate import aggregate

    rng = np.random.default_rng(12)
    exps = Experiments([RR], rerankers={"none", "learned"})
    log, moved = [], []

    async def go() -> None:
        for _ in range(40):
            sid = uuid.uuid4()
            for _ in range(int(rng.integers(1, 6))):
                rid, day = uuid.uuid4(), int(rng.integers(1, 4))
                assigned = exps.assign("days-a", sid, rid)
                await record_request(live_db.db, "days-a", rid, sid, assigned, None)
                resolved = bool(rng.random() < 0.5)
                await record_feedback(live_db.db, "days-a", rid, resolved)
                moved.append((rid, datetime(2026, 1, day, 12, tzinfo=UTC)))
                log.append(
                    {"day": datetime(2026, 1, day).date(), "arm": assigned[0].arm, "unit": str(sid)}
                    | {
                        "resolved": resolved,
                        "rating": None,
                        "escalated": None,
                        "cost_usd": 0.0,
                        "latency_ms": 1,
                    }
                )
        owner = await asyncpg.connect(live_db.db.admin_dsn)
        try:
            await owner.executemany("UPDATE request_arms SET created_at = $2 WHERE request_id = $1", moved)
        finally:
            await owner.close()

    live_db.run(go())
    _, daily = live_db.run(report_rows(live_db.db, "rr", "days-a"))
    _, expected = aggregate(log)
    keys = ("day", "arm", "with_feedback", "resolved", "cum_res_n", "cum_res_x", "cum_res_y")
    assert [tuple(r[k] for k in keys) for r in daily] == [tuple(r[k] for k in keys) for r in expected]
    for got, want in zip(daily, expected, strict=True):
        assert UnitSums.from_row(got, "cum_res") == UnitSums.from_row(want, "cum_res")
    assert len({r["day"] for r in daily}) == 3
