"""The LiveKit agent's side of a handoff, without a LiveKit server: the model calls `transfer_to_human`
(a handoff for this room and session, with the transcript), a person who claimed it joins (the agent stops
answering, the customer's turns stay in the transcript), the person leaves (the agent answers again)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

from livekit.agents import AgentSession

from serve_app.agent.llm import RouterLLM
from serve_app.agent.worker import Graph, RoomSession, SupportAgent
from serve_app.routing.service import ChatRequest

ROUTING = {"request_id": str(uuid.uuid4()), "model": "fake", "attempts": []}


class ScriptedRouter:
    """A ChatStreamBackend: asks for the transfer tool when the customer wants a person, else answers."""

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        self.requests.append(request)
        last = request.messages[-1].content
        if last.startswith("Tool transfer_to_human returned:"):
            text = last.split("returned: ", 1)[1]
        elif "person" in last:
            text = 'CALL transfer_to_human {"reason": "wants a refund for order A1"}'
        else:
            text = f"AI answer to: {last}"
        yield {"delta": text}
        yield {"routing": ROUTING}


class Desk:
    def __init__(self) -> None:
        self.created: list[tuple] = []

    async def create(self, tenant, caller, messages, reason, session_id, stream_id, room, note) -> dict:
        self.created.append((tenant, messages, reason, session_id, room, note))
        return {
            "id": "h1",
            "status": "queued",
            "position": 1,
            "message": "A person is coming; you are number 1.",
        }


async def conversation(room: RoomSession, router: ScriptedRouter, turns: list[str]) -> list[list[str]]:
    """Each turn's assistant messages."""
    llm = RouterLLM(router, room.tenant_id, session_id=room.session_id)
    agent = SupportAgent([room.transfer_tool()], paused=room.paused)
    said: list[list[str]] = []
    async with AgentSession(llm=llm, vad=None, turn_handling={"turn_detection": None}) as session:
        await session.start(agent)
        for turn in turns:
            if turn == "<human joins>":
                assert room.participant_joined("human-Dana", {"supportgraph.role": "human"})
                continue
            if turn == "<human leaves>":
                assert room.participant_left("human-Dana")
                continue
            result = await session.run(user_input=turn)
            said.append(
                [
                    e.item.text_content
                    for e in result.events
                    if getattr(e, "item", None) and e.item.type == "message"
                ]
            )
    return said


def test_the_agent_transfers_pauses_for_the_person_and_resumes() -> None:
    router, desk = ScriptedRouter(), Desk()
    room = RoomSession("tenant_acme_call-9", "acme", Graph(None, None, handoffs=desk))
    assert not room.participant_joined("customer-1", {})  # only a person who claimed a handoff pauses it
    said = asyncio.run(
        conversation(
            room,
            router,
            [
                "Hi, can I get a refund?",
                "I want a person please",
                "<human joins>",
                "It was order A1, it arrived broken",
                "<human leaves>",
                "Thanks, anything else?",
            ],
        )
    )
    assert said[0] == ["AI answer to: Hi, can I get a refund?"]
    assert said[1] == ["A person is coming; you are number 1."]  # the tool's answer, spoken
    (tenant, messages, reason, session_id, room_name, note) = desk.created[0]
    assert (tenant, reason, session_id, room_name) == ("acme", "tool", room.session_id, "tenant_acme_call-9")
    assert note == "wants a refund for order A1" and messages[0]["content"] == "Hi, can I get a refund?"
    assert said[2] == []  # the person is in the room: the agent does not answer
    assert said[3] == ["AI answer to: Thanks, anything else?"]
    resumed = router.requests[-1].messages
    assert any(m.content == "It was order A1, it arrived broken" for m in resumed)  # the transcript was kept
