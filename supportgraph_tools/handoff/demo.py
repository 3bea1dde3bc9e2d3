"""The demo's handoff part: a customer (a client key) asks the AI a question, then asks for a person; the
conversation is handed off (the reply says so, with the queue position); a human agent (an agent key)
finds it in the queue with its summary, claims it (a LiveKit token for exactly the customer's room,
checked here with LiveKit's verifier), the customer's status now carries their own join link, and the
agent resolves it: the person's time shows in the tenant's costs as service 'human'.

LiveKit credentials come from LIVEKIT_API_KEY / LIVEKIT_API_SECRET; without them the demo makes a
throwaway pair for the run (`demo_livekit_env`), set before the graph starts so its Router has them.
No LiveKit server is contacted: the tokens are minted and verified offline.
"""

from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

QUESTION = "How do I export my notes?"
ASK_PERSON = "That didn't help. Can I talk to a person?"


def demo_livekit_env() -> bool:
    """Throwaway LiveKit credentials for a demo run when none are set; True when it made them."""
    if os.environ.get("LIVEKIT_API_KEY") and os.environ.get("LIVEKIT_API_SECRET"):
        return False
    os.environ["LIVEKIT_API_KEY"] = "demo-" + secrets.token_hex(4)
    os.environ["LIVEKIT_API_SECRET"] = secrets.token_urlsafe(32)
    os.environ.setdefault("LIVEKIT_URL", "ws://localhost:7880")
    return True


@dataclass
class HandoffDemo:
    reply: str = ""
    handoff: dict[str, Any] | None = None
    queued: int = 0
    summary: str = ""
    room: str = ""
    token_room: str = ""  # the room LiveKit's verifier reads from the claim's token
    customer_status: str = ""
    customer_link: bool = False
    resolved: str = ""
    human_usd: float | None = None

    def summary_dict(self) -> dict[str, Any]:
        return {
            "handoff_status": (self.handoff or {}).get("status"),
            "handoff_position": (self.handoff or {}).get("position"),
            "handoff_token_room_ok": bool(self.room) and self.token_room == self.room,
            "handoff_customer_link": self.customer_link,
            "handoff_resolved": self.resolved,
        }

    def render(self, console: Console) -> None:
        console.rule("[bold]Human handoff: asked for a person, queued, claimed, resolved")
        table = Table()
        for col in ("step", "what"):
            table.add_column(col)
        h = self.handoff or {}
        table.add_row("customer", f"{QUESTION} / {ASK_PERSON}")
        table.add_row("reply", self.reply)
        table.add_row(
            "handoff",
            f"{h.get('id')}: {h.get('status')}, position {h.get('position')}, eta {h.get('eta_s')} s",
        )
        table.add_row("agent's queue", f"{self.queued} queued; summary:\n{self.summary}")
        table.add_row(
            "claim", f"room {self.room}; token verified by LiveKit's TokenVerifier for {self.token_room}"
        )
        table.add_row("customer", f"status {self.customer_status}; own join link: {self.customer_link}")
        usd = f"${self.human_usd:.4f}" if self.human_usd is not None else "-"
        table.add_row("resolve", f"{self.resolved}; the person's time in /v1/costs (service human): {usd}")
        console.print(table)


async def handoff_demo(base_url: str, tenant: str, keys: dict[str, str | None]) -> HandoffDemo:
    """`keys`: the tenant's "client", "agent" and "admin" keys (None each where auth is off)."""
    client_key, agent_key = keys.get("client"), keys.get("agent")
    from livekit import api

    def auth(key: str | None) -> dict[str, str]:
        return {"X-Tenant-Id": tenant, **({"Authorization": f"Bearer {key}"} if key else {})}

    out = HandoffDemo()
    session = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=base_url, timeout=120.0) as http:

        async def chat(messages: list[dict[str, str]]) -> dict[str, Any]:
            body = {"model": "extractive", "session_id": session, "messages": messages, "max_tokens": 96}
            reply = await http.post("/v1/chat/completions", json=body, headers=auth(client_key))
            return reply.raise_for_status().json()

        first = await chat([{"role": "user", "content": QUESTION}])
        answer = first["choices"][0]["message"]["content"]
        second = await chat(
            [
                {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": ASK_PERSON},
            ]
        )
        out.reply = second["choices"][0]["message"]["content"]
        out.handoff = second["supportgraph"]["handoff"]
        if out.handoff is None:
            raise RuntimeError("asking for a person made no handoff")
        hid = out.handoff["id"]
        queue = (
            await http.get("/v1/handoffs", params={"status": "queued"}, headers=auth(agent_key))
        ).raise_for_status()
        listed = queue.json()["handoffs"]
        out.queued = len(listed)
        out.summary = next(h["summary"] for h in listed if h["id"] == hid)
        claim = (
            (await http.post(f"/v1/handoffs/{hid}/claim", json={"name": "Dana"}, headers=auth(agent_key)))
            .raise_for_status()
            .json()
        )
        out.room = claim["room"]
        verified = api.TokenVerifier(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"]).verify(
            claim["token"]
        )
        out.token_room = verified.video.room or ""
        status = (await http.get(f"/v1/handoffs/{hid}", headers=auth(client_key))).raise_for_status().json()
        out.customer_status, out.customer_link = status["status"], bool(status.get("join_url"))
        done = await http.post(
            f"/v1/handoffs/{hid}/resolve", json={"note": "walked through the export"}, headers=auth(agent_key)
        )
        out.resolved = done.raise_for_status().json()["status"]
        costs = (await http.get("/v1/costs", headers=auth(keys.get("admin")))).raise_for_status().json()
        out.human_usd = sum(
            r["cost_usd"] for r in costs.get("by_service_provider", []) if r["service"] == "human"
        )
    return out
