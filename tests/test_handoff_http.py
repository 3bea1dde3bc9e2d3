"""Human handoff end to end over HTTP, in process, on an embedded Postgres: a chat turn that asks for a
person is handed off (durably: a new service instance finds it), the tenant's agent key lists, claims
(a LiveKit token for exactly that room), resolves (a 'human' cost event) or returns it (the note reaches
the next turn); another tenant's keys see nothing; roles; 409/404/422/503; out-of-hours replies."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import jwt
import pytest
from fastapi.testclient import TestClient
from livekit import api

from serve_app.auth import KeyVerifier, create_key, db_lookup
from serve_app.costs.ledger import cost_report
from serve_app.db.database import Database
from serve_app.handoff.desk import HandoffDesk
from serve_app.http import Access, create_app
from serve_app.settings import HandoffSettings, Settings
from tests.chat import LocalChat, extractive_service

LK_KEY, LK_SECRET = "lk-test-key", "lk-test-secret-that-is-long-enough-for-hs256"
WEEKDAYS_9_TO_5 = {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}


@pytest.fixture(scope="module")
def keys(kb_settings: Settings) -> dict[str, str]:
    async def make() -> dict[str, str]:
        async with Database.of(kb_settings) as db:
            return {
                "admin": await create_key(db, "hand-a"),
                "agent": await create_key(db, "hand-a", "dana", role="agent"),
                "client": await create_key(db, "hand-a", "widget", role="client"),
                "client2": await create_key(db, "hand-a", "other widget", role="client"),
                "other_agent": await create_key(db, "hand-b", "eve", role="agent"),
            }

    return asyncio.run(make())


@contextmanager
def app_client(settings: Settings, cfg: HandoffSettings | None = None, clock=None) -> Iterator[TestClient]:
    """The HTTP app with a fresh service instance (its own pool, started on first use in the app's loop)."""
    db = Database.of(settings)
    lookup = db_lookup(db)

    async def live(tenant: str, digest: bytes) -> str | None:
        await db.ready()
        return await lookup(tenant, digest)

    desk = HandoffDesk(cfg or HandoffSettings(), db, **({"clock": clock} if clock else {}))
    service = extractive_service()
    service.handoffs = desk
    app = create_app(access=Access(KeyVerifier(live)))
    app.state.chat, app.state.handoffs = LocalChat(service), desk
    with TestClient(app) as client:
        client.desk = desk  # type: ignore[attr-defined]
        yield client
        client.portal.call(db.close)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ask(client: TestClient, key: str, text: str, session: uuid.UUID, **more) -> dict:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], "session_id": str(session)}
    reply = client.post("/v1/chat/completions", json={**body, **more}, headers=auth(key))
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_person_is_asked_for_handed_off_claimed_and_resolved(
    kb_settings: Settings, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", LK_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", LK_SECRET)
    monkeypatch.setenv("LIVEKIT_URL", "wss://lk.example")
    session = uuid.uuid4()
    with app_client(kb_settings) as client:
        reply = ask(client, keys["client"], "Can I talk to a person?", session)
        text, handoff = reply["choices"][0]["message"]["content"], reply["supportgraph"]["handoff"]
        assert handoff["status"] == "queued" and handoff["position"] >= 1 and handoff["eta_s"] > 0
        assert "person from our support team" in text and "number" in text and "Export" not in text
        again = ask(client, keys["client"], "agent!!", session)  # one open handoff per session
        assert again["supportgraph"]["handoff"]["id"] == handoff["id"]
    # a new service instance (a restarted Router replica) finds the handoff: it was written before the reply
    with app_client(kb_settings) as client:
        queue = client.get("/v1/handoffs", params={"status": "queued"}, headers=auth(keys["agent"]))
        mine = [h for h in queue.json()["handoffs"] if h["id"] == handoff["id"]]
        assert queue.status_code == 200 and len(mine) == 1
        assert mine[0]["reason"] == "asked" and "asked for a person" in mine[0]["summary"]
        assert mine[0]["transcript"][0] == {"role": "user", "content": "Can I talk to a person?"}
        assert mine[0]["position"] >= 1 and mine[0]["eta_s"] > 0

        claim = client.post(
            f"/v1/handoffs/{handoff['id']}/claim", json={"name": "Dana"}, headers=auth(keys["agent"])
        )
        assert claim.status_code == 200, claim.text
        body = claim.json()
        room = f"tenant_hand-a_handoff-{uuid.UUID(handoff['id']).hex[:12]}"
        assert body["status"] == "claimed" and body["room"] == room and "lk.example" in body["join_url"]
        grant = api.TokenVerifier(LK_KEY, LK_SECRET).verify(body["token"])
        assert grant.video.room == room and grant.video.room_join and grant.identity == "human-Dana"
        assert grant.attributes["supportgraph.role"] == "human"
        with pytest.raises(jwt.InvalidSignatureError):
            api.TokenVerifier(LK_KEY, "another-secret-that-is-long-enough-000").verify(body["token"])

        during = ask(client, keys["client"], "How do I export my notes?", session)  # a person has it now
        assert "has taken over your conversation" in during["choices"][0]["message"]["content"]
        assert during["supportgraph"]["handoff"]["status"] == "claimed"
        twice = client.post(f"/v1/handoffs/{handoff['id']}/claim", headers=auth(keys["agent"]))
        assert twice.status_code == 409 and "claimed" in twice.json()["detail"]
        # the customer follows it: claimed, with a join link of their own for the same room
        status = client.get(f"/v1/handoffs/{handoff['id']}", headers=auth(keys["client"])).json()
        assert status["status"] == "claimed" and "transcript" not in status
        customer = status["join_url"].split("token=")[1]
        from urllib.parse import unquote

        seen = api.TokenVerifier(LK_KEY, LK_SECRET).verify(unquote(customer))
        assert seen.video.room == room and seen.identity.startswith("customer-")

        async def ten_minutes_ago() -> None:  # the person worked on it for ten minutes
            async with client.desk.db.tenant("hand-a") as conn:
                await conn.execute(
                    "UPDATE handoffs SET claimed_at = now() - interval '10 minutes' WHERE id = $1",
                    uuid.UUID(handoff["id"]),
                )

        client.portal.call(ten_minutes_ago)
        done = client.post(
            f"/v1/handoffs/{handoff['id']}/resolve", json={"note": "refunded"}, headers=auth(keys["agent"])
        )
        assert done.status_code == 200 and done.json()["status"] == "resolved"
        report = client.portal.call(cost_report, client.desk.db, "hand-a")
        human = [r for r in report.rows if r["service"] == "human"]
        assert human and abs(human[0]["cost_usd"] - 7.5) < 0.05  # 10 min x $0.75 (the default rate)
        again = client.post(f"/v1/handoffs/{handoff['id']}/resolve", headers=auth(keys["agent"]))
        assert again.status_code == 409


