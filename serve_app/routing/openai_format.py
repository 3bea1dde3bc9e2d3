"""OpenAI chat-completions wire format <-> the router's ChatRequest and RoutedAnswer.

Accepted: `messages` with text content or content parts (`text`, `image_url` as a base64 data URL; remote
URLs are refused, nothing is fetched), `stream`, `max_tokens`/`max_completion_tokens`, `temperature`,
`model` ("auto" / "supportgraph" for the tenant's ladder, or a tier name to pin one tier). Extensions:
`tenant_id` (or the X-Tenant-Id header), `session_id`, `retrieve`. Replies carry the usual fields plus
`supportgraph`: tier, model, whether the answer is offline, confidence, every attempt and its cost.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
import uuid
from typing import Any, Literal

from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field

from serve_app.errors import ChatFormatError
from serve_app.routing.providers.base import Image, Message
from serve_app.routing.router import token_totals
from serve_app.routing.service import ChatRequest

AUTO = ("auto", "supportgraph")
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


class ImageURL(BaseModel):
    url: str = Field(..., max_length=16 * 1024 * 1024)
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "image_url"]
    text: str | None = Field(None, max_length=100_000)
    image_url: ImageURL | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] = Field(..., max_length=100_000)


class ChatCompletionIn(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (n, user, ...)

    model: str = Field("auto", max_length=100)
    messages: list[ChatMessageIn] = Field(..., min_length=1, max_length=200)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float = Field(0.2, ge=0, le=2)
    tenant_id: str | None = Field(None, max_length=63)
    session_id: uuid.UUID | None = None
    retrieve: bool = True
    # the caller's screen share (tenant_<tenant>_<room>[.<track>]): its screen text rides with the turn
    stream_id: str | None = Field(None, max_length=200)


def _image(url: str, max_bytes: int) -> Image:
    if not url.startswith("data:"):
        raise ChatFormatError(
            "image_url must be a base64 data URL (data:image/...;base64,...); nothing is fetched"
        )
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise ChatFormatError("image_url data URLs must be base64-encoded")
    if len(payload) * 3 // 4 > max_bytes:
        raise ChatFormatError(f"an image is over the {max_bytes}-byte limit")
    try:
        data = base64.b64decode(payload, validate=True)
        with PILImage.open(io.BytesIO(data)) as img:
            kind = img.format
            img.verify()
    except (binascii.Error, ValueError, OSError, PILImage.DecompressionBombError) as exc:
        raise ChatFormatError(f"an image_url is not a readable image: {exc}") from None
    if kind not in IMAGE_TYPES:
        raise ChatFormatError(f"image type {kind} is not supported; use JPEG, PNG, WebP or GIF")
    return Image(data, IMAGE_TYPES[kind])


def to_request(body: ChatCompletionIn, tenant_id: str, max_image_bytes: int) -> tuple[ChatRequest, str]:
    """(ChatRequest, system text from system/developer messages)."""
    system: list[str] = []
    messages: list[Message] = []
    images: list[Image] = []
    for m in body.messages:
        parts = [ContentPart(type="text", text=m.content)] if isinstance(m.content, str) else m.content
        # NUL cannot reach Postgres (retrieval, ledger) and means nothing to a model
        text = "\n".join(p.text or "" for p in parts if p.type == "text").replace("\x00", "").strip()
        for p in parts:
            if p.type == "image_url":
                if m.role != "user" or p.image_url is None:
                    raise ChatFormatError("images go in user messages, as image_url parts")
                images.append(_image(p.image_url.url, max_image_bytes))
        if m.role in ("system", "developer"):
            system.append(text)
        elif text or m.role == "user":
            messages.append(Message(m.role, text))
    if not messages or messages[-1].role != "user" or not messages[-1].content:
        raise ChatFormatError("the last message must be a user message with text")
    tier = None if body.model in AUTO else body.model
    request = ChatRequest(
        tenant_id=tenant_id,
        messages=tuple(messages),
        images=tuple(images),
        session_id=body.session_id,
        tier=tier,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        retrieve=body.retrieve,
        system="\n\n".join(s for s in system if s) or None,
        stream_id=body.stream_id,
    )
    return request, request.system or ""


def _usage(routing: dict[str, Any]) -> dict[str, int]:
    prompt, completion = token_totals(routing)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(answer: str, routing: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{routing['request_id']}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": routing["model"],
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
        ],
        "usage": _usage(routing),
        "supportgraph": routing,
    }


def chunk_body(
    chunk_id: str, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
