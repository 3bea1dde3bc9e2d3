"""API keys and per-tenant rate limits: key format and storage (hashed, under RLS), verification with a
bounded cache, 401/403/429 on the HTTP API, and the keys command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_app.auth import (
    KeyVerifier,
    RateLimiter,
    create_key,
    db_lookup,
    key_hash,
    key_prefix,
    key_tenant,
    list_keys,
    new_key,
    revoke_key,
)
from serve_app.backends import LocalFrameBackend
from serve_app.cli import main
from serve_app.frames.service import DedupService
from serve_app.http import Access, create_app
from tests.conftest import LiveDB


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def memory_lookup(live: set[str]):
    hashes = {key_hash(k) for k in live}

    async def lookup(tenant: str, digest: bytes) -> bool:
        return digest in hashes

    return lookup


def test_keys_name_their_tenant_and_are_stored_hashed() -> None:
    key = new_key("acme")
    assert key.startswith("sgk_acme_") and len(key) == len("sgk_acme_") + 43
    assert key_tenant(key) == "acme" and key_tenant("sgk_Acme_x") is None and key_tenant("hello") is None
    assert key_prefix(key) == key[: len("sgk_acme_") + 6]
    assert len(key_hash(key)) == 32 and key_hash(key) != key_hash(new_key("acme"))


def test_verifier_caches_for_the_ttl_then_sees_revocation() -> None:
    key, clock = new_key("acme"), Clock()
    live = {key}
    calls: list[str] = []

    async def lookup(tenant: str, digest: bytes) -> bool:
        calls.append(tenant)
        return key in live and digest == key_hash(key)

    verifier = KeyVerifier(lookup, cache_ttl_s=60, clock=clock)
    assert asyncio.run(verifier.tenant_of(key)) == "acme"
    assert asyncio.run(verifier.tenant_of(key)) == "acme" and calls == ["acme"]  # cached
    live.clear()  # revoked
    clock.now = 61
    assert asyncio.run(verifier.tenant_of(key)) is None
    assert asyncio.run(verifier.tenant_of("sgk_acme_short")) is None and len(calls) == 2


def test_rate_limits_refill_per_tenant() -> None:
    clock = Clock()
    limiter = RateLimiter(
        requests_per_min=3, tokens_per_min=600, overrides={"big": (100, 10_000)}, clock=clock
    )
    assert [limiter.admit("acme") for _ in range(3)] == [None, None, None]
    wait = limiter.admit("acme")
    assert wait is not None and 19 <= wait <= 21  # one request every 20 s
    assert limiter.admit("other") is None and all(limiter.admit("big") is None for _ in range(50))
    clock.now = 21
    assert limiter.admit("acme") is None
    limiter.charge_tokens("acme", 1200)  # an answer used two minutes' worth of tokens
    clock.now = 80
    assert limiter.admit("acme", needs_tokens=True) is not None  # chat waits for the token bucket
    assert limiter.admit("acme") is None  # other routes do not


def keyed(requests_per_min: float = 100):
    acme, globex = new_key("acme"), new_key("globex")
    limiter = RateLimiter(requests_per_min, 1000)
    app = create_app(access=Access(KeyVerifier(memory_lookup({acme, globex})), limiter))
    app.state.frames = LocalFrameBackend(DedupService())
    return TestClient(app), acme, globex


@pytest.fixture()
def keyed_app():
    return keyed()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_route_but_health_needs_a_live_key(keyed_app) -> None:
    client, acme, _ = keyed_app
    assert client.get("/healthz").status_code == 200
    missing = client.get("/v1/streams/tenant_acme_r1/stats")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/streams/tenant_acme_r1/stats", headers=bearer(new_key("acme"))).status_code == 401
    assert client.get("/v1/streams/tenant_acme_r1/stats", headers=bearer(acme)).status_code == 200
    assert client.get("/v1/streams/tenant_acme_r1/stats", headers={"X-API-Key": acme}).status_code == 200
    for path in ("/v1/models", "/v1/router", "/v1/knowledge/stats", "/v1/costs"):
        assert client.get(path).status_code == 401, path


def test_a_key_reaches_only_its_own_tenant(keyed_app) -> None:
    client, acme, _ = keyed_app
    frame = np.zeros((24, 32, 3), np.uint8).tobytes()
    url = "/v1/streams/tenant_globex_r1.screen/frames?width=32&height=24"
    other = client.post(
        url, content=frame, headers={**bearer(acme), "content-type": "application/octet-stream"}
    )
    assert other.status_code == 403 and "another tenant" in other.json()["detail"]
    assert client.delete("/v1/streams/tenant_globex_r1", headers=bearer(acme)).status_code == 403
    search = {"tenant_id": "globex", "query": "refunds"}
    assert client.post("/v1/knowledge/search", json=search, headers=bearer(acme)).status_code == 403
    chat = {"messages": [{"role": "user", "content": "hi"}], "tenant_id": "globex"}
    assert client.post("/v1/chat/completions", json=chat, headers=bearer(acme)).status_code == 403
    assert client.get("/v1/costs?tenant_id=globex", headers=bearer(acme)).status_code == 403
    spoofed = {**bearer(acme), "X-Tenant-Id": "globex"}
    assert client.get("/v1/costs", headers=spoofed).status_code == 403


def test_rate_limit_answers_429_with_retry_after() -> None:
    client, acme, globex = keyed(requests_per_min=5)
    codes = [
        client.get("/v1/streams/tenant_acme_r1/stats", headers=bearer(acme)).status_code for _ in range(7)
    ]
    assert codes == [200] * 5 + [429] * 2
    limited = client.get("/v1/streams/tenant_acme_r1/stats", headers=bearer(acme))
    assert int(limited.headers["retry-after"]) >= 1 and "rate limit" in limited.json()["detail"]
    assert client.get("/v1/streams/tenant_globex_r1/stats", headers=bearer(globex)).status_code == 200


def test_keys_in_postgres_are_hashed_tenant_scoped_and_revocable(live_db: LiveDB) -> None:
    async def scenario():
        key = await create_key(live_db.db, "keys-a", "ci")
        lookup = db_lookup(live_db.db)
        live = await lookup("keys-a", key_hash(key))
        other_tenant = await lookup("keys-b", key_hash(key))  # RLS: another tenant never sees the row
        async with live_db.db.tenant("keys-a") as conn:
            stored = await conn.fetchrow("SELECT prefix, key_hash FROM api_keys")
        listed = await list_keys(live_db.db, "keys-a")
        revoked = await revoke_key(live_db.db, "keys-a", key_prefix(key))
        after = await lookup("keys-a", key_hash(key))
        return key, live, other_tenant, stored, listed, revoked, after

    key, live, other_tenant, stored, listed, revoked, after = live_db.run(scenario())
    assert live and not other_tenant and not after and revoked == 1
    assert bytes(stored["key_hash"]) == key_hash(key) and key not in str(dict(stored))
    assert (
        listed[0]["prefix"] == key_prefix(key)
        and listed[0]["name"] == "ci"
        and listed[0]["revoked_at"] is None
    )


def test_keys_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve_app.db.database import stop_embedded

    monkeypatch.setenv("SUPPORTGRAPH_STATE_DIR", str(tmp_path / "state"))
    try:
        assert main(["keys", "create", "--tenant", "cli-k", "--name", "laptop"]) == 0
        key = capsys.readouterr().out.strip()
        assert key_tenant(key) == "cli-k"
        assert main(["keys", "list", "--tenant", "cli-k"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [k["prefix"] for k in listed] == [key_prefix(key)] and key not in json.dumps(listed)
        assert main(["keys", "revoke", "--tenant", "cli-k", "--prefix", key_prefix(key)]) == 0
        assert main(["keys", "revoke", "--tenant", "cli-k", "--prefix", key_prefix(key)]) == 2
        assert main(["keys", "revoke", "--tenant", "cli-k"]) == 2
    finally:
        stop_embedded(tmp_path / "state" / "pgdata")


def test_frame_uploads_have_their_own_budget() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_min=2, tokens_per_min=100, frames_per_min=60, clock=clock)
    assert all(limiter.admit("acme", frame=True) is None for _ in range(60))  # a second of 30 fps x 2
    assert limiter.admit("acme", frame=True) is not None
    assert (
        limiter.admit("acme") is None and limiter.admit("acme") is None and limiter.admit("acme") is not None
    )
