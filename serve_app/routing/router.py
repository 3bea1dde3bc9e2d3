"""Attempt-based escalation ("upgrade the brain, not the eyes").

Attempt 1 goes to the cheapest tier of the tenant's ladder. An answer is accepted when its confidence
reaches the bar; otherwise, or when the provider fails (after retries with jittered exponential backoff;
a tier whose circuit breaker is open is skipped), the next tier gets the same prompt: the same passages
and the same deduplicated frames. Every attempt, failed ones included, is handed to `record` (the cost
ledger). Retries, backoff and breakers are `resilience`'s.

With a verifier (`checker`, serve_app/answers; the chat service gives one unless `policy.verify` is off)
an attempt's confidence is the verifier's probability that the passages support its answer, and the bar
is the answer model's Learn-then-Test threshold for the tenant's tolerated share of wrong answers among
delivered ones. The first verified attempt is delivered; when none verifies the router abstains: it says
it does not know (the tenant's wording, no invented content), `abstained` with the reason, and the
caller's handoff hook takes over. A question without passages to check an answer against is abstained
on before any tier is called. Streams are verified before their first word goes out.

Without a verifier, confidence comes from `confidence`'s scorers against the tier's threshold; the last
attempt's answer is returned whatever its confidence, and when the tiers an answer escalated to all fail
the most confident answer obtained is returned, marked `degraded`. In both modes only a request that no
tier answered is `NoTierAvailable`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from serve_app.answers.verify import AnswerChecker
from serve_app.costs.ledger import CostEvent
from serve_app.errors import NoTierAvailable
from serve_app.routing.attempts import (  # noqa: F401 (re-exported)
    UNANSWERED,
    Attempt,
    AttemptOutcome,
    RoutedAnswer,
    Tier,
    token_totals,
)
from serve_app.routing.calls import complete_within, provider_pieces
from serve_app.routing.confidence import ConfidenceScorer
from serve_app.routing.confidence_line import ConfidenceLineFilter
from serve_app.routing.precall import QueryScorer
from serve_app.routing.providers.base import Completion, Prompt, ProviderError, tool_call
from serve_app.routing.resilience import (
    CircuitBreaker,
    Deadline,
    RetryPolicy,
    Sleep,
    retried,
    retried_stream,
)
from serve_app.settings import RoutingPolicySettings

log = logging.getLogger(__name__)
T = TypeVar("T")


ABSTAINED = "abstained"  # the tier and model of a reply no tier's answer made
_SENTENCE_END = re.compile(r"(?<=[.!?\]])\s+")
_ATTEMPT_COSTS = (  # the fields of an Attempt that its cost event carries unchanged
    *("provider", "model", "attempt", "tier", "confidence"),
    *("input_tokens", "output_tokens", "images", "cost_usd", "latency_ms"),
)


def _pieces(text: str) -> list[str]:
    """A checked answer sent as a stream: sentence by sentence (each keeps its trailing space)."""
    parts = _SENTENCE_END.split(text)
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts) if p]


Recorder = Callable[[CostEvent], None]


class EscalationLadder:
    """The escalation policy: a request climbs its tenant's ladder of tiers, cheapest first, until an
    answer is accepted (see the module docstring). Not a Serve deployment (`deployments.router`) nor a
    request router (`deployments.stream_affinity`)."""

    def __init__(
        self,
        tiers: list[Tier],
        policy: RoutingPolicySettings,
        record: Recorder | None = None,
        ladders: dict[str, list[str]] | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        checker: AnswerChecker | None = None,
    ):
        """`checker`: the verifier (serve_app/answers); None, or `policy.verify` off: confidence from the
        scorers and no abstention."""
        if not tiers:
            raise ValueError("the router needs at least one tier")
        self.tiers = {t.name: t for t in tiers}
        self.order = [t.name for t in tiers]
        self.ladders = ladders or {}
        self.record = record
        self._sleep, self._clock = sleep, clock
        self.breakers: dict[str, CircuitBreaker] = {}
        self.checker = checker
        self._precall: tuple[Path | None, QueryScorer | None] = (None, None)  # (file, its scorer)
        self.configure(policy)

    def configure(self, policy: RoutingPolicySettings) -> None:
        """Apply a new policy (thresholds, weights, retries, breaker) to the next requests."""
        self.scorer = ConfidenceScorer.from_policy(policy)
        loaded = self._precall
        if policy.precall_threshold <= 0:
            self.precall = None
        elif loaded[0] == policy.precall_scorer:  # the same file: keep the loaded scorer (and its embedder)
            self.precall = loaded[1]
        else:
            self.precall = QueryScorer.load(policy.precall_scorer)
        self._precall = (policy.precall_scorer, self.precall)
        self.retry = RetryPolicy.from_settings(policy)
        self.policy = policy
        if self.checker is not None:
            self.checker.alpha = policy.wrong_answer_target
            self.checker.tenant_alpha = dict(policy.tenant_wrong_answer_targets)
        for name in self.order:
            breaker = self.breakers.setdefault(name, CircuitBreaker(clock=self._clock))
            breaker.failures, breaker.reset_s = policy.breaker_failures, policy.breaker_reset_s

    def ladder(self, tenant_id: str, override: Sequence[str] | None = None) -> list[Tier]:
        """The tiers a request climbs, cheapest first: `override` when the caller names them (one tier:
        no escalation), else the tenant's ladder, else every tier; at most `max_attempts` of them."""
        names = self.ladders.get(tenant_id, self.order) if override is None else override
        return [self.tiers[n] for n in names][: self.policy.max_attempts]

    async def precall_step(self, prompt: Prompt, ladder: list[Tier]) -> tuple[list[Tier], float | None]:
        """The pre-call step: the question's score (the chance that the ladder's first tier answers it
        right, from the question alone); below `precall_threshold` the first tier is skipped. Off (None)
        unless configured, and for a one-tier ladder."""
        if self.precall is None or len(ladder) < 2:
            return ladder, None
        scorer = self.precall
        score = await asyncio.to_thread(scorer.score, prompt.question)  # an embedding: off the event loop
        return (ladder[1:] if score < self.policy.precall_threshold else ladder), score

    def threshold(self, tier: str, tenant_id: str | None = None) -> float:
        """The tenant's calibrated threshold for the tier, else the tier's, else the global one."""
        calibrated = self.policy.tenant_thresholds.get(tenant_id, {}) if tenant_id else {}
        return calibrated.get(tier, self.policy.tier_thresholds.get(tier, self.policy.threshold))

    @property
    def verifying(self) -> bool:
        return self.checker is not None and self.policy.verify

    def bar(self, tier: str, tenant_id: str | None = None, verifying: bool | None = None) -> float:
        """The confidence an answer of `tier` needs to be delivered: with a verifier, the answer model's
        threshold for the tenant's tolerated wrong-answer share (raised by a tier or tenant threshold set
        explicitly); without one, `threshold()`."""
        if not (self.verifying if verifying is None else verifying):
            return self.threshold(tier, tenant_id)
        assert self.checker is not None
        bar = self.checker.threshold(tenant_id)
        explicit = self.policy.tenant_thresholds.get(tenant_id or "", {}).get(tier)
        if explicit is None:
            explicit = self.policy.tier_thresholds.get(tier)
        return bar if explicit is None else max(bar, explicit)

    async def _confidence(self, prompt: Prompt, completion: Completion, verify: bool) -> float:
        if not verify:
            return self.scorer.score(prompt, completion.text)
        assert self.checker is not None
        verdict = await asyncio.to_thread(
            self.checker.verify,
            prompt.question,
            prompt.context,
            completion.answer,
            prompt.screen_lines,
            prompt.tenant_id,
        )
        return verdict.score

    async def _call(self, tier: Tier, prompt: Prompt, attempt: Attempt) -> Completion:
        """One tier, with retries of retryable failures, counted on the attempt (failed ones too), all
        within the tier's timeout."""
        deadline = Deadline.after(tier.timeout_s, self._clock)
        return await retried(
            lambda: complete_within(tier, prompt, deadline), self.retry, attempt, self._sleep, deadline
        )

    def _attempt(self, n: int, tier: Tier, prompt: Prompt, outcome: AttemptOutcome) -> Attempt:
        return Attempt(
            n, tier.name, tier.provider.vendor, tier.price.model, outcome, images=len(prompt.images)
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
                    tenant_id=tenant_id,
                    service="llm",
                    session_id=session_id,
                    request_id=request_id,
                    outcome=str(a.outcome),
                    baseline_usd=baseline_usd,
                    **{name: getattr(a, name) for name in _ATTEMPT_COSTS},
                )
            )

    async def answer(
        self,
        prompt: Prompt,
        tenant_id: str,
        session_id: uuid.UUID | None = None,
        request_id: uuid.UUID | None = None,
        *,
        ladder: Sequence[str] | None = None,
    ) -> RoutedAnswer:
        """The routed answer; `ladder` names the tiers to use instead of the tenant's (see `ladder()`)."""
        result: RoutedAnswer | None = None
        async for item in self._route(prompt, tenant_id, session_id, request_id, ladder, stream_last=False):
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
        *,
        ladder: Sequence[str] | None = None,
    ) -> AsyncIterator[str | RoutedAnswer]:
        """Text deltas of the answer, then the RoutedAnswer. Attempts that may still escalate are scored
        whole before anything is sent; the ladder's last attempt streams live. `ladder` as in `answer`."""
        async for item in self._route(prompt, tenant_id, session_id, request_id, ladder, stream_last=True):
            yield item

    async def _route(
        self,
        prompt: Prompt,
        tenant_id: str,
        session_id: uuid.UUID | None,
        request_id: uuid.UUID | None,
        override: Sequence[str] | None,
        stream_last: bool,
    ) -> AsyncIterator[str | RoutedAnswer]:
        request_id = request_id or uuid.uuid4()
        full = self.ladder(tenant_id, override)
        verifying = self.verifying and prompt.grounded
        if verifying and not prompt.context:
            # nothing to check an answer against: no tier is asked to make one up
            routed = self._abstained(request_id, tenant_id, [], "no_evidence", 0.0, 0.0)
            yield routed.text
            yield routed
            return
        ladder, precall = await self.precall_step(prompt, full) if override is None else (full, None)
        top = ladder[-1]
        live = stream_last and not verifying  # a verified answer is checked whole before it is sent
        attempts: list[Attempt] = []
        errors: list[str] = []
        best: tuple[Attempt, Completion] | None = None  # the most confident escalated answer so far
        streamed = False  # the last attempt sent text before it failed
        for n, tier in enumerate(ladder, 1):
            last = n == len(ladder)
            breaker = self.breakers[tier.name]
            attempt = self._attempt(n, tier, prompt, AttemptOutcome.SKIPPED)
            attempts.append(attempt)
            # a degraded answer's baseline goes on the ladder's last attempt, failed or skipped
            fallback = best[1] if best and last else None
            if not breaker.allow():
                attempt.error = "circuit open"
                errors.append(f"{tier.name}: circuit open")
                self._emit(tenant_id, session_id, request_id, attempt, self._baseline(top, prompt, fallback))
                continue
            started = self._clock()
            try:
                if last and live:
                    completion = None
                    lines = ConfidenceLineFilter()
                    async for piece in self._stream_call(tier, prompt, attempt):
                        if isinstance(piece, Completion):
                            completion = piece
                        elif text := lines.feed(piece):
                            streamed = True
                            yield text
                    assert completion is not None
                    if tail := lines.finish():
                        yield tail
                else:
                    completion = await self._call(tier, prompt, attempt)
            except ProviderError as exc:
                breaker.failed()
                attempt.outcome, attempt.error = AttemptOutcome.FAILED, str(exc)
                attempt.latency_ms = (self._clock() - started) * 1000
                errors.append(str(exc))
                self._emit(tenant_id, session_id, request_id, attempt, self._baseline(top, prompt, fallback))
                continue
            breaker.succeeded()
            self._priced(attempt, tier, completion, started)
            # a tool call is an action the agent runs (its output answers on the next turn): not a claim
            action = verifying and tool_call(prompt.system, completion.answer) is not None
            attempt.confidence = await self._confidence(prompt, completion, verifying and not action)
            accepted = action or attempt.confidence >= self.bar(tier.name, tenant_id, verifying)
            if not (accepted or last):
                attempt.outcome = AttemptOutcome.ESCALATED
                self._emit(tenant_id, session_id, request_id, attempt)
                if best is None or attempt.confidence > (best[0].confidence or 0.0):
                    best = attempt, completion
                continue
            baseline = self._baseline(top, prompt, completion)
            if verifying and not accepted:  # the last attempt did not verify either
                attempt.outcome = AttemptOutcome.REJECTED
                self._emit(tenant_id, session_id, request_id, attempt, baseline)
                if best is None or attempt.confidence > (best[0].confidence or 0.0):
                    best = attempt, completion
                break
            attempt.outcome = AttemptOutcome.ACCEPTED if accepted else AttemptOutcome.FINAL
            self._emit(tenant_id, session_id, request_id, attempt, baseline)
            if not (last and live):
                for piece in _pieces(completion.answer) if live != stream_last else [completion.answer]:
                    yield piece
            routed = self._answered(request_id, tier, attempt, completion, attempts, baseline or 0.0)
            routed.precall, routed.precall_skipped = precall, len(ladder) < len(full)
            routed.verified = True if verifying and not action else None
            if routed.verified:
                assert self.checker is not None
                routed.certified = self.checker.certified(tenant_id)
            routed.candidate = completion.answer
            yield routed
            return
        if best is None:
            raise NoTierAvailable("; ".join(errors) or "no tier configured")
        if verifying:  # answers came back, none verified: say so instead of guessing
            chosen, completion = best
            baseline = self._baseline(top, prompt, completion) or 0.0
            routed = self._abstained(
                request_id, tenant_id, attempts, "unverified", chosen.confidence or 0.0, baseline
            )
            routed.precall, routed.precall_skipped = precall, len(ladder) < len(full)
            routed.candidate = completion.answer
            yield routed.text
            yield routed
            return
        # a later tier failed or was switched off: the best answer in hand, marked degraded
        chosen, completion = best
        yield ("\n\n" if streamed else "") + completion.answer
        baseline = self._baseline(top, prompt, completion) or 0.0
        tier = self.tiers[chosen.tier]
        routed = self._answered(request_id, tier, chosen, completion, attempts, baseline, degraded=True)
        routed.precall, routed.precall_skipped = precall, len(ladder) < len(full)
        yield routed

    def _abstained(
        self,
        request_id: uuid.UUID,
        tenant_id: str,
        attempts: list[Attempt],
        reason: str,
        confidence: float,
        baseline: float,
    ) -> RoutedAnswer:
        """The reply when no answer verified: the tenant's "I don't know" wording, nothing invented."""
        offline = all(a.offline for a in attempts if a.outcome not in UNANSWERED)
        routed = RoutedAnswer(
            request_id,
            self.policy.abstain_text(tenant_id),
            ABSTAINED,
            ABSTAINED,
            confidence,
            offline,
            attempts,
            baseline,
        )
        routed.abstained, routed.abstain_reason, routed.verified = True, reason, False
        return routed

    @staticmethod
    def _baseline(top: Tier, prompt: Prompt, completion: Completion | None) -> float | None:
        """What `completion`'s tokens would have cost on the ladder's top tier."""
        if completion is None:
            return None
        return top.price.cost(completion.input_tokens, completion.output_tokens, len(prompt.images))

    @staticmethod
    def _answered(
        request_id: uuid.UUID,
        tier: Tier,
        attempt: Attempt,
        completion: Completion,
        attempts: list[Attempt],
        baseline: float,
        degraded: bool = False,
    ) -> RoutedAnswer:
        return RoutedAnswer(
            request_id,
            completion.answer,
            tier.name,
            completion.model,
            attempt.confidence or 0.0,
            completion.offline,
            attempts,
            baseline,
            degraded,
        )

    def _stream_call(self, tier: Tier, prompt: Prompt, attempt: Attempt) -> AsyncIterator[str | Completion]:
        """The provider's stream; failures before the first delta are retried and counted like `_call`,
        within the tier's timeout until the first piece."""
        deadline = Deadline.after(tier.timeout_s, self._clock)
        return retried_stream(
            lambda: provider_pieces(tier, prompt, deadline), self.retry, attempt, self._sleep, deadline
        )

    def status(self) -> dict[str, Any]:
        return {
            "tiers": [
                {
                    "name": name,
                    "provider": self.tiers[name].provider.vendor,
                    "model": self.tiers[name].price.model,
                    "offline": self.tiers[name].provider.offline,
                    "threshold": self.threshold(name),
                    "breaker": str(self.breakers[name].state),
                }
                for name in self.order
            ],
            "max_attempts": self.policy.max_attempts,
            "precall_threshold": self.policy.precall_threshold if self.precall else None,
        }


EscalatingRouter = EscalationLadder  # the former name, which tests still use
