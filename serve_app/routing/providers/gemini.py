"""Gemini tiers through the official google-genai SDK (`generate_content`, streaming too).

`base_url` points the SDK at another endpoint speaking the same wire format (tests use a local server).
The SDK's own retries stay off: the router owns retries, backoff and the circuit breaker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from serve_app.routing.providers.base import (
    Completion,
    LLMProvider,
    Prompt,
    ProviderError,
    completion,
)
from serve_app.routing.providers.errors import call_errors


class GeminiProvider(LLMProvider):
    vendor = "google"

    def __init__(self, model: str, api_key_env: str = "GEMINI_API_KEY", base_url: str | None = None):
        super().__init__(model)
        from google import genai
        from google.genai import types

        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"tier model {model!r} needs an API key in ${api_key_env}")
        options = types.HttpOptions(base_url=base_url) if base_url else None
        self._types = types
        self._client = genai.Client(api_key=key, http_options=options)

    def _request(self, prompt: Prompt) -> dict[str, Any]:
        t = self._types
        contents = []
        for n, message in enumerate(prompt.messages):
            parts = [t.Part.from_text(text=message.content)]
            if n == len(prompt.messages) - 1:  # the frames go with the question being answered
                parts = [t.Part.from_bytes(data=i.data, mime_type=i.mime_type) for i in prompt.images] + parts
            contents.append(t.Content(role="model" if message.role == "assistant" else "user", parts=parts))
        config = t.GenerateContentConfig(
            system_instruction=prompt.instructions(),
            max_output_tokens=prompt.max_tokens,
            temperature=prompt.temperature,
        )
        return {"model": self.model, "contents": contents, "config": config}

    def _completion(self, prompt: Prompt, text: str, usage: Any, finish: Any) -> Completion:
        reason = str(getattr(finish, "value", finish) or "STOP").upper()
        return completion(
            prompt,
            text,
            self.model,
            getattr(usage, "prompt_token_count", None),
            getattr(usage, "candidates_token_count", None),
            reason == "MAX_TOKENS",
        )

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        async with call_errors(self.vendor, timeout_s, _status):
            response = await asyncio.wait_for(
                self._client.aio.models.generate_content(**self._request(prompt)), timeout_s
            )
        candidate = (response.candidates or [None])[0]
        if candidate is None:
            raise ProviderError(self.vendor, "server", "no candidates in the response")
        return self._completion(prompt, response.text or "", response.usage_metadata, candidate.finish_reason)

    async def stream(self, prompt: Prompt, timeout_s: float) -> AsyncIterator[str | Completion]:
        text, usage, finish = [], None, None
        async with call_errors(self.vendor, timeout_s, _status):
            chunks = await asyncio.wait_for(
                self._client.aio.models.generate_content_stream(**self._request(prompt)), timeout_s
            )
            async for chunk in chunks:
                if chunk.text:
                    text.append(chunk.text)
                    yield chunk.text
                usage = chunk.usage_metadata or usage
                if chunk.candidates and chunk.candidates[0].finish_reason:
                    finish = chunk.candidates[0].finish_reason
        yield self._completion(prompt, "".join(text), usage, finish)


def _status(exc: BaseException) -> tuple[int | None, bool]:
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        return exc.code, True
    return None, False
