"""Claude tiers through the official anthropic SDK (Messages API, streaming too)."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from typing import Any

from serve_app.routing.providers.base import Completion, LLMProvider, Prompt, completion
from serve_app.routing.providers.errors import call_errors


class ClaudeProvider(LLMProvider):
    vendor = "anthropic"

    def __init__(self, model: str, api_key_env: str = "ANTHROPIC_API_KEY", base_url: str | None = None):
        super().__init__(model)
        import anthropic

        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"tier model {model!r} needs an API key in ${api_key_env}")
        self._client = anthropic.AsyncAnthropic(api_key=key, base_url=base_url, max_retries=0)

    def _request(self, prompt: Prompt) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        for n, message in enumerate(prompt.messages):
            content: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
            if n == len(prompt.messages) - 1:
                images = [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": i.mime_type,
                            "data": base64.b64encode(i.data).decode(),
                        },
                    }
                    for i in prompt.images
                ]
                content = images + content
            messages.append({"role": message.role, "content": content})
        return {
            "model": self.model,
            "system": prompt.instructions(),
            "messages": messages,
            "max_tokens": prompt.max_tokens,  # (anthropic 2.x takes no sampling temperature)
        }

    def _completion(self, prompt: Prompt, text: str, usage: Any, stop_reason: str | None) -> Completion:
        return completion(
            prompt,
            text,
            self.model,
            getattr(usage, "input_tokens", None),
            getattr(usage, "output_tokens", None),
            stop_reason == "max_tokens",
        )

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        async with call_errors(self.vendor, timeout_s, _status):
            message = await self._client.messages.create(**self._request(prompt), timeout=timeout_s)
        text = "".join(block.text for block in message.content if block.type == "text")
        return self._completion(prompt, text, message.usage, message.stop_reason)

    async def stream(self, prompt: Prompt, timeout_s: float) -> AsyncIterator[str | Completion]:
        request = self._request(prompt)
        async with (
            call_errors(self.vendor, timeout_s, _status),
            self._client.messages.stream(**request, timeout=timeout_s) as events,
        ):
            async for delta in events.text_stream:
                yield delta
            final = await events.get_final_message()
        text = "".join(block.text for block in final.content if block.type == "text")
        yield self._completion(prompt, text, final.usage, final.stop_reason)

    async def aclose(self) -> None:
        await self._client.close()


def _status(exc: BaseException) -> tuple[int | None, bool]:
    import anthropic

    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code, True
    if isinstance(exc, anthropic.APITimeoutError):
        return 408, True
    if isinstance(exc, anthropic.APIConnectionError):
        return None, True
    return None, False
