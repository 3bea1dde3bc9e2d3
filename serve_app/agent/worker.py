"""The LiveKit worker process: joins `tenant_<id>_<room>` rooms and talks through the graph.

It holds no models: speech comes from the Deepgram (STT) and Cartesia (TTS) plugins, voice activity from
Silero, answers from the Router deployment, frame decisions from FrameDedup, both through Ray Serve
handles (`serve.get_deployment_handle`). Rooms whose names do not carry a valid tenant are left with a
log line. The agent can hand the conversation to a person (`transfer_to_human`, a handoff for this
room); while a person who claimed it is in the room (a participant whose token says
`supportgraph.role=human`) the agent stops answering and keeps the transcript, and it resumes when
they leave, with the note of a handoff they returned (the router's desk adds it to the session's turns).
Run: `supportgraph agent dev|start` (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET,
DEEPGRAM_API_KEY, CARTESIA_API_KEY; RAY_ADDRESS for a remote cluster).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import Agent, RunContext, function_tool, llm

from serve_app.agent.frames import FrameBuffer, VideoForwarder
from serve_app.agent.llm import ChatStreamBackend, RouterLLM
from serve_app.auth import Caller
from serve_app.backends import FrameSink
from serve_app.handoff.rooms import HUMAN_ROLE
from serve_app.tenancy import InvalidIdentifier, parse_stream_id

log = logging.getLogger("supportgraph.agent")

INSTRUCTIONS = (
    "You are the voice of a customer-support team. Keep answers short and spoken-friendly; cite the help "
    "center when you use it; say when you do not know."
)
TRACK_NAMES = {"SOURCE_SCREENSHARE": "screen", "SOURCE_CAMERA": "camera"}


def tenant_of_room(room_name: str) -> str | None:
    """The tenant of a `tenant_<id>_<room>` room, or None (logged) for any other name."""
    try:
        parsed = parse_stream_id(room_name)
        if parsed.track is not None:
            raise InvalidIdentifier(f"room name {room_name!r} has a track part")
    except InvalidIdentifier as exc:
        log.warning("not joining room %r: %s", room_name, exc)
        return None
    return parsed.tenant_id


# The function-tool registry: tools the support agent may call (empty by default). Register with
# `@register_tool` on a `livekit.agents.function_tool`-decorated function, before the worker starts.
TOOLS: list[llm.FunctionTool] = []


def register_tool(tool: llm.FunctionTool) -> llm.FunctionTool:
    if tool.info.name in {t.info.name for t in TOOLS}:
        raise ValueError(f"a tool named {tool.info.name!r} is already registered")
    TOOLS.append(tool)
    return tool


class SupportAgent(Agent):
    """The support agent; `paused()` true (a person took the conversation over): it does not answer,
    and the turns stay in its chat context (the transcript)."""

    def __init__(self, tools: list[llm.FunctionTool] | None = None, paused: Callable[[], bool] | None = None):
        super().__init__(instructions=INSTRUCTIONS, tools=list(TOOLS if tools is None else tools))
        self.paused = paused or (lambda: False)

    async def llm_node(self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: Any) -> Any:
        if self.paused():
            return None  # no reply; the user's turn is already in the chat context
        return Agent.default.llm_node(self, chat_ctx, tools, model_settings)


@dataclass
class Graph:
    """What a room session needs from the graph: the router and the frame dedup, as backends."""

    chat: ChatStreamBackend
    frames: FrameSink
    active_fps: float = 30.0
    idle_fps: float = 5.0
    outcomes: Any = None  # session_feedback(tenant, session, resolved, rating): serve_app.experiments.backend
    handoffs: Any = None  # the HandoffBackend (serve_app.backends): transfer_to_human creates one


def graph_from_handles(app_name: str = "supportgraph") -> Graph:
    """Backends over the running graph's deployment handles (connects to Ray: RAY_ADDRESS or local)."""
    import ray
    from ray import serve

    from serve_app.handles import HandleChatBackend, HandleExperiments, HandleFrameBackend, HandleHandoffs

    if not ray.is_initialized():
        ray.init(address="auto", log_to_driver=False, logging_level="WARNING")
    router = serve.get_deployment_handle("Router", app_name=app_name)
    return Graph(
        HandleChatBackend(router),
        HandleFrameBackend(serve.get_deployment_handle("FrameDedup", app_name=app_name)),
        outcomes=HandleExperiments(router),
        handoffs=HandleHandoffs(router),
    )


