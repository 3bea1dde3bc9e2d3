"""One call to a tier's provider under the tier's timeout, which the router enforces itself: a backend
that hangs past it, or raises what is no provider failure, is a failed attempt, not a hung request.
`complete_within` makes one call; `provider_pieces` streams one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from serve_app.routing.attempts import Tier
from serve_app.routing.providers.base import Completion, Prompt, ProviderError
from serve_app.routing.resilience import Deadline

log = logging.getLogger("serve_app.routing.router")  # the logger these messages always had
T = TypeVar("T")


def _timed_out(tier: Tier) -> ProviderError:
    return ProviderError(tier.provider.vendor, "timeout", f"no answer within {tier.timeout_s:g} s")


async def _within(tier: Tier, call: Awaitable[T], timeout_s: float | None = None) -> T:
    """One provider call (or stream step) under the tier's timeout (or what is left of it), which the
    router enforces too: a backend that hangs past it is a failed attempt, not a hung request; a backend
    that raises what is no provider failure is a failed attempt as well."""
    try:
        return await asyncio.wait_for(call, tier.timeout_s if timeout_s is None else timeout_s)
    except TimeoutError:
        raise _timed_out(tier) from None
    except (ProviderError, StopAsyncIteration):
        raise
    except Exception as exc:
        raise _broken(tier, exc) from exc


def _broken(tier: Tier, exc: Exception) -> ProviderError:
    """A tier that raised something other than a provider failure: logged as the bug it is, and a
    failed attempt for the request (which goes on to the next tier)."""
    log.error("tier %s raised %s", tier.name, type(exc).__name__, exc_info=exc)
    return ProviderError(tier.provider.vendor, "internal", f"{type(exc).__name__}: {exc}"[:300])


def _left(deadline: Deadline) -> float:
    return max(deadline.left(), 0.001)


async def complete_within(tier: Tier, prompt: Prompt, deadline: Deadline) -> Completion:
    """One call, within what is left of the attempt's time."""
    left = _left(deadline)
    return await _within(tier, tier.provider.complete(prompt, left), left)


async def provider_pieces(tier: Tier, prompt: Prompt, deadline: Deadline) -> AsyncIterator[str | Completion]:
    """The provider's stream: its first piece within what is left of the attempt's time (the router
    enforces that), each later one within the tier's timeout (a stalled stream fails); the backend is
    given the tier's timeout, since some take it for the whole stream."""
    left = _left(deadline)
    stream = tier.provider.stream(prompt, tier.timeout_s)
    first = True
    try:
        while True:
            try:
                piece = await _within(tier, anext(stream), left if first else None)
            except StopAsyncIteration:
                return
            first = False
            yield piece
    finally:
        await stream.aclose()
