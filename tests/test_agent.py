"""The LiveKit agent without a LiveKit server: text turns through AgentSession, retrieval context reaching
the router, a function-tool call, the video path (local VideoSource -> VideoStream -> dedup -> frames on the
next turn), room names, tokens, and the handles of the running graph."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import ClassVar

import numpy as np
import pytest
from livekit import api, rtc
from livekit.agents import AgentSession, function_tool, llm

from serve_app.agent.frames import FrameBuffer
from serve_app.agent.llm import LocalChatBackend, RouterLLM
from serve_app.agent.tokens import mint_token
from serve_app.agent.worker import Graph, RoomSession, SupportAgent, tenant_of_room
from serve_app.backends import LocalFrameBackend
from serve_app.cli import main
from serve_app.frames.service import DedupService
from serve_app.routing.service import ChatService
from serve_app.settings import DedupSettings, load_settings
from tests.wire import QuietHandler, read_json, reply_json, reply_sse, serving

HELP = (
    "## Export your notes\nChoose Settings > Data > Export. Pick Markdown or PDF; large exports are emailed."
)


def extractive_service(asked: list[str]) -> ChatService:
    settings = load_settings(
        routing={"tiers": [{"name": "extractive", "backend": "extractive", "model": "extractive-grounded"}]}
    )

    async def retrieve(tenant: str, question: str, k: int, request_id: uuid.UUID) -> list[str]:
        asked.append(f"{tenant}: {question}")
        return [HELP]

    return ChatService.create(settings, retrieve)


async def one_turn(router_llm: RouterLLM, text: str, tools: list | None = None):
    async with AgentSession(llm=router_llm, vad=None, turn_handling={"turn_detection": None}) as session:
        await session.start(SupportAgent(tools=tools or []))
        return await session.run(user_input=text)


def test_a_text_turn_is_answered_through_the_router_with_retrieved_context() -> None:
    asked: list[str] = []
    router_llm = RouterLLM(LocalChatBackend(extractive_service(asked)), "acme")
    result = asyncio.run(one_turn(router_llm, "How do I export my notes?"))
    reply = result.expect.next_event().is_message(role="assistant")
    assert (
        "Settings > Data > Export" in reply.event().item.text_content
        and "[1]" in reply.event().item.text_content
    )
    result.expect.no_more_events()
    assert asked == ["acme: How do I export my notes?"]  # retrieval for the tenant, with the user's words
    sent = router_llm.requests[0]
    assert sent.tenant_id == "acme" and "customer-support" in (sent.system or "")


USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


class ToolCallingWire(QuietHandler):
    """An OpenAI-compatible tier that asks for a tool, then answers from the tool's output."""

    seen: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = read_json(self)
        ToolCallingWire.seen.append(body)
        last = body["messages"][-1]["content"]
        if "Tool lookup_order returned" in last:
            text = f"Your order ships tomorrow ({last.split('returned: ')[1]}).\nConfidence: 0.9"
        else:
            text = 'CALL lookup_order {"order_id": "A1"}\nConfidence: 0.9'
        if body.get("stream"):
            base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
            pieces = [text[:7], text[7:]]
            events = [(None, {**base, "choices": [{"index": 0, "delta": {"content": p}}]}) for p in pieces]
            reply_sse(self, [*events, (None, {**base, "choices": [], "usage": USAGE}), (None, "[DONE]")])
            return
        message = {"role": "assistant", "content": text}
        reply_json(
            self,
            {
                "id": "c",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": USAGE,
            },
        )


def test_a_function_tool_is_called_and_its_output_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    @function_tool
    async def lookup_order(order_id: str) -> str:
        """Look up the shipping status of an order."""
        calls.append(order_id)
        return "status: packed"

    with serving(ToolCallingWire) as url:
        settings = load_settings(
            routing={
                "tiers": [
                    {
                        "name": "local",
                        "backend": "openai-compatible",
                        "model": "smollm2-135m",
                        "base_url": f"{url}/v1",
                    }
                ],
                "retrieve": False,
            }
        )
        router_llm = RouterLLM(LocalChatBackend(ChatService.create(settings)), "acme")
        result = asyncio.run(one_turn(router_llm, "Where is my order A1?", tools=[lookup_order]))
    result.expect.next_event().is_function_call(name="lookup_order", arguments={"order_id": "A1"})
    result.expect.next_event().is_function_call_output(output="status: packed")
    answer = result.expect.next_event().is_message(role="assistant").event().item.text_content
    assert calls == ["A1"] and "ships tomorrow (status: packed)" in answer
    assert "lookup_order" in ToolCallingWire.seen[0]["messages"][0]["content"]  # the tool was offered


def rgba_frame(color: tuple[int, int, int], width: int = 160, height: int = 96) -> rtc.VideoFrame:
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[..., :3] = color
    pixels[: height // 2, : width // 3, :3] = 255 - np.array(color, np.uint8)  # some structure to hash
    pixels[..., 3] = 255
    return rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, pixels.tobytes())


async def replay_video(room: RoomSession, colors: list[tuple[int, int, int]], fps: float = 5.0) -> None:
    source = rtc.VideoSource(160, 96)
    track = rtc.LocalVideoTrack.create_video_track("screen", source)
    stream = rtc.VideoStream(track)
    forwarder = room.watch("screen", stream)
    for n, color in enumerate(colors):
        source.capture_frame(rgba_frame(color), timestamp_us=int(n * 1e6 / fps))
        await asyncio.sleep(1.5 / fps)  # frames are stamped as they pass: keep them apart at the idle rate
    for _ in range(100):
        if forwarder.offered == len(colors):
            break
        await asyncio.sleep(0.02)
    await stream.aclose()


