"""LLM tier backends: one module each, one registry from config names to classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from serve_app.routing.providers.base import LLMProvider

if TYPE_CHECKING:
    from serve_app.settings import TierSettings

BACKENDS = ("extractive", "gguf", "gemini", "anthropic", "openai-compatible")


def create_provider(
    backend: str,
    model: str,
    *,
    base_url: str | None = None,
    api_key_env: str | None = None,
    path: str | None = None,
    repack_weights: bool = False,
    threads: int | None = None,
) -> LLMProvider:
    """A provider by config name. SDKs and models load only for the backends actually configured."""
    factories: dict[str, Callable[[], LLMProvider]] = {
        "extractive": lambda: _extractive(model),
        "gguf": lambda: _gguf(model, path, repack_weights, threads),
        "gemini": lambda: _gemini(model, base_url, api_key_env or "GEMINI_API_KEY"),
        "anthropic": lambda: _claude(model, base_url, api_key_env or "ANTHROPIC_API_KEY"),
        "openai-compatible": lambda: _openai(model, base_url, api_key_env or "OPENAI_API_KEY"),
    }
    if backend not in factories:
        raise ValueError(f"unknown LLM backend {backend!r}; known: {', '.join(BACKENDS)}")
    return factories[backend]()


def tier_provider(tier: TierSettings, threads: int | None = None) -> LLMProvider:
    """The provider of one configured tier; `threads`: a gguf model's CPU threads (default: the
    tier's `threads`, else the provider's own default)."""
    return create_provider(
        tier.backend,
        tier.model,
        base_url=tier.base_url,
        api_key_env=tier.api_key_env,
        path=tier.path,
        repack_weights=tier.repack_weights,
        threads=threads or tier.threads,
    )


def _extractive(model: str) -> LLMProvider:
    from serve_app.routing.providers.extractive import ExtractiveResponder

    return ExtractiveResponder(model)


def _gguf(model: str, path: str | None, repack_weights: bool, threads: int | None) -> LLMProvider:
    from serve_app.routing.providers.local_gguf import LocalGGUFProvider

    return LocalGGUFProvider(model, path, threads=threads, repack_weights=repack_weights)


def _gemini(model: str, base_url: str | None, key_env: str) -> LLMProvider:
    from serve_app.routing.providers.gemini import GeminiProvider

    return GeminiProvider(model, key_env, base_url)


def _claude(model: str, base_url: str | None, key_env: str) -> LLMProvider:
    from serve_app.routing.providers.claude import ClaudeProvider

    return ClaudeProvider(model, key_env, base_url)


def _openai(model: str, base_url: str | None, key_env: str) -> LLMProvider:
    from serve_app.routing.providers.openai_compat import OpenAICompatibleProvider

    return OpenAICompatibleProvider(model, key_env, base_url)
