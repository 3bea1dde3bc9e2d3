"""Human handoff in the running graph: a chat turn asking for a person is handed off by the Router's desk
and listed through the Router's handle; refusals raised in the replica keep their status over the handle
(404, 503 naming the LiveKit settings); the handoff survives the Router replica being killed."""

from __future__ import annotations

import uuid

import httpx
import pytest

from serve_app.runtime import RunningGraph
from tests.test_router_graph import kill_replica, wait_healthy

pytestmark = pytest.mark.ray
HEADERS = {"X-Tenant-Id": "handoff-g"}


def test_a_handoff_is_written_by_the_router_and_survives_its_replica(graph: RunningGraph) -> None:
    with httpx.Client(base_url=graph.base_url, headers=HEADERS, timeout=120) as http:
        reply = http.post(
            "/v1/chat/completions",
            json={
                "model": "extractive",
                "session_id": str(uuid.uuid4()),
                "messages": [{"role": "user", "content": "Can I talk to a person?"}],
            },
        )
        assert reply.status_code == 200, reply.text
        handoff = reply.json()["supportgraph"]["handoff"]
        assert handoff["status"] == "queued" and handoff["position"] >= 1
        assert "support team" in reply.json()["choices"][0]["message"]["content"]

        kill_replica("Router")  # a Router replica dies after answering: the handoff was already written
        wait_healthy(graph.app_name, "Router")
        queue = http.get("/v1/handoffs", params={"status": "queued"})
        assert queue.status_code == 200 and handoff["id"] in [h["id"] for h in queue.json()["handoffs"]]

        unknown = http.get(f"/v1/handoffs/{uuid.uuid4()}")
        assert unknown.status_code == 404 and "no handoff" in unknown.json()["detail"]
        # the graph runs with LiveKit credentials, as `make demo` starts it (the 503 without them:
        # tests/test_handoff_http.py); the new Router replica mints the token for the handoff's room
        claim = http.post(f"/v1/handoffs/{handoff['id']}/claim")
        assert claim.status_code == 200, claim.text
        claimed = claim.json()
        assert claimed["status"] == "claimed" and claimed["room"].startswith("tenant_") and claimed["token"]
