"""What every LLM tier implements: one small base class, typed failures, and the prompt/answer types.

A provider turns a `Prompt` (conversation, retrieved passages, deduplicated frames) into a `Completion`
(text, token usage, finish reason). Failures are `ProviderError`s whose `retryable` flag drives the
router's retry and circuit-breaker policy; nothing else about a backend leaks into the router.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from serve_app.costs.pricing import estimate_tokens
from serve_app.errors import FailureKind, ProviderError, failure_kind  # noqa: F401 (re-exported)
from serve_app.routing.confidence_line import CONFIDENCE_INSTRUCTION, strip_confidence

Role = Literal["user", "assistant"]


# a reply that is one tool call (the agent's protocol, serve_app/agent/llm.py): `CALL <tool> <JSON>`
TOOL_CALL = re.compile(r"^\s*CALL\s+([A-Za-z_][\w-]*)\s*(\{.*\})?\s*$", re.S)


def tool_call(prompt_system: str, answer: str) -> str | None:
    """The tool an answer calls, when it is one call line naming a tool the system text offers (a line
    `- <name>: ...` of the agent's tool instructions)."""
    match = TOOL_CALL.match(answer)
    return match.group(1) if match and f"\n- {match.group(1)}: " in prompt_system else None


@dataclass(frozen=True)
class Image:
    """One deduplicated frame, encoded (JPEG/PNG), sent unchanged on every attempt."""

    data: bytes
    mime_type: str = "image/jpeg"


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Prompt:
    messages: tuple[Message, ...]
    system: str = "You are a concise, accurate customer-support assistant."
    context: tuple[str, ...] = ()  # retrieved passages, cited as [1], [2], ...
    images: tuple[Image, ...] = ()
    max_tokens: int = 512
    temperature: float = 0.2
    # text read from the user's screen (serve_app/screen): the quoted, untrusted block every tier gets,
    # and its lines that ground retrieval and the extractive tier
    screen: str = ""
    screen_lines: tuple[str, ...] = ()
    # retrieval ran for this turn, so an answer can be checked against `context` (a tenant or request
    # without retrieval, e.g. a tool-calling agent turn, gets the tiers' answers unverified)
    grounded: bool = True
    tenant_id: str | None = None  # whose answer model checks the answers
    # the reply's `supportgraph.screen` (serve_app.screen.context.screen_summary); None: no screen
    screen_report: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.messages or self.messages[-1].role != "user":
            raise ValueError("a prompt needs messages ending with a user message")

    @property
    def question(self) -> str:
        return self.messages[-1].content

    def context_text(self) -> str:
        return "\n\n".join(f"[{n}] {passage}" for n, passage in enumerate(self.context, 1))

    def instructions(self) -> str:
        """The system text every tier gets: role, the cited passages, how to state confidence."""
        parts = [self.system]
        if self.context:
            parts.append(
                "Answer from these help-center passages and cite them like [1]. If they do not answer "
                "the question, say so.\n\n" + self.context_text()
            )
        if self.screen:
            parts.append(self.screen)
        if self.images:
            parts.append(f"The user's screen is attached ({len(self.images)} frame(s)).")
        parts.append(CONFIDENCE_INSTRUCTION)
        return "\n\n".join(parts)


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    model: str
    finish_reason: str = "stop"  # stop | length | error
    offline: bool = False  # answered on this machine, no cloud model

    @property
    def answer(self) -> str:
        """The text without the model's closing 'Confidence: X' line."""
        return strip_confidence(self.text)


class LLMProvider(ABC):
    """One tier's backend. `complete` is required; `stream` yields text deltas then the Completion."""

    vendor: str = "?"  # who serves the model: anthropic, google, openai-compatible, self-hosted
    offline: bool = False

    def __init__(self, model: str):
        self.model = model

    @abstractmethod
    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion: ...

    async def stream(self, prompt: Prompt, timeout_s: float) -> AsyncIterator[str | Completion]:
        completion = await self.complete(prompt, timeout_s)
        yield completion.text
        yield completion

    async def aclose(self) -> None:
        return None


def completion(
    prompt: Prompt,
    text: str,
    model: str,
    input_tokens: int | None,
    output_tokens: int | None,
    truncated: bool,
    offline: bool = False,
) -> Completion:
    """A Completion with the provider's token counts, estimated where it reported none."""
    estimated = estimated_usage(prompt, text)
    return Completion(
        text=text,
        input_tokens=input_tokens or estimated[0],
        output_tokens=output_tokens or estimated[1],
        model=model,
        finish_reason="length" if truncated else "stop",
        offline=offline,
    )


def estimated_usage(prompt: Prompt, text: str) -> tuple[int, int]:
    """Token counts for backends that report none (about 4 characters a token)."""
    sent = prompt.instructions() + "".join(m.content for m in prompt.messages)
    return estimate_tokens(sent), estimate_tokens(text)