def test_another_tenants_keys_and_client_keys_see_only_what_they_may(
    kb_settings: Settings, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", LK_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", LK_SECRET)
    with app_client(kb_settings) as client:
        made = client.post(
            "/v1/handoffs",
            json={"messages": [{"role": "user", "content": "my invoice is wrong"}], "note": "billing"},
            headers=auth(keys["client"]),
        )
        assert made.status_code == 200, made.text
        hid = made.json()["id"]
        assert made.json()["status"] == "queued" and "support team" in made.json()["message"]
        other = auth(keys["other_agent"])
        assert client.get(f"/v1/handoffs/{hid}", headers=other).status_code == 404
        assert client.post(f"/v1/handoffs/{hid}/claim", headers=other).status_code == 404
        assert hid not in str(client.get("/v1/handoffs", headers=other).json())
        named = client.get("/v1/handoffs", params={"tenant_id": "hand-a"}, headers=other)
        assert named.status_code == 403
        # client keys: create and follow their own, never act on one
        assert client.post(f"/v1/handoffs/{hid}/claim", headers=auth(keys["client"])).status_code == 403
        own = client.get("/v1/handoffs", headers=auth(keys["client"])).json()["handoffs"]
        assert hid in [h["id"] for h in own] and "transcript" not in own[0]
        assert client.get("/v1/handoffs", headers=auth(keys["client2"])).json()["handoffs"] == []
        # agent keys: the queue, not the chat or the costs; admin keys (the default role): everything
        assert ask_status(client, keys["agent"]) == 403
        assert client.get("/v1/costs", headers=auth(keys["agent"])).status_code == 403
        assert client.get("/v1/costs", headers=auth(keys["client"])).status_code == 403
        assert client.get("/v1/handoffs", headers=auth(keys["admin"])).status_code == 200
        # bad input and states: clear 4xx, never a 500
        assert client.post(f"/v1/handoffs/{hid}/resolve", headers=auth(keys["agent"])).status_code == 409
        assert (
            client.post(
                f"/v1/handoffs/{hid}/return", json={"note": ""}, headers=auth(keys["agent"])
            ).status_code
            == 422
        )
        assert client.get("/v1/handoffs/not-a-uuid", headers=auth(keys["agent"])).status_code == 422
        assert client.get(f"/v1/handoffs/{uuid.uuid4()}", headers=auth(keys["agent"])).status_code == 404
        assert (
            client.get("/v1/handoffs", params={"status": "lost"}, headers=auth(keys["agent"])).status_code
            == 422
        )
        bad_room = {"messages": [{"role": "user", "content": "hi"}], "room": "tenant_hand-b_r1"}
        assert client.post("/v1/handoffs", json=bad_room, headers=auth(keys["client"])).status_code == 403
        monkeypatch.delenv("LIVEKIT_API_SECRET")
        unconfigured = client.post(f"/v1/handoffs/{hid}/claim", headers=auth(keys["agent"]))
        assert (
            unconfigured.status_code == 503
            and "handoff.livekit_api_secret_env" in unconfigured.json()["detail"]
        )
        assert client.get(f"/v1/handoffs/{hid}", headers=auth(keys["agent"])).json()["status"] == "queued"