@dataclass
class RoomSession:
    """One room's state: its tenant, its LLM, the video forwarders of its tracks."""

    room_name: str
    tenant_id: str
    graph: Graph
    speaking: Callable[[], bool] = lambda: False
    frames: FrameBuffer = field(default_factory=FrameBuffer)
    session_id: uuid.UUID = field(default_factory=uuid.uuid4)
    forwarders: dict[str, VideoForwarder] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)
    humans: set[str] = field(default_factory=set)  # identities of people who took the conversation over

    def paused(self) -> bool:
        """A person who claimed the handoff is in the room: the agent does not answer."""
        return bool(self.humans)

    def participant_joined(self, identity: str, attributes: dict[str, str]) -> bool:
        """True when the participant is a person who claimed a handoff (the agent pauses)."""
        if attributes.get("supportgraph.role") != HUMAN_ROLE:
            return False
        self.humans.add(identity)
        log.info("room %s: %s took the conversation over; the agent pauses", self.room_name, identity)
        return True

    def participant_left(self, identity: str) -> bool:
        """True when the last such person left (the agent resumes)."""
        if identity not in self.humans:
            return False
        self.humans.discard(identity)
        return not self.humans

    async def transfer(self, reason: str, history: llm.ChatContext | None) -> str:
        """Hand this room's conversation to a person; returns what to tell the customer."""
        if self.graph.handoffs is None:
            return "I can't reach the support team from here right now; please try again later."
        messages = [
            {"role": item.role, "content": (item.text_content or "").strip()}
            for item in (history.items if history else [])
            if item.type == "message"
            and item.role in ("user", "assistant")
            and (item.text_content or "").strip()
        ] or [{"role": "user", "content": reason or "The customer asked for a person."}]
        try:
            made = await self.graph.handoffs.create(
                self.tenant_id,
                Caller(self.tenant_id),
                messages,
                "tool",
                self.session_id,
                None,
                self.room_name,
                reason or None,
            )
        except Exception:
            log.warning("handing off room %s failed", self.room_name, exc_info=True)
            return "I couldn't reach the support team's queue just now; please try again in a moment."
        return str(made["message"])

    def transfer_tool(self) -> llm.FunctionTool:
        """`transfer_to_human`, bound to this room."""

        @function_tool
        async def transfer_to_human(context: RunContext, reason: str) -> str:
            """Hand the conversation to a person from the support team. Use it when the customer asks
            for a person, or when you cannot help them.

            Args:
                reason: what the customer needs help with, in one sentence.
            """
            return await self.transfer(reason, context.session.history)

        return transfer_to_human

    def llm(self) -> RouterLLM:
        return RouterLLM(
            self.graph.chat,
            self.tenant_id,
            frames=self.frames,
            session_id=self.session_id,
            stream=self.screen_stream,
        )

    def screen_stream(self) -> str | None:
        """The stream whose screen text a turn gets: the track named `screen`, else the last one watched."""
        if not self.forwarders:
            return None
        track = "screen" if "screen" in self.forwarders else list(self.forwarders)[-1]
        return f"{self.room_name}.{track}"

    def watch(self, track_name: str, video_stream: Any) -> VideoForwarder:
        """Forward a video track (an `rtc.VideoStream`) to the dedup deployment as stream
        `<room>.<track_name>`."""
        forwarder = VideoForwarder(
            self.graph.frames,
            f"{self.room_name}.{track_name}",
            self.frames,
            self.speaking,
            self.graph.active_fps,
            self.graph.idle_fps,
        )
        self.forwarders[track_name] = forwarder
        task = asyncio.get_running_loop().create_task(forwarder.run(video_stream))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return forwarder

    async def end(self, attributes: dict[str, str] | None = None) -> int:
        """At session end, record the customer's outcome on the session's requests that have none yet:
        `supportgraph.resolved` ("true"/"false") and optional `supportgraph.rating` (1-5), participant
        attributes the client sets (e.g. a thumbs up at hang-up). No signal: nothing is recorded beyond
        the implicit outcomes of each request. Returns how many requests got the outcome."""
        resolved, rating = session_outcome(attributes or {})
        if self.graph.outcomes is None or resolved is None:
            return 0
        try:
            return await self.graph.outcomes.session_feedback(
                self.tenant_id, str(self.session_id), resolved, rating
            )
        except Exception:
            log.warning("recording the outcome of session %s failed", self.session_id, exc_info=True)
            return 0


def session_outcome(attributes: dict[str, str]) -> tuple[bool | None, int | None]:
    """(resolved, rating) from a participant's attributes; unknown or malformed values are None."""
    resolved = {"true": True, "false": False}.get(attributes.get("supportgraph.resolved", "").lower())
    rating = attributes.get("supportgraph.rating", "")
    return resolved, int(rating) if rating.isdigit() and 1 <= int(rating) <= 5 else None


async def entrypoint(ctx: Any) -> None:  # livekit.agents.JobContext
    from livekit import rtc
    from livekit.agents import AgentSession
    from livekit.plugins import cartesia, deepgram, silero

    tenant = tenant_of_room(ctx.room.name)
    if tenant is None:
        return
    await ctx.connect()
    graph = graph_from_handles()
    state = {"speaking": False}
    room = RoomSession(ctx.room.name, tenant, graph, speaking=lambda: state["speaking"])
    session = AgentSession(stt=deepgram.STT(), tts=cartesia.TTS(), vad=silero.VAD.load(), llm=room.llm())

    @ctx.room.on("participant_connected")
    def _joined(participant: Any) -> None:
        if room.participant_joined(participant.identity, dict(participant.attributes)):
            session.interrupt()  # stop speaking over the person who took over

    @ctx.room.on("participant_disconnected")
    def _left(participant: Any) -> None:
        room.participant_left(participant.identity)  # the next turn is the agent's again

    @session.on("user_state_changed")
    def _user_state(event: Any) -> None:
        state["speaking"] = event.new_state == "speaking"

    @ctx.room.on("track_subscribed")
    def _track(track: Any, publication: Any, participant: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            name = TRACK_NAMES.get(rtc.TrackSource.Name(publication.source), "video")
            room.watch(name, rtc.VideoStream(track))

    outcome: dict[str, str] = {}  # the customer's last supportgraph.* attributes (kept past their leaving)

    @ctx.room.on("participant_attributes_changed")
    def _attributes(changed: dict[str, str], participant: Any) -> None:
        outcome.update({k: v for k, v in participant.attributes.items() if k.startswith("supportgraph.")})

    async def _record_outcome(*_: Any) -> None:
        await room.end(outcome)

    ctx.add_shutdown_callback(_record_outcome)
    tools = [*TOOLS, room.transfer_tool()]
    await session.start(agent=SupportAgent(tools, paused=room.paused), room=ctx.room)


def run_worker(argv: list[str]) -> None:
    """`supportgraph agent <livekit-agents subcommand>`: start, dev, connect, download-files, ..."""
    import sys

    from livekit.agents import WorkerOptions, cli

    sys.argv = ["supportgraph agent", *argv]
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))
