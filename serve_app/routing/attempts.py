"""What one routed request produced: the tiers it could climb (`Tier`), each attempt on one of them
(`Attempt`, its `AttemptOutcome`) and the answer delivered (`RoutedAnswer`, whose `to_dict()` is the
`routing` object of the API's replies). `serve_app.routing.router` fills them in.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from serve_app.costs.pricing import ModelPrice
from serve_app.routing.providers.base import LLMProvider


@dataclass
class Tier:
    name: str
    provider: LLMProvider
    price: ModelPrice
    timeout_s: float = 30.0


class AttemptOutcome(StrEnum):
    """What became of one attempt (the values are what the API, the ledger and the metrics show)."""

    ACCEPTED = "accepted"  # delivered: its confidence reached the bar
    ESCALATED = "escalated"  # below the bar: the next tier was asked
    FINAL = "final"  # the ladder's last attempt, delivered whatever its confidence (no verifier)
    REJECTED = "rejected"  # the ladder's last attempt, not verified: the router abstained
    FAILED = "failed"  # the provider failed (after its retries)
    SKIPPED = "skipped"  # the tier's circuit breaker was open


# attempts that produced no answer
UNANSWERED = (AttemptOutcome.FAILED, AttemptOutcome.SKIPPED)


@dataclass
class Attempt:
    attempt: int
    tier: str
    provider: str
    model: str
    outcome: AttemptOutcome
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
    # not accepted, and the tiers it escalated to failed or were switched off: the best answer in hand
    degraded: bool = False
    # the pre-call step's score of the question (None: step off); skipped: the first tier was not asked
    precall: float | None = None
    precall_skipped: bool = False
    abstained: bool = False
    # the delivered answer's bar holds the tenant's wrong-answer target with the model's guarantee
    # (False: an empirical fallback threshold; None: not verified)
    certified: bool | None = None
    abstain_reason: str | None = None
    intent: str | None = None
    verified: bool | None = None  # None: no verifier ran
    # the answer the best attempt gave, delivered or not (evaluations and the handoff's summary read it;
    # it is not part of the reply)
    candidate: str | None = None
    handoff: dict[str, Any] | None = None  # the conversation's handoff to a person (serve_app/handoff)
    screen: dict[str, Any] | None = None  # the screen lines the turn used, and when they were read
    # the Router deployment's: whether the request's cost events were written before it answered
    # (None: not asked, and not part of the reply)
    costs_written: bool | None = None

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
            "handoff": self.handoff,
            "screen": self.screen,
            "cost_usd": round(self.cost_usd, 8),
            "baseline_usd": round(self.baseline_usd, 8),
            "degraded": self.degraded,
            "abstained": self.abstained,
            "abstain_reason": self.abstain_reason,
            "intent": self.intent,
            "verified": self.verified,
            "certified": self.certified,
            "precall": None
            if self.precall is None
            else {"score": round(self.precall, 4), "skipped_first_tier": self.precall_skipped},
            "failures": [
                {"attempt": a.attempt, "tier": a.tier, "error": a.error}
                for a in self.attempts
                if a.outcome in UNANSWERED
            ],
            "attempts": [{**asdict(a), "outcome": str(a.outcome)} for a in self.attempts],
        } | ({} if self.costs_written is None else {"costs_written": self.costs_written})

    def reply(self, passages: int) -> dict[str, Any]:
        """The whole reply as plain data (what crosses a deployment handle)."""
        return {"answer": self.text, "routing": self.to_dict(), "passages": passages}


def token_totals(routing: dict[str, Any]) -> tuple[int, int]:
    """(input, output) tokens over all attempts of a `RoutedAnswer.to_dict()`."""
    attempts = routing["attempts"]
    return sum(a["input_tokens"] for a in attempts), sum(a["output_tokens"] for a in attempts)
