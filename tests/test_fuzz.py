"""Bad input, generated: every operation of the HTTP API fuzzed from its OpenAPI schema (schemathesis) on
the in-process app with API keys on. No 5xx, and every 4xx says what is wrong. What schemathesis does
not generate is generated here from the same schema: a lone UTF-16 surrogate in any string of any JSON
body, and any mix of naive and aware datetimes (any offset, range edges) in every date-time parameter.
Plus hostile text (SQL-looking, unicode, huge) against the real retrieval path on Postgres."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from serve_app.auth import KeyVerifier, RateLimiter, key_hash, new_key
from serve_app.backends import LocalFrameBackend
from serve_app.frames.service import DedupService
from serve_app.handoff.errors import HandoffNotFound
from serve_app.http import Access, create_app
from tests.chat import LocalChat
from tests.conftest import LiveDB

KEY = new_key("fuzz")


class KnowledgeDouble:
    """The knowledge backend's contract without Postgres (the DB path is fuzzed below, directly)."""

    async def search(self, tenant_id: str, query: str, mode: str, top_k: int) -> dict[str, Any]:
        return {"query": query, "mode": mode, "arm": None, "passages": [], "timings_ms": {"total": 0.1}}

    async def stats(self) -> dict[str, Any]:
        return {"arms": {}}


class ExperimentsDouble:
    """The experiments backend's contract without Postgres: no request is known, one experiment is."""

    async def feedback(self, tenant_id, request_id, resolved, rating, comment) -> dict[str, Any] | None:
        return None

    async def experiment_report(self, tenant_id: str | None, name: str) -> dict[str, Any] | None:
        return {"experiment": name, "arms": {}} if name == "reranker" else None


class HandoffsDouble:
    """The handoff backend's contract without Postgres: no handoff is known; a created one is queued."""

    async def list(self, tenant, caller, status, limit) -> dict[str, Any]:
        return {"handoffs": []}

    async def get(self, tenant, handoff_id, caller) -> dict[str, Any]:
        raise HandoffNotFound(f"no handoff {handoff_id} for tenant {tenant!r}")

    async def create(
        self, tenant, caller, messages, reason, session_id, stream_id, room, note
    ) -> dict[str, Any]:
        return {
            "id": "00000000-0000-4000-8000-000000000000",
            "status": "queued",
            "position": 1,
            "eta_s": 300.0,
        }

    async def claim(self, tenant, handoff_id, caller, name) -> dict[str, Any]:
        raise HandoffNotFound(f"no handoff {handoff_id} for tenant {tenant!r}")

    resolve = give_back = claim


def build_app():
    async def lookup(tenant: str, digest: bytes) -> bool:
        return digest == key_hash(KEY)

    app = create_app(access=Access(KeyVerifier(lookup), RateLimiter(1e9, 1e12)))
    app.state.frames = LocalFrameBackend(DedupService())
    app.state.knowledge = KnowledgeDouble()
    app.state.chat = LocalChat()
    app.state.experiments = ExperimentsDouble()
    app.state.handoffs = HandoffsDouble()
    return app


schema = schemathesis.openapi.from_asgi("/openapi.json", build_app())


def says_what_is_wrong(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx carries a JSON `detail` message."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and body.get("detail"), f"{response.status_code} without a detail"
    return None


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_bad_input_with_a_5xx(case: Any) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {KEY}"}, checks=[not_a_server_error, says_what_is_wrong]
    )


APP = build_app()
OPERATIONS = [
    result.ok() for result in schemathesis.openapi.from_asgi("/openapi.json", APP).get_all_operations()
]
AUTH = {"Authorization": f"Bearer {KEY}"}


def _string_paths(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _string_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for n, v in enumerate(value) for p in _string_paths(v, (*path, n))]
    return []


def _put(value: Any, path: tuple, leaf: str) -> Any:
    if not path:
        return leaf
    value[path[0]] = _put(value[path[0]], path[1:], leaf)
    return value


def _send(case: Any, **kwargs: Any) -> Any:
    client = TestClient(APP, raise_server_exceptions=False)
    headers = {**(case.headers or {}), **AUTH, **kwargs.pop("headers", {})}
    return client.request(case.method, case.formatted_path, params=case.query, headers=headers, **kwargs)


lone_surrogates = st.builds(
    lambda before, code, after: before + chr(code) + after,
    st.text(max_size=8),
    st.integers(0xD800, 0xDFFF),
    st.text(max_size=8),
)


@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op.body], ids=lambda op: op.path)
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_lone_surrogate_in_any_json_string_is_a_422(operation: Any, data: st.DataObject) -> None:
    case = data.draw(operation.as_strategy())
    body, bad = case.body, data.draw(lone_surrogates)
    strings = _string_paths(body)
    if strings and data.draw(st.booleans()):
        body = _put(body, data.draw(st.sampled_from(strings)), bad)
    elif isinstance(body, dict):
        body[bad] = "an unknown field, named with a surrogate"
    else:
        body = bad
    raw = json.dumps(body).encode()  # escapes the surrogate as \udXXX, as a JSON client would send it
    response = _send(case, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "not valid Unicode" in response.json()["detail"]


def _date_time_params(operation: Any) -> list[str]:
    return [p.name for p in operation.iter_parameters() if '"date-time"' in json.dumps(p.definition)]


offsets = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)),
)
moments = st.datetimes(timezones=st.none() | offsets).map(datetime.isoformat) | st.dates().map(str)


@pytest.mark.parametrize(
    "operation", [op for op in OPERATIONS if _date_time_params(op)], ids=lambda op: op.path
)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_mix_of_naive_and_aware_datetimes_is_answered_without_a_5xx(
    operation: Any, data: st.DataObject
) -> None:
    case = data.draw(operation.as_strategy())
    case.query = {**(case.query or {}), **{n: data.draw(moments) for n in _date_time_params(operation)}}
    response = _send(case)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json().get("detail")
    elif "until" in response.json():  # the in-process costs backend echoes what it was given: in UTC
        assert all(v is None or v.endswith("Z") for v in (response.json()["since"], response.json()["until"]))


HOSTILE = [
    "'; DROP TABLE knowledge_chunks; --",
    "refund\x00 policy",
    "1 OR 1=1 UNION SELECT * FROM api_keys",
    "ünïcödé 退款 🙂 \u202e\u200b",
    "&|!():*<->  \\ % _",
    "x" * 2000,
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_reach_postgres_harmlessly(live_db: LiveDB, embedder, query: str) -> None:
    from serve_app.knowledge.adapters import ThreadedEmbedder
    from serve_app.knowledge.query import QueryError
    from serve_app.knowledge.retrieval import Retriever

    retriever = Retriever(live_db.db, ThreadedEmbedder(embedder))

    async def scenario():
        try:
            result = await retriever.search("fuzz-db", query, mode="hybrid")
        except QueryError as exc:  # refused with a message: fine, as long as nothing broke
            return str(exc)
        async with live_db.db.tenant("fuzz-db") as conn:
            await conn.fetchval("SELECT count(*) FROM knowledge_chunks")  # the table is still there
        return result

    outcome = live_db.run(scenario())
    assert isinstance(outcome, str) or outcome.hits == []
