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
from typing import Literal

from serve_app.costs.pricing import estimate_tokens

Role = Literal["user", "assistant"]
# internal: the backend raised something that is no API or transport failure (a bug); not retried
FailureKind = Literal["timeout", "rate_limit", "server", "connection", "client", "internal"]

CONFIDENCE_INSTRUCTION = (
    "End your reply with one last line of the form 'Confidence: X' where X between 0 and 1 says how sure "
    "you are that the answer is correct and supported by the context."
)
_CONFIDENCE_LINE = re.compile(r"^\s*\**\s*confidence\s*\**\s*[:=]\s*\**\s*\d*\.?\d+\s*%?\s*\**\s*$", re.I)


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


@dataclass
class ProviderError(Exception):
    provider: str
    kind: FailureKind
    message: str
    status: int | None = None
    retry_after_s: float | None = None

    def __str__(self) -> str:
        code = f" {self.status}" if self.status else ""
        return f"{self.provider}: {self.kind}{code}: {self.message}"

    @property
    def retryable(self) -> bool:
        return self.kind not in ("client", "internal")


def failure_kind(status: int | None) -> FailureKind:
    if status is None:
        return "connection"
    if status in (408, 504):
        return "timeout"
    if status == 429:
        return "rate_limit"
    return "server" if status >= 500 else "client"


def strip_confidence(text: str) -> str:
    lines = text.rstrip().split("\n")
    while lines and _CONFIDENCE_LINE.match(lines[-1]):
        lines.pop()
    return "\n".join(lines).rstrip()


_CONFIDENCE_PREFIX = re.compile(r"^confidence\s*\**\s*[:=]?\s*\**\s*\d*\.?\d*\s*%?\s*\**\s*$")


def _may_become_confidence(line: str) -> bool:
    text = line.lstrip(" *").lower()
    return "confidence".startswith(text) or bool(_CONFIDENCE_PREFIX.match(text))


@dataclass
class ConfidenceLineFilter:
    """Streams text through; only a line that may still turn out to be 'Confidence: X' is held back
    (and dropped if it is one)."""

    _held: str = field(default="")
    _passing: bool = field(default=False)  # the current line is known not to be a confidence line

    def feed(self, delta: str) -> str:
        out: list[str] = []
        text, self._held = self._held + delta, ""
        *lines, partial = text.split("\n")
        for line in lines:
            if self._passing or not _CONFIDENCE_LINE.match(line):
                out.append(line + "\n")
            self._passing = False
        if self._passing or not _may_become_confidence(partial):
            out.append(partial)
            self._passing = self._passing or bool(partial)
        else:
            self._held = partial
        return "".join(out)

    def finish(self) -> str:
        held, self._held = self._held, ""
        return "" if _CONFIDENCE_LINE.match(held) else held


class LLMProvider(ABC):
    """One tier's backend. `complete` is required; `stream` yields text deltas then the Completion."""

    provider: str = "?"
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