def test_video_reaches_the_dedup_and_its_frames_reach_the_next_turn() -> None:
    asked: list[str] = []
    sink = LocalFrameBackend(DedupService(DedupSettings()))
    room = RoomSession("tenant_acme_call-7", "acme", Graph(LocalChatBackend(extractive_service(asked)), sink))
    colors = [(10, 20, 30)] * 4 + [(200, 40, 40)] * 4  # one scene change

    router_llm = room.llm()

    async def scenario():
        await replay_video(room, colors)
        return await one_turn(router_llm, "How do I export my notes?")

    asyncio.run(scenario())
    forwarder = room.forwarders["screen"]
    assert forwarder.offered == 8 and forwarder.sent == 2  # the first frame, then the scene change
    stats = sink.service.stats("tenant_acme_call-7.screen")
    assert stats["stream"]["duplicate"] == 6
    assert len(room.frames.latest()) == 2
    assert router_llm.requests[0].images == room.frames.latest(2)  # the turn carried the sent-on frames


def test_room_names_and_tokens(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert tenant_of_room("tenant_acme_support-1") == "acme"
    assert tenant_of_room("lobby") is None and tenant_of_room("tenant_Acme_x") is None
    secret = "s" * 32
    token = mint_token("key", secret, "acme", "support-1", "agent-bob", 600)
    claims = api.TokenVerifier("key", secret).verify(token)
    assert (
        claims.identity == "agent-bob"
        and claims.video.room == "tenant_acme_support-1"
        and claims.video.room_join
    )
    monkeypatch.setenv("LIVEKIT_API_KEY", "key")
    monkeypatch.setenv("LIVEKIT_API_SECRET", secret)
    assert main(["token", "--tenant", "acme", "--room", "r1", "--identity", "i"]) == 0
    assert (
        api.TokenVerifier("key", secret).verify(capsys.readouterr().out.strip()).video.room
        == "tenant_acme_r1"
    )
    assert main(["token", "--tenant", "acme", "--room", "bad_room", "--identity", "i"]) == 2
    assert "invalid" in capsys.readouterr().err


def test_frame_buffer_keeps_the_latest_jpegs() -> None:
    buffer = FrameBuffer(size=2, max_side=64)
    for value in (10, 20, 30):
        buffer.add(np.full((100, 200, 3), value, np.uint8))
    frames = buffer.latest()
    assert len(frames) == 2 and all(f.data[:2] == b"\xff\xd8" for f in frames)
    assert buffer.latest(1) == frames[-1:]


@pytest.mark.ray
def test_the_agent_talks_to_the_running_graph_through_handles(graph, graph_settings) -> None:
    from serve_app.agent.worker import graph_from_handles
    from serve_app.samples import ingest_help_center

    asyncio.run(ingest_help_center(graph_settings, "agent-t"))
    backends = graph_from_handles(graph.app_name)
    room = RoomSession("tenant_agent-t_call-1", "agent-t", backends)

    async def scenario():
        await replay_video(room, [(10, 20, 30)] * 3 + [(240, 200, 10)] * 3)
        return await one_turn(room.llm(), "Can I get a refund on an annual plan?")

    result = asyncio.run(scenario())
    answer = result.expect.next_event().is_message(role="assistant").event().item.text_content
    assert "refund" in answer.lower() and "[1]" in answer
    assert room.forwarders["screen"].sent == 2 and len(room.frames.latest()) == 2
    report = asyncio.run(backends.chat.costs("agent-t", None, None))
    events = [row for row in report["llm_by_tier"] if row["tier"] == "extractive"]
    assert events and events[0]["attempts"] >= 1
    assert json.dumps(report)  # plain data over the handle


def test_a_session_end_records_the_customers_outcome() -> None:
    from serve_app.agent.worker import session_outcome

    class Outcomes:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        async def session_feedback(self, tenant, session, resolved, rating=None) -> int:
            self.calls.append((tenant, session, resolved, rating))
            return 3

    outcomes = Outcomes()
    room = RoomSession("tenant_acme_call-8", "acme", Graph(None, None, outcomes=outcomes))
    said = {"supportgraph.resolved": "true", "supportgraph.rating": "4"}
    assert asyncio.run(room.end(said)) == 3
    assert outcomes.calls == [("acme", str(room.session_id), True, 4)]
    assert asyncio.run(room.end({})) == 0 and len(outcomes.calls) == 1  # no signal: nothing recorded
    assert session_outcome({"supportgraph.resolved": "FALSE", "supportgraph.rating": "9"}) == (False, None)


def test_the_turn_after_a_tool_call_answers_from_its_output_unchecked() -> None:
    """The tool's output, not the help center, answers the next turn: nothing is retrieved for it, so
    nothing is verified against passages (and no intent step reads the tool's JSON)."""
    from serve_app.agent.llm import to_request

    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="Where is my order A1?")
    assert to_request(ctx, "acme", uuid.uuid4(), None, [], 1).retrieve is True
    ctx.items.append(llm.FunctionCall(call_id="c1", name="lookup_order", arguments='{"order_id": "A1"}'))
    ctx.items.append(
        llm.FunctionCallOutput(call_id="c1", name="lookup_order", output="packed", is_error=False)
    )
    request = to_request(ctx, "acme", uuid.uuid4(), None, [], 1)
    assert request.retrieve is False and "Tool lookup_order returned: packed" in request.messages[-1].content
