"""Maps what an SDK raises to a typed `ProviderError` (timeout, rate limit, server, connection, client).

The mapping is by exception type, in the manner of httpx's `map_exceptions`: each SDK says which of its
types are API errors with an HTTP status (`StatusOf`); transport failures are sorted by the types that the
SDKs' HTTP stack raises (`TRANSPORT_FAILURES`). Anything else is a bug and propagates as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx

from serve_app.errors import FailureKind, ProviderError, failure_kind

StatusOf = Callable[[BaseException], tuple[int | None, bool]]

# transport failures by type, the first match wins (a timeout is also a transport error in httpx)
TRANSPORT_FAILURES: tuple[tuple[type[BaseException], FailureKind], ...] = (
    (httpx.TimeoutException, "timeout"),
    (httpx.TransportError, "connection"),  # connect, read, write, protocol, proxy errors
    (ConnectionError, "connection"),  # the OS's refused, reset, aborted, broken pipe
)
try:  # google-genai's async client uses aiohttp where it is installed
    import aiohttp

    TRANSPORT_FAILURES += ((aiohttp.ClientConnectionError, "connection"),)
except ImportError:  # pragma: no cover - aiohttp is optional
    pass


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def transport_kind(exc: BaseException) -> FailureKind | None:
    """The FailureKind of a transport failure (or of the one it wraps, as SDKs' connection errors do);
    None when `exc` is no transport failure."""
    seen: BaseException | None = exc
    while seen is not None:
        for failure_type, kind in TRANSPORT_FAILURES:
            if isinstance(seen, failure_type):
                return kind
        seen = seen.__cause__ or seen.__context__
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
        if is_api_error:
            kind = failure_kind(status)  # no status: the SDK's connection error
        elif (transport := transport_kind(exc)) is not None:
            kind = transport
        else:
            raise  # not a transport or API failure: a bug to see, not to retry
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise ProviderError(provider, kind, str(message)[:300], status, _retry_after(exc)) from exc
