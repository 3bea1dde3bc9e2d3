"""OpenAI-compatible tiers (vLLM, llama.cpp server, Ollama, OpenAI itself) through the official openai SDK."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from typing import Any

from serve_app.routing.providers.base import Completion, LLMProvider, Prompt, completion
from serve_app.routing.providers.errors import call_errors


class OpenAICompatibleProvider(LLMProvider):
    vendor = "openai-compatible"

    def __init__(self, model: str, api_key_env: str = "OPENAI_API_KEY", base_url: str | None = None):
        super().__init__(model)
        import openai

        # self-hosted servers often take any key; a missing one is only an error for api.openai.com
        key = os.environ.get(api_key_env) or ("unused" if base_url else None)
        if not key:
            raise ValueError(f"tier model {model!r} needs an API key in ${api_key_env} or a base_url")
        self._client = openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0)

    def _request(self, prompt: Prompt) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": prompt.instructions()}]
        for n, message in enumerate(prompt.messages):
            if n == len(prompt.messages) - 1 and prompt.images:
                parts: list[dict[str, Any]] = [
                    {
                        "type": "image_url",
                        "image_url": {
                            "url": f"data:{i.mime_type};base64,{base64.b64encode(i.data).decode()}"
                        },
                    }
                    for i in prompt.images
                ]
                messages.append(
                    {"role": "user", "content": [*parts, {"type": "text", "text": message.content}]}
                )
            else:
                messages.append({"role": message.role, "content": message.content})
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": prompt.max_tokens,
            "temperature": prompt.temperature,
        }

    def _completion(self, prompt: Prompt, text: str, usage: Any, finish: str | None) -> Completion:
        return completion(
            prompt,
            text,
            self.model,
            getattr(usage, "prompt_tokens", None),
            getattr(usage, "completion_tokens", None),
            finish == "length",
        )

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        async with call_errors(self.vendor, timeout_s, _status):
            reply = await self._client.chat.completions.create(**self._request(prompt), timeout=timeout_s)
        choice = reply.choices[0]
        return self._completion(prompt, choice.message.content or "", reply.usage, choice.finish_reason)

    async def stream(self, prompt: Prompt, timeout_s: float) -> AsyncIterator[str | Completion]:
        text, usage, finish = [], None, None
        async with call_errors(self.vendor, timeout_s, _status):
            chunks = await self._client.chat.completions.create(
                **self._request(prompt),
                stream=True,
                stream_options={"include_usage": True},
                timeout=timeout_s,
            )
            async for chunk in chunks:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        text.append(choice.delta.content)
                        yield choice.delta.content
                    finish = choice.finish_reason or finish
        yield self._completion(prompt, "".join(text), usage, finish)

    async def aclose(self) -> None:
        await self._client.close()


def _status(exc: BaseException) -> tuple[int | None, bool]:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code, True
    if isinstance(exc, openai.APITimeoutError):
        return 408, True
    if isinstance(exc, openai.APIConnectionError):
        return None, True
    return None, False
