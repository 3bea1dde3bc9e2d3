"""The escalation policy, without Ray or HTTP: acceptance by confidence, escalation on low confidence and
on failures, retries with backoff, circuit breakers, ladders per tenant, live policy changes, streaming,
and one cost event per attempt."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from serve_app.costs.ledger import CostEvent
from serve_app.costs.pricing import default_pricing
from serve_app.routing.providers.base import Completion, Image, LLMProvider, Message, Prompt, ProviderError
from serve_app.routing.router import EscalatingRouter, NoTierAvailable, RoutedAnswer, Tier
from serve_app.settings import RoutingPolicySettings

PRICES = default_pricing()
PROMPT = Prompt(
    (Message("user", "How do I export my notes?"),),
    context=("Choose Settings > Data > Export to export your notes as Markdown or PDF.",),
    images=(Image(b"\x89PNG-frame-1"), Image(b"\x89PNG-frame-2")),
)
SURE = "Choose Settings > Data > Export to export your notes [1].\nConfidence: 0.95"
UNSURE = "Maybe try reinstalling, I am not sure.\nConfidence: 0.2"


class Scripted(LLMProvider):
    """A tier whose replies are scripted: texts to answer with or ProviderErrors to raise, in order."""

    provider = "scripted"

    def __init__(self, model: str, *replies: str | ProviderError):
        super().__init__(model)
        self.replies = list(replies)
        self.prompts: list[Prompt] = []

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        self.prompts.append(prompt)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, ProviderError):
            raise reply
        return Completion(reply, 1000, 100, self.model)

    async def stream(self, prompt: Prompt, timeout_s: float) -> AsyncIterator[str | Completion]:
        done = await self.complete(prompt, timeout_s)
        for word in done.text.split(" "):
            yield word + " "
        yield done


def failure(kind: str = "server", status: int | None = 503) -> ProviderError:
    return ProviderError("scripted", kind, "scripted failure", status)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def ladder(*providers: Scripted, events: list[CostEvent] | None = None, clock: Clock | None = None, **policy):
    models = ["gemini-2.5-flash-lite", "gemini-2.5-flash", "claude-sonnet-4-5"]
    tiers = [Tier(f"t{n}", p, PRICES[models[n]], 5.0) for n, p in enumerate(providers)]
    clock = clock or Clock()
    return EscalatingRouter(
        tiers,
        RoutingPolicySettings(**{"threshold": 0.7, "backoff_s": 0.1, **policy}),
        record=events.append if events is not None else None,
        sleep=clock.sleep,
        clock=clock,
    )


def answer(router: EscalatingRouter, tenant: str = "acme", prompt: Prompt = PROMPT) -> RoutedAnswer:
    return asyncio.run(router.answer(prompt, tenant))


def test_a_confident_cheap_answer_is_accepted_on_the_first_attempt() -> None:
    events: list[CostEvent] = []
    cheap, strong = Scripted("lite", SURE), Scripted("sonnet", SURE)
    result = answer(ladder(cheap, strong, events=events))
    assert (result.tier, len(result.attempts), strong.prompts) == ("t0", 1, [])
    assert result.text == "Choose Settings > Data > Export to export your notes [1]."
    assert result.attempts[0].outcome == "accepted" and result.confidence >= 0.7
    assert result.cost_usd == pytest.approx(PRICES["gemini-2.5-flash-lite"].cost(1000, 100, 2))
    assert result.baseline_usd == pytest.approx(PRICES["gemini-2.5-flash"].cost(1000, 100, 2))
    assert [(e.attempt, e.outcome, e.images, e.request_id) for e in events] == [
        (1, "accepted", 2, result.request_id)
    ]


def test_low_confidence_escalates_with_the_same_frames_and_records_every_attempt() -> None:
    events: list[CostEvent] = []
    tiers = Scripted("lite", UNSURE), Scripted("flash", UNSURE), Scripted("sonnet", SURE)
    result = answer(ladder(*tiers, events=events))
    assert result.tier == "t2" and [a.outcome for a in result.attempts] == [
        "escalated",
        "escalated",
        "accepted",
    ]
    sent = [t.prompts[0] for t in tiers]
    assert all(p is PROMPT for p in sent) and {p.images for p in sent} == {PROMPT.images}
    assert [e.model for e in events] == ["gemini-2.5-flash-lite", "gemini-2.5-flash", "claude-sonnet-4-5"]
    assert len({e.request_id for e in events}) == 1
    assert [e.baseline_usd is not None for e in events] == [False, False, True]  # on the last attempt only
    assert result.cost_usd == pytest.approx(sum(e.cost_usd for e in events))
    assert all(a.confidence is not None and a.confidence < 0.7 for a in result.attempts[:2])


def test_the_last_tier_answers_even_when_unsure() -> None:
    result = answer(ladder(Scripted("lite", UNSURE), Scripted("flash", UNSURE)))
    assert result.tier == "t1" and result.attempts[-1].outcome == "final" and result.confidence < 0.7


def test_retryable_failures_back_off_then_succeed() -> None:
    clock = Clock()
    flaky = Scripted("lite", failure("rate_limit", 429), failure("server", 503), SURE)
    result = answer(ladder(flaky, Scripted("sonnet", SURE), clock=clock, retries=2))
    assert result.tier == "t0" and result.attempts[0].retries == 2
    assert len(clock.slept) == 2 and 0.05 <= clock.slept[0] <= 0.1 and 0.1 <= clock.slept[1] <= 0.2


def test_retry_after_is_respected_up_to_the_cap() -> None:
    clock = Clock()
    limited = ProviderError("scripted", "rate_limit", "slow down", 429, retry_after_s=3.0)
    answer(ladder(Scripted("lite", limited, SURE), clock=clock, retries=1, backoff_max_s=2.0))
    assert clock.slept == [2.0]


def test_exhausted_retries_and_client_errors_escalate() -> None:
    events: list[CostEvent] = []
    down = Scripted("lite", failure("server", 500))
    bad_request = Scripted("flash", failure("client", 400))
    strong = Scripted("sonnet", SURE)
    result = answer(ladder(down, bad_request, strong, events=events, retries=2))
    assert len(down.prompts) == 3 and len(bad_request.prompts) == 1  # 4xx is not retried
    assert [a.outcome for a in result.attempts] == ["failed", "failed", "accepted"]
    assert "500" in result.attempts[0].error and [e.cost_usd for e in events[:2]] == [0.0, 0.0]
    assert [a.retries for a in result.attempts] == [2, 0, 0]  # a failed attempt keeps its retries
    assert [e.outcome for e in events] == ["failed", "failed", "accepted"]


def test_every_tier_failing_is_no_tier_available() -> None:
    events: list[CostEvent] = []
    with pytest.raises(NoTierAvailable, match="503"):
        answer(ladder(Scripted("a", failure()), Scripted("b", failure()), events=events, retries=0))
    assert [e.outcome for e in events] == ["failed", "failed"]


def test_circuit_breaker_skips_a_failing_tier_then_tries_it_again() -> None:
    clock = Clock()
    events: list[CostEvent] = []
    down, strong = Scripted("lite", failure()), Scripted("sonnet", SURE)
    router = ladder(
        down, strong, clock=clock, events=events, retries=0, breaker_failures=3, breaker_reset_s=30
    )
    for _ in range(3):
        answer(router)
    assert len(down.prompts) == 3 and router.breakers["t0"].state == "open"
    skipped = answer(router)
    assert len(down.prompts) == 3 and skipped.attempts[0].outcome == "skipped"
    assert events[-2].outcome == "skipped" and events[-2].cost_usd == 0
    clock.now += 31  # half-open: one trial call; it succeeds and closes the breaker
    down.replies = [SURE]
    assert answer(router).tier == "t0" and router.breakers["t0"].state == "closed"


def test_a_failed_trial_reopens_the_breaker() -> None:
    clock = Clock()
    down = Scripted("lite", failure())
    router = ladder(down, Scripted("sonnet", SURE), clock=clock, retries=0, breaker_failures=1)
    answer(router)
    clock.now += 31
    answer(router)
    assert len(down.prompts) == 2 and router.breakers["t0"].state == "open"


def test_tenant_ladders_and_max_attempts() -> None:
    lite, flash, sonnet = Scripted("lite", UNSURE), Scripted("flash", UNSURE), Scripted("sonnet", SURE)
    router = ladder(lite, flash, sonnet, max_attempts=2)
    router.ladders = {"premium": ["t2"]}
    assert answer(router, "premium").tier == "t2" and lite.prompts == []
    capped = answer(router, "acme")
    assert capped.tier == "t1" and len(capped.attempts) == 2 and sonnet.prompts == [PROMPT]
    assert capped.baseline_usd == pytest.approx(PRICES["gemini-2.5-flash"].cost(1000, 100, 2))


def test_policy_changes_apply_to_the_next_request() -> None:
    lite, sonnet = Scripted("lite", UNSURE), Scripted("sonnet", SURE)
    router = ladder(lite, sonnet)
    assert answer(router).tier == "t1"
    router.configure(RoutingPolicySettings(threshold=0.1))
    assert answer(router).tier == "t0"
    router.configure(RoutingPolicySettings(threshold=0.1, tier_thresholds={"t0": 0.99}))
    assert answer(router).tier == "t1"


def test_pinned_tier_answers_alone() -> None:
    lite, sonnet = Scripted("lite", UNSURE), Scripted("sonnet", SURE)
    result = asyncio.run(ladder(lite, sonnet).answer(PROMPT, "acme", ladder=["t1"]))
    assert result.tier == "t1" and lite.prompts == [] and len(result.attempts) == 1


def test_a_streamed_request_takes_the_ladder_override_too() -> None:
    lite, flash = Scripted("lite", SURE), Scripted("flash", UNSURE)
    router = ladder(lite, flash, Scripted("sonnet", SURE))

    async def items() -> list:
        return [item async for item in router.stream(PROMPT, "acme", ladder=["t1"])]

    result = asyncio.run(items())[-1]
    assert result.tier == "t1" and lite.prompts == [] and result.attempts[0].outcome == "final"
    assert result.baseline_usd == pytest.approx(PRICES["gemini-2.5-flash"].cost(1000, 100, 2))


def test_streaming_scores_escalating_attempts_whole_and_streams_the_last() -> None:
    events: list[CostEvent] = []
    router = ladder(Scripted("lite", UNSURE), Scripted("sonnet", SURE), events=events)

    async def consume() -> tuple[list[str], RoutedAnswer]:
        deltas, final = [], None
        async for item in router.stream(PROMPT, "acme"):
            if isinstance(item, RoutedAnswer):
                final = item
            else:
                deltas.append(item)
        return deltas, final

    deltas, final = asyncio.run(consume())
    text = "".join(deltas)
    assert "Maybe" not in text and "Confidence" not in text  # the escalated answer never reaches the user
    assert text.strip() == final.text and final.tier == "t1" and len(deltas) > 1
    assert [e.outcome for e in events] == ["escalated", "accepted"]


def test_a_streamed_attempt_counts_the_retries_before_its_first_token() -> None:
    clock = Clock()
    router = ladder(Scripted("sonnet", failure("rate_limit", 429), SURE), clock=clock, retries=2)

    async def items() -> list:
        return [item async for item in router.stream(PROMPT, "acme")]

    (result,) = [item for item in asyncio.run(items()) if isinstance(item, RoutedAnswer)]
    assert result.attempts[0].retries == 1 and result.attempts[0].outcome == "accepted"
    assert len(clock.slept) == 1


def test_scorer_weights_must_be_usable() -> None:
    with pytest.raises(ValueError, match="positive weight"):
        RoutingPolicySettings(scorer_weights={"grounding": 0})
    with pytest.raises(ValueError, match="learned_scorer"):
        RoutingPolicySettings(scorer_weights={"learned": 1})


def test_ledger_events_carry_session_and_request() -> None:
    events: list[CostEvent] = []
    router = ladder(Scripted("lite", SURE), events=events)
    session, request = uuid.uuid4(), uuid.uuid4()
    asyncio.run(router.answer(PROMPT, "acme", session, request))
    assert (events[0].session_id, events[0].request_id, events[0].tenant_id) == (session, request, "acme")


def test_chat_service_builds_the_prompt_and_takes_live_policy() -> None:
    from serve_app.routing.service import ChatRequest, ChatService
    from serve_app.settings import load_settings

    settings = load_settings(
        routing={
            "tiers": [{"name": "extractive", "backend": "extractive", "model": "extractive-grounded"}],
            "max_images": 2,
        }
    )
    asked: list[tuple[str, str, int]] = []
    ids: list[uuid.UUID] = []

    async def retrieve(tenant: str, question: str, k: int, request_id: uuid.UUID) -> list[str]:
        asked.append((tenant, question, k))
        ids.append(request_id)
        return ["## Export\nChoose Settings > Data > Export to export your notes as Markdown or PDF."]

    service = ChatService.create(settings, retrieve)
    frames = tuple(Image(bytes([n])) for n in range(5))
    request = ChatRequest(
        "acme", (Message("user", "How do I export notes?"),), frames, system="Answer in one sentence."
    )
    prompt, passages = asyncio.run(service.prompt(request))
    assert asked == [("acme", "How do I export notes?", 4)] and len(passages) == 1
    assert prompt.images == frames[-2:] and "Answer in one sentence." in prompt.instructions()
    routed, _ = asyncio.run(service.answer(request))
    assert routed.tier == "extractive" and "[1]" in routed.text and service.answered == 1
    assert ids[-1] == routed.request_id  # retrieval's costs join the request's attempts
    service.reconfigure({"threshold": 1.0, "max_attempts": 1})
    assert service.router.policy.threshold == 1.0
    with pytest.raises(ValueError, match="unknown tier"):
        asyncio.run(service.answer(ChatRequest("acme", (Message("user", "hi"),), tier="sonnet")))
    with pytest.raises(ValueError, match="invalid tenant"):
        ChatRequest("Not A Tenant", (Message("user", "hi"),))


# A failed escalation degrades instead of failing the request: the best answer in hand, marked degraded.
HALF_SURE = "Open Settings > Data and look for Export [1].\nConfidence: 0.5"


class Hanging(Scripted):
    """A backend that ignores its timeout (the router enforces it)."""

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        self.prompts.append(prompt)
        await asyncio.sleep(30)
        raise AssertionError("not reached")


class Buggy(Scripted):
    """A backend with a bug: it raises something that is no provider failure."""

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        self.prompts.append(prompt)
        raise KeyError("choices")


class CutOff(Scripted):
    """Streams a few words, then the connection drops."""

    async def stream(self, prompt: Prompt, timeout_s: float) -> AsyncIterator[str | Completion]:
        self.prompts.append(prompt)
        yield "Go to "
        yield "Settings and "
        raise failure("connection", None)


def route(router: EscalatingRouter, streaming: bool) -> tuple[str, RoutedAnswer]:
    """The text a client receives, and the final RoutedAnswer."""

    async def run() -> tuple[str, RoutedAnswer]:
        if not streaming:
            routed = await router.answer(PROMPT, "acme")
            return routed.text, routed
        items = [item async for item in router.stream(PROMPT, "acme")]
        return "".join(i for i in items if isinstance(i, str)), items[-1]

    return asyncio.run(run())


def degraded_ladder(top: Scripted, events: list[CostEvent], **policy) -> EscalatingRouter:
    router = ladder(Scripted("lite", UNSURE), Scripted("flash", HALF_SURE), top, events=events, **policy)
    router.tiers["t2"].timeout_s = 0.2
    return router


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(
    "top",
    [
        Scripted("sonnet", failure("server", 500)),
        Scripted("sonnet", failure("timeout", 504)),
        Scripted("sonnet", failure("connection", None)),  # what a killed replica's handle call becomes
        Hanging("sonnet", SURE),
        Buggy("sonnet", SURE),
    ],
    ids=["error", "timeout", "crash", "hang", "bug"],
)
def test_a_failed_escalation_returns_the_most_confident_answer_degraded(
    top: Scripted, streaming: bool
) -> None:
    events: list[CostEvent] = []
    text, routed = route(degraded_ladder(top, events, retries=1), streaming)
    assert routed.degraded and routed.tier == "t1" and routed.confidence == pytest.approx(0.5, abs=0.2)
    assert text.strip() == routed.text == "Open Settings > Data and look for Export [1]."
    assert [a.outcome for a in routed.attempts] == ["escalated", "escalated", "failed"]
    retried = not isinstance(top, Buggy)  # a bug is not retried
    assert routed.attempts[2].error and routed.attempts[2].retries == int(retried)
    body = routed.to_dict()
    assert body["degraded"] is True and [f["tier"] for f in body["failures"]] == ["t2"]
    assert [e.outcome for e in events] == ["escalated", "escalated", "failed"]  # every attempt recorded
    assert [e.baseline_usd is not None for e in events] == [False, False, True]  # once per request
    assert routed.baseline_usd == pytest.approx(PRICES["claude-sonnet-4-5"].cost(1000, 100, 2))
    assert routed.cost_usd == pytest.approx(sum(e.cost_usd for e in events))


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_a_tier_that_hangs_is_not_retried_past_its_timeout(streaming: bool) -> None:
    """The tier's timeout bounds the attempt, retries included: a backend that hung for all of it is
    not called again (retries=2 would otherwise make a 0.3 s tier take 0.9 s and more)."""
    hanging = Hanging("sonnet", SURE)
    tiers = [
        Tier("t0", Scripted("lite", UNSURE), PRICES["gemini-2.5-flash-lite"], 5.0),
        Tier("t1", hanging, PRICES["claude-sonnet-4-5"], 0.3),
    ]
    router = EscalatingRouter(tiers, RoutingPolicySettings(threshold=0.7, retries=2, backoff_s=0.01))
    started = time.monotonic()
    _, routed = route(router, streaming)
    took = time.monotonic() - started
    assert routed.degraded and routed.attempts[1].outcome == "failed" and routed.attempts[1].retries == 0
    assert len(hanging.prompts) == 1 and took < 0.3 * 2


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_an_open_breaker_above_an_unsure_answer_degrades(streaming: bool) -> None:
    events: list[CostEvent] = []
    router = degraded_ladder(
        Scripted("sonnet", failure("server", 500)), events, retries=0, breaker_failures=1
    )
    route(router, streaming)
    assert router.breakers["t2"].state == "open"
    events.clear()
    text, routed = route(router, streaming)
    assert routed.degraded and routed.tier == "t1" and text.strip() == routed.text
    assert [(a.outcome, a.error) for a in routed.attempts][2] == ("skipped", "circuit open")
    assert [e.outcome for e in events] == ["escalated", "escalated", "skipped"]


def test_a_stream_cut_off_mid_answer_ends_with_the_best_earlier_answer() -> None:
    events: list[CostEvent] = []
    text, routed = route(degraded_ladder(CutOff("sonnet", SURE), events, retries=2), streaming=True)
    assert routed.degraded and routed.tier == "t1"
    assert text == "Go to Settings and \n\n" + routed.text  # what was sent cannot be taken back
    assert routed.attempts[2].retries == 0  # text had been sent: no retry


def test_accepted_and_final_answers_are_not_degraded() -> None:
    assert not answer(ladder(Scripted("lite", SURE), Scripted("sonnet", SURE))).degraded
    final = answer(ladder(Scripted("lite", UNSURE), Scripted("sonnet", UNSURE)))
    assert final.attempts[-1].outcome == "final" and not final.degraded
    rescued = answer(ladder(Scripted("lite", failure()), Scripted("sonnet", SURE), retries=0))
    assert not rescued.degraded and rescued.to_dict()["failures"][0]["tier"] == "t0"


def test_degraded_answers_are_counted_in_metrics() -> None:
    from prometheus_client import CollectorRegistry

    from serve_app.metrics import Metrics
    from serve_app.routing.service import ChatRequest, ChatService
    from serve_app.settings import load_settings

    settings = load_settings(
        routing={
            "tiers": [
                {"name": "extractive", "backend": "extractive", "model": "extractive-grounded"},
                {"name": "sonnet", "backend": "extractive", "model": "claude-sonnet-4-5"},
            ],
            "policy": {"verify": False},  # degraded answers: the unverified mode's fallback
        }
    )
    service = ChatService.create(settings)
    service.router.tiers["sonnet"].provider = Scripted("sonnet", failure())
    registry = CollectorRegistry()
    service.metrics = Metrics.prometheus(registry)
    question = ChatRequest("acme", (Message("user", "how do I export my notes"),))
    routed, _ = asyncio.run(service.answer(question))
    assert routed.degraded and routed.tier == "extractive"
    labels = {"tenant": "acme", "tier": "extractive"}
    assert registry.get_sample_value("supportgraph_llm_degraded_total", labels) == 1.0