def ask_status(client: TestClient, key: str) -> int:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/chat/completions", json=body, headers=auth(key)).status_code


def test_a_returned_conversation_goes_back_to_the_ai_with_the_note(
    kb_settings: Settings, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", LK_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", LK_SECRET)
    session = uuid.uuid4()
    with app_client(kb_settings) as client:
        hid = ask(client, keys["client"], "I want to speak with a human", session)["supportgraph"]["handoff"][
            "id"
        ]
        assert client.post(f"/v1/handoffs/{hid}/claim", headers=auth(keys["agent"])).status_code == 200
        back = client.post(
            f"/v1/handoffs/{hid}/return", json={"note": "Order A1 ships Friday."}, headers=auth(keys["agent"])
        )
        assert back.status_code == 200 and back.json()["status"] == "returned"
        seen: list[str | None] = []
        service = client.app.state.chat.service
        original = service.prompt

        async def spy(request, *args, **kwargs):
            seen.append(request.system)
            return await original(request, *args, **kwargs)

        service.prompt = spy
        reply = ask(client, keys["client"], "How do I export my notes?", session)
        assert reply["supportgraph"]["handoff"] is None  # the session's handoff is closed
        assert seen and "Order A1 ships Friday." in (seen[0] or "")


def test_outside_service_hours_the_reply_says_when_someone_is_back(
    kb_settings: Settings, keys: dict[str, str]
) -> None:
    cfg = HandoffSettings(tenants={"hand-a": {"hours": {"timezone": "UTC", "weekly": WEEKDAYS_9_TO_5}}})
    monday_evening = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
    with app_client(kb_settings, cfg, clock=lambda: monday_evening) as client:
        reply = ask(client, keys["client"], "This is useless, nothing works", uuid.uuid4())
        text, handoff = reply["choices"][0]["message"]["content"], reply["supportgraph"]["handoff"]
        assert "away right now" in text and "tomorrow at 09:00 (UTC)" in text
        assert handoff["status"] == "queued" and handoff["back_at"].startswith("2026-12-08T09:00")
        assert handoff["eta_s"] >= 13 * 3600 and handoff["reason"] == "frustrated"


def test_a_streamed_answer_tells_the_customer_after_it(kb_settings: Settings, keys: dict[str, str]) -> None:
    with app_client(kb_settings) as client:
        body = {
            "model": "auto",
            "stream": True,
            "session_id": str(uuid.uuid4()),
            "messages": [{"role": "user", "content": "Can I talk to a person?"}],
        }
        with client.stream("POST", "/v1/chat/completions", json=body, headers=auth(keys["client"])) as events:
            lines = [line for line in events.iter_lines() if line.startswith("data: {")]
        assert "person from our support team" in "".join(lines)
        assert '"handoff": {"id"' in lines[-1]


def test_keys_get_a_role_admin_by_default(
    kb_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve_app.cli import main

    monkeypatch.setenv("SUPPORTGRAPH_STATE_DIR", str(kb_settings.state_dir))
    assert main(["keys", "create", "--tenant", "roles-t", "--role", "agent"]) == 0
    assert main(["keys", "create", "--tenant", "roles-t"]) == 0
    capsys.readouterr()
    assert main(["keys", "list", "--tenant", "roles-t"]) == 0
    assert sorted(k["role"] for k in json.loads(capsys.readouterr().out)) == ["admin", "agent"]
    with pytest.raises(SystemExit):  # argparse: not one of the roles
        main(["keys", "create", "--tenant", "roles-t", "--role", "owner"])
