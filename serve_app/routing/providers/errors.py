"""Maps what an SDK raises to a typed `ProviderError` (timeout, rate limit, server, connection, client)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from serve_app.routing.providers.base import ProviderError, failure_kind

StatusOf = Callable[[BaseException], tuple[int | None, bool]]


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@asynccontextmanager
async def call_errors(provider: str, timeout_s: float, status_of: StatusOf) -> AsyncIterator[None]:
    """Run one SDK call; re-raise its failure as a ProviderError. `status_of(exc)` -> (HTTP status,
    whether exc is this SDK's API error)."""
    try:
        yield
    except ProviderError:
        raise
    except TimeoutError:
        raise ProviderError(provider, "timeout", f"no answer within {timeout_s:g} s") from None
    except Exception as exc:
        status, is_api_error = status_of(exc)
        name = type(exc).__name__.lower()
        if is_api_error and status is not None:
            kind = failure_kind(status)
        elif "timeout" in name:
            kind = "timeout"
        elif any(word in name for word in ("connect", "network", "protocol", "readerror")):
            kind = "connection"
        else:
            raise  # not a transport or API failure: a bug to see, not to retry
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise ProviderError(provider, kind, str(message)[:300], status, _retry_after(exc)) from exc
