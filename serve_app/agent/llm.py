"""A LiveKit `llm.LLM` whose every turn goes through the escalating router.

The turn's chat context becomes a `ChatRequest` (tenant from the room, the session's id, the latest
deduplicated frames); the router retrieves help-center passages, escalates as needed and streams the
answer back as `ChatChunk`s. Function tools (the agent's registry) are offered to the model in its
instructions; a reply that is a single line `CALL <tool> <JSON arguments>` becomes a FunctionToolCall,
which AgentSession runs and answers with the tool's output on the next turn.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from livekit.agents import APIConnectionError, llm
from livekit.agents.llm.utils import build_legacy_openai_schema
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr

from serve_app.agent.frames import FrameBuffer
from serve_app.routing.providers.base import TOOL_CALL, Message
from serve_app.routing.router import token_totals
from serve_app.routing.service import ChatRequest


class ChatStreamBackend(Protocol):
    def chat_stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]: ...


def tool_instructions(tools: list[Any]) -> str:
    specs = []
    for tool in tools:
        fn = build_legacy_openai_schema(tool)["function"]
        schema = json.dumps(fn["parameters"])
        specs.append(f"- {fn['name']}: {fn.get('description', '')} Arguments (JSON schema): {schema}")
    return (
        "You can call these tools:\n" + "\n".join(specs) + "\nTo call one, reply with exactly one line: "
        'CALL <tool name> <JSON arguments>, for example CALL lookup_order {"order_id": "A1"}. '
        "Otherwise answer normally."
    )


def to_request(
    chat_ctx: llm.ChatContext,
    tenant_id: str,
    session_id: uuid.UUID,
    frames: FrameBuffer | None,
    tools: list[Any],
    max_images: int,
    stream_id: str | None = None,
) -> ChatRequest:
    system: list[str] = []
    messages: list[Message] = []
    for item in chat_ctx.items:
        if item.type == "message":
            text = (item.text_content or "").strip()
            if item.role in ("system", "developer"):
                system.append(text)
            elif text:
                messages.append(Message(item.role, text))
        elif item.type == "function_call":
            messages.append(Message("assistant", f"CALL {item.name} {item.arguments}"))
        elif item.type == "function_call_output":
            messages.append(Message("user", f"Tool {item.name} returned: {item.output}"))
    if tools:
        system.append(tool_instructions(tools))
    # the turn after a tool call answers from the tool's output, not from the help center: nothing is
    # retrieved for it and nothing checks it against passages
    after_tool = bool(chat_ctx.items) and chat_ctx.items[-1].type == "function_call_output"
    return ChatRequest(
        tenant_id=tenant_id,
        messages=tuple(messages),
        retrieve=not after_tool,
        images=frames.latest(max_images) if frames else (),
        session_id=session_id,
        system="\n\n".join(s for s in system if s) or None,
        stream_id=stream_id,
    )


class RouterLLM(llm.LLM):
    def __init__(
        self,
        backend: ChatStreamBackend,
        tenant_id: str,
        *,
        frames: FrameBuffer | None = None,
        session_id: uuid.UUID | None = None,
        max_images: int = 2,
        stream: Callable[[], str | None] | None = None,
    ):
        super().__init__()
        self.stream = stream  # the turn's screen-share stream id (its screen text rides with the turn)
        self.backend, self.tenant_id, self.frames = backend, tenant_id, frames
        self.session_id = session_id or uuid.uuid4()
        self.max_images = max_images
        self.requests: list[ChatRequest] = []  # what each turn sent (inspection, tests)

    @property
    def model(self) -> str:
        return "supportgraph-router"

    @property
    def provider(self) -> str:
        return "supportgraph"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> RouterLLMStream:
        return RouterLLMStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class RouterLLMStream(llm.LLMStream):
    def __init__(self, router_llm: RouterLLM, **kwargs: Any):
        super().__init__(router_llm, **kwargs)
        self._router_llm = router_llm

    async def _run(self) -> None:
        owner = self._router_llm
        function_tools = [t for t in self._tools if isinstance(t, llm.FunctionTool)]
        request = to_request(
            self._chat_ctx,
            owner.tenant_id,
            owner.session_id,
            owner.frames,
            function_tools,
            owner.max_images,
            owner.stream() if owner.stream else None,
        )
        owner.requests.append(request)
        chunk_id = f"turn-{uuid.uuid4()}"
        held: list[str] | None = [] if function_tools else None  # hold text until it is not a CALL
        try:
            async for event in owner.backend.chat_stream(request):
                if "delta" in event:
                    if held is None:
                        self._send(chunk_id, event["delta"])
                        continue
                    held.append(event["delta"])
                    text = "".join(held).lstrip()
                    if text and not "CALL".startswith(text[:4]):  # not a tool call: release the text
                        self._send(chunk_id, "".join(held))
                        held = None
                elif "routing" in event:
                    self._usage(chunk_id, event["routing"])
        except Exception as exc:
            raise APIConnectionError(f"router failed: {exc}") from exc
        if held:
            self._finish_held(chunk_id, "".join(held), function_tools)

    def _send(self, chunk_id: str, text: str) -> None:
        self._event_ch.send_nowait(
            llm.ChatChunk(id=chunk_id, delta=llm.ChoiceDelta(role="assistant", content=text))
        )

    def _finish_held(self, chunk_id: str, text: str, tools: list[Any]) -> None:
        match = TOOL_CALL.match(text)
        names = {t.info.name for t in tools}
        if match and match.group(1) in names:
            arguments = match.group(2) or "{}"
            try:
                json.loads(arguments)
            except ValueError:
                arguments = "{}"
            call = llm.FunctionToolCall(
                name=match.group(1), arguments=arguments, call_id=f"call-{uuid.uuid4()}"
            )
            self._event_ch.send_nowait(
                llm.ChatChunk(id=chunk_id, delta=llm.ChoiceDelta(role="assistant", tool_calls=[call]))
            )
        else:
            self._send(chunk_id, text)

    def _usage(self, chunk_id: str, routing: dict[str, Any]) -> None:
        prompt, completion = token_totals(routing)
        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=chunk_id,
                usage=llm.CompletionUsage(
                    completion_tokens=completion, prompt_tokens=prompt, total_tokens=prompt + completion
                ),
            )
        )


class LocalChatBackend:
    """ChatStreamBackend over an in-process ChatService (no Ray): same events as the Router deployment."""

    def __init__(self, service: Any):
        self.service = service

    def chat_stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        return self.service.events(request)
