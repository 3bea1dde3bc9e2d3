"""Attempt-based escalation ("upgrade the brain, not the eyes").

Attempt 1 goes to the cheapest tier of the tenant's ladder. An answer is accepted when the scorer's
confidence reaches the tier's threshold; otherwise, or when the provider fails (after retries with
jittered exponential backoff; a tier whose circuit breaker is open is skipped), the next tier gets the
same prompt: the same passages and the same deduplicated frames. The last attempt's answer is returned
whatever its confidence. Every attempt, failed ones included, is handed to `record` (the cost ledger).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from serve_app.costs.ledger import CostEvent
from serve_app.costs.pricing import ModelPrice
from serve_app.routing.confidence import (
    CalculationScorer,
    GroundingScorer,
    LearnedScorer,
    SelfReportedScorer,
    ShapeScorer,
)
from serve_app.routing.providers.base import (
    Completion,
    ConfidenceLineFilter,
    LLMProvider,
    Prompt,
    ProviderError,
)
from serve_app.settings import RoutingPolicySettings


class NoTierAvailable(Exception):
    """Every tier of the ladder failed or is switched off by its breaker (HTTP 503)."""


@dataclass
class Tier:
    name: str
    provider: LLMProvider
    price: ModelPrice
    timeout_s: float = 30.0


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
    def available(self) -> bool:
        """Would let a call through now (no side effect)."""
        return self.opened_at is None or (self.clock() - self.opened_at >= self.reset_s and not self._trial)

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else ("half-open" if self._trial else "open")


class ConfidenceScorer:
    """Weighted mean of the configured scorers (weights from the live policy)."""

    def __init__(self, weights: dict[str, float], learned: LearnedScorer | None = None):
        available = {
            "self_reported": SelfReportedScorer(),
            "grounding": GroundingScorer(),
            "shape": ShapeScorer(require_final=False),
            "calculation": CalculationScorer(),
        }
        if learned is not None:
            available["learned"] = learned
        self.parts = [(available[name], w) for name, w in weights.items() if w > 0 and name in available]
        if not self.parts:
            raise ValueError("no usable confidence scorer in the weights")

    def score(self, prompt: Prompt, text: str) -> float:
        asked = "\n".join(m.content for m in prompt.messages)
        context = prompt.context_text()
        total = sum(w for _, w in self.parts)
        return sum(w * s.score(asked, text, context) for s, w in self.parts) / total

    @classmethod
    def from_policy(cls, policy: RoutingPolicySettings) -> ConfidenceScorer:
        learned = LearnedScorer.load(policy.learned_scorer) if policy.learned_scorer else None
        return cls(dict(policy.scorer_weights), learned)


@dataclass
class Attempt:
    attempt: int
    tier: str
    provider: str
    model: str
    outcome: str  # accepted | escalated | final | failed | skipped
    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    confidence: float | None = None
    retries: int = 0
    error: str | None = None
    offline: bool = False


@dataclass
class RoutedAnswer:
    request_id: uuid.UUID
    text: str
    tier: str
    model: str
    confidence: float
    offline: bool
    attempts: list[Attempt] = field(default_factory=list)
    baseline_usd: float = 0.0  # the same request on the ladder's top tier alone

    @property
    def cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.attempts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": str(self.request_id),
            "tier": self.tier,
            "model": self.model,
            "confidence": round(self.confidence, 4),
            "offline": self.offline,
            "cost_usd": round(self.cost_usd, 8),
            "baseline_usd": round(self.baseline_usd, 8),
            "attempts": [asdict(a) for a in self.attempts],
        }


def token_totals(routing: dict[str, Any]) -> tuple[int, int]:
    """(input, output) tokens over all attempts of a `RoutedAnswer.to_dict()`."""
    attempts = routing["attempts"]
    return sum(a["input_tokens"] for a in attempts), sum(a["output_tokens"] for a in attempts)


Recorder = Callable[[CostEvent], None]


class EscalatingRouter:
    def __init__(
        self,
        tiers: list[Tier],
        policy: RoutingPolicySettings,
        record: Recorder | None = None,
        ladders: dict[str, list[str]] | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not tiers:
            raise ValueError("the router needs at least one tier")
        self.tiers = {t.name: t for t in tiers}
        self.order = [t.name for t in tiers]
        self.ladders = ladders or {}
        self.record = record
        self._sleep, self._clock = sleep, clock
        self.breakers: dict[str, CircuitBreaker] = {}
        self.configure(policy)

    def configure(self, policy: RoutingPolicySettings) -> None:
        """Apply a new policy (thresholds, weights, retries, breaker) to the next requests."""
        self.scorer = ConfidenceScorer.from_policy(policy)
        self.policy = policy
        for name in self.order:
            breaker = self.breakers.setdefault(name, CircuitBreaker(clock=self._clock))
            breaker.failures, breaker.reset_s = policy.breaker_failures, policy.breaker_reset_s

    def pinned(self, tier: str) -> EscalatingRouter:
        """A router over one tier (no escalation) sharing this one's breakers, policy and recorder."""
        one = EscalatingRouter.__new__(EscalatingRouter)
        one.__dict__.update(self.__dict__)
        one.order, one.ladders = [tier], {}
        return one

    def ladder(self, tenant_id: str) -> list[Tier]:
        names = self.ladders.get(tenant_id, self.order)
        return [self.tiers[n] for n in names][: self.policy.max_attempts]

    def threshold(self, tier: str) -> float:
        return self.policy.tier_thresholds.get(tier, self.policy.threshold)

    async def _call(self, tier: Tier, prompt: Prompt, attempt: Attempt) -> Completion:
        """One tier, with retries of retryable failures, counted on the attempt (failed ones too)."""
        while True:
            try:
                return await tier.provider.complete(prompt, tier.timeout_s)
            except ProviderError as exc:
                if not exc.retryable or attempt.retries >= self.policy.retries:
                    raise
                attempt.retries += 1
                await self._sleep(self._backoff(attempt.retries, exc.retry_after_s))

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        delay = min(self.policy.backoff_max_s, self.policy.backoff_s * 2 ** (retry - 1))
        delay *= 0.5 + random.random() / 2  # jitter: replicas do not retry in step
        return max(delay, min(retry_after or 0.0, self.policy.backoff_max_s))

    def _attempt(self, n: int, tier: Tier, prompt: Prompt, outcome: str) -> Attempt:
        return Attempt(
            n, tier.name, tier.provider.provider, tier.price.model, outcome, images=len(prompt.images)
        )

    def _priced(self, attempt: Attempt, tier: Tier, completion: Completion, started: float) -> None:
        attempt.input_tokens, attempt.output_tokens = completion.input_tokens, completion.output_tokens
        attempt.cost_usd = tier.price.cost(completion.input_tokens, completion.output_tokens, attempt.images)
        attempt.latency_ms = (self._clock() - started) * 1000
        attempt.offline = completion.offline

    def _emit(
        self,
        tenant_id: str,
        session_id: uuid.UUID | None,
        request_id: uuid.UUID,
        a: Attempt,
        baseline_usd: float | None = None,
    ) -> None:
        if self.record is not None:
            self.record(
                CostEvent(
                    tenant_id,
                    "llm",
                    a.provider,
                    a.model,
                    a.attempt,
                    a.input_tokens,
                    a.output_tokens,
                    a.images,
                    a.cost_usd,
                    a.latency_ms,
                    session_id,
                    request_id=request_id,
                    tier=a.tier,
                    outcome=a.outcome,
                    confidence=a.confidence,
                    baseline_usd=baseline_usd,
                )
            )

    async def answer(
        self,
        prompt: Prompt,
        tenant_id: str,
        session_id: uuid.UUID | None = None,
        request_id: uuid.UUID | None = None,
    ) -> RoutedAnswer:
        result: RoutedAnswer | None = None
        async for item in self._route(prompt, tenant_id, session_id, request_id, stream_last=False):
            if isinstance(item, RoutedAnswer):
                result = item
        assert result is not None
        return result

    async def stream(
        self,
        prompt: Prompt,
        tenant_id: str,
        session_id: uuid.UUID | None = None,
        request_id: uuid.UUID | None = None,
    ) -> AsyncIterator[str | RoutedAnswer]:
        """Text deltas of the answer, then the RoutedAnswer. Attempts that may still escalate are scored
        whole before anything is sent; the ladder's last attempt streams live."""
        async for item in self._route(prompt, tenant_id, session_id, request_id, stream_last=True):
            yield item

    async def _route(
        self,
        prompt: Prompt,
        tenant_id: str,
        session_id: uuid.UUID | None,
        request_id: uuid.UUID | None,
        stream_last: bool,
    ) -> AsyncIterator[str | RoutedAnswer]:
        request_id = request_id or uuid.uuid4()
        ladder = self.ladder(tenant_id)
        top = ladder[-1]
        attempts: list[Attempt] = []
        errors: list[str] = []
        for n, tier in enumerate(ladder, 1):
            last = n == len(ladder)
            breaker = self.breakers[tier.name]
            attempt = self._attempt(n, tier, prompt, "skipped")
            attempts.append(attempt)
            if not breaker.allow():
                attempt.error = "circuit open"
                errors.append(f"{tier.name}: circuit open")
                self._emit(tenant_id, session_id, request_id, attempt)
                continue
            started = self._clock()
            try:
                if last and stream_last:
                    completion = None
                    lines = ConfidenceLineFilter()
                    async for piece in self._stream_call(tier, prompt, attempt):
                        if isinstance(piece, Completion):
                            completion = piece
                        elif text := lines.feed(piece):
                            yield text
                    assert completion is not None
                    if tail := lines.finish():
                        yield tail
                else:
                    completion = await self._call(tier, prompt, attempt)
            except ProviderError as exc:
                breaker.failed()
                attempt.outcome, attempt.error = "failed", str(exc)
                attempt.latency_ms = (self._clock() - started) * 1000
                errors.append(str(exc))
                self._emit(tenant_id, session_id, request_id, attempt)
                continue
            breaker.succeeded()
            self._priced(attempt, tier, completion, started)
            attempt.confidence = self.scorer.score(prompt, completion.text)
            accepted = attempt.confidence >= self.threshold(tier.name)
            done = accepted or last or not self._later_tier_open(ladder[n:])
            attempt.outcome = "accepted" if accepted else ("final" if done else "escalated")
            baseline = top.price.cost(completion.input_tokens, completion.output_tokens, len(prompt.images))
            self._emit(tenant_id, session_id, request_id, attempt, baseline if done else None)
            if done:
                if not (last and stream_last):
                    yield completion.answer
                yield RoutedAnswer(
                    request_id,
                    completion.answer,
                    tier.name,
                    completion.model,
                    attempt.confidence,
                    completion.offline,
                    attempts,
                    baseline,
                )
                return
        raise NoTierAvailable("; ".join(errors) or "no tier configured")

    def _later_tier_open(self, rest: list[Tier]) -> bool:
        return any(self.breakers[t.name].available for t in rest)

    async def _stream_call(
        self, tier: Tier, prompt: Prompt, attempt: Attempt
    ) -> AsyncIterator[str | Completion]:
        """The provider's stream; failures before the first delta are retried and counted like `_call`."""
        while True:
            sent = False
            try:
                async for piece in tier.provider.stream(prompt, tier.timeout_s):
                    sent = sent or isinstance(piece, str)
                    yield piece
                return
            except ProviderError as exc:
                if sent or not exc.retryable or attempt.retries >= self.policy.retries:
                    raise
                attempt.retries += 1
                await self._sleep(self._backoff(attempt.retries, exc.retry_after_s))

    def status(self) -> dict[str, Any]:
        return {
            "tiers": [
                {
                    "name": name,
                    "provider": self.tiers[name].provider.provider,
                    "model": self.tiers[name].price.model,
                    "offline": self.tiers[name].provider.offline,
                    "threshold": self.threshold(name),
                    "breaker": self.breakers[name].state,
                }
                for name in self.order
            ],
            "max_attempts": self.policy.max_attempts,
        }
