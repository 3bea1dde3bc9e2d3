"""What the router does when a tier's call fails: retries with backoff, and circuit breakers.

`RetryPolicy` is the one options object for retrying a tier (how many retries, the backoff and its
cap), built from the live routing policy and passed to `retried` (one call) and `retried_stream` (a
stream, retried only before its first text delta). Only retryable `ProviderError`s are retried, and
only while the attempt's deadline (the tier's timeout, from the attempt's start) leaves room for the
backoff and a tenth of the timeout after it: a tier that hung for its whole timeout is not called
again; each retry is counted on the attempt, failed attempts included. A `CircuitBreaker` per tier
switches a tier that keeps failing off for a while, then lets one trial call through.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from serve_app.routing.providers.base import Completion, ProviderError

if TYPE_CHECKING:
    from serve_app.settings import RoutingPolicySettings

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[Any]]


class Retried(Protocol):
    """What counts the retries of one attempt (the router's `Attempt`)."""

    retries: int


@dataclass(frozen=True)
class RetryPolicy:
    """How a tier's retryable failures are retried: up to `retries` times, after jittered exponential
    backoff from `backoff_s` capped at `backoff_max_s`, honouring a provider's Retry-After up to the cap."""

    retries: int
    backoff_s: float
    backoff_max_s: float

    @classmethod
    def from_settings(cls, policy: RoutingPolicySettings) -> RetryPolicy:
        return cls(policy.retries, policy.backoff_s, policy.backoff_max_s)

    def delay(self, retry: int, retry_after_s: float | None) -> float:
        """Seconds to wait before retry number `retry` (1, 2, ...)."""
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (retry - 1))
        delay *= 0.5 + random.random() / 2  # jitter: replicas do not retry in step
        return max(delay, min(retry_after_s or 0.0, self.backoff_max_s))

    async def backed_off(
        self, failure: ProviderError, attempt: Retried, sleep: Sleep, deadline: Deadline | None = None
    ) -> bool:
        """Count a retry on `attempt` and wait for it; False (nothing counted) when `failure` is not
        retryable, the attempt's retries are spent, or the backoff would end past its `deadline`."""
        if not failure.retryable or attempt.retries >= self.retries:
            return False
        delay = self.delay(attempt.retries + 1, failure.retry_after_s)
        if deadline is not None and deadline.left() - delay < deadline.span * MIN_RETRY_SHARE:
            return False  # too little time would be left for the call to be worth making
        attempt.retries += 1
        await sleep(delay)
        return True


# a retry is made only if, after its backoff, at least this share of the attempt's time is left
MIN_RETRY_SHARE = 0.1


@dataclass(frozen=True)
class Deadline:
    """When an attempt (its calls and their retries) must be over, on the router's clock."""

    at: float
    span: float  # the attempt's whole time (the tier's timeout)
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, seconds, clock)

    def left(self) -> float:
        return self.at - self.clock()


async def retried(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    attempt: Retried,
    sleep: Sleep = asyncio.sleep,
    deadline: Deadline | None = None,
) -> T:
    """`call()`, made again after each retryable failure the policy (and the deadline) allows."""
    while True:
        try:
            return await call()
        except ProviderError as failure:
            if not await policy.backed_off(failure, attempt, sleep, deadline):
                raise


async def retried_stream(
    stream: Callable[[], AsyncIterator[str | Completion]],
    policy: RetryPolicy,
    attempt: Retried,
    sleep: Sleep = asyncio.sleep,
    deadline: Deadline | None = None,
) -> AsyncIterator[str | Completion]:
    """The pieces of `stream()`, opened again after a retryable failure that came before its first text
    delta (text already sent cannot be taken back, so a later failure is final) while the deadline
    allows."""
    while True:
        sent = False
        try:
            async for piece in stream():
                sent = sent or isinstance(piece, str)
                yield piece
            return
        except ProviderError as failure:
            if sent or not await policy.backed_off(failure, attempt, sleep, deadline):
                raise


class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls are refused until `reset_s` has passed
    HALF_OPEN = "half-open"  # one trial call is through: it closes or reopens the breaker


@dataclass
class CircuitBreaker:
    """Opens after `failures` consecutive failures; after `reset_s` lets one trial call through."""

    failures: int = 5
    reset_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    consecutive: int = 0
    opened_at: float | None = None
    _trial: bool = False

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self.clock() - self.opened_at >= self.reset_s and not self._trial:
            self._trial = True  # half-open: this call decides
            return True
        return False

    def succeeded(self) -> None:
        self.consecutive, self.opened_at, self._trial = 0, None, False

    def failed(self) -> None:
        self.consecutive += 1
        if self._trial or self.consecutive >= self.failures:
            self.opened_at, self._trial = self.clock(), False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        return BreakerState.HALF_OPEN if self._trial else BreakerState.OPEN
