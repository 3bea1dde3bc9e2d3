"""The chat service behind `/v1/chat/completions` and the LiveKit agent's LLM, without Ray.

First the turn's intent (serve_app/answers/intent.py): a greeting or thanks gets a short reply, a
request for a person goes to the handoff with an abstention (`asked_for_person`), chatter is declined
(`out_of_scope`); none of them is retrieved for or sent to a tier. A help-center question becomes a
`Prompt` (conversation, retrieved help-center passages for the last question, at most `max_images`
deduplicated frames), goes through the escalating router and its verifier, and every attempt is recorded
in the cost ledger. The Ray layer only supplies a retriever and, for self-hosted GGUF tiers, a provider
that calls their deployment.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve_app.answers.intent import Intent, IntentClassifier
from serve_app.answers.verify import AnswerChecker, shared_checker
from serve_app.costs.ledger import CostEvent, CostLedger
from serve_app.errors import ChatRequestError
from serve_app.lru import LRU
from serve_app.metrics import Metrics
from serve_app.routing.providers import tier_provider
from serve_app.routing.providers.base import Image, LLMProvider, Message, Prompt
from serve_app.routing.providers.extractive import ExtractiveResponder
from serve_app.routing.router import AttemptOutcome, EscalationLadder, RoutedAnswer, Tier
from serve_app.screen.context import (
    grounded_query,
    grounding,
    points_at_screen,
    screen_block,
    screen_summary,
)
from serve_app.screen.state import ScreenContext
from serve_app.settings import (
    PricingSettings,
    RoutingPolicySettings,
    RoutingSettings,
    ScreenSettings,
    Settings,
)
from serve_app.tenancy import tenant_stream, validate_tenant_id

log = logging.getLogger(__name__)


TURN_VECTORS = 256  # turns whose intent embedding is kept for their retrieval
INTENT_TIER = "intent"  # the tier and model of replies to turns that are no help-center question
INTENT_MODEL = "intent-minilm"
SCREEN_TIER, SCREEN_MODEL = "screen", "pp-ocrv4-onnx"  # the reply that the screen is still being read
STILL_READING = (
    "I'm still reading your screen, so I can't tell yet what it shows. Ask me again in a moment, or "
    "tell me what the message on your screen says."
)


def _checker_key(policy: RoutingPolicySettings) -> tuple[object, ...]:
    return (
        policy.answer_model,
        tuple(sorted(policy.tenant_answer_models.items())),
        policy.uncertified_thresholds,
    )


def _checker(policy: RoutingPolicySettings) -> AnswerChecker:
    """The answer model the policy names, per tenant: the extractive tiers quote with it, and the router
    verifies with it while `verify` is on."""
    return shared_checker(
        policy.answer_model,
        policy.wrong_answer_target,
        policy.tenant_wrong_answer_targets,
        policy.tenant_answer_models,
        policy.uncertified_thresholds,
    )


# (tenant, question, k, the routed request's id) -> passages; the id joins what retrieval cost (billed
# embeddings, rerank searches) to the request's LLM attempts in the cost ledger
Retrieve = Callable[[str, str, int, uuid.UUID], Awaitable[list[str]]]
# the screen text of a request's stream (or of its images), waiting at most the given seconds for reads
ScreenSource = Callable[["ChatRequest", float], Awaitable[ScreenContext]]
OCR_MODEL = "pp-ocrv4-onnx"


@dataclass(frozen=True)
class ChatRequest:
    tenant_id: str
    messages: tuple[Message, ...]
    images: tuple[Image, ...] = ()
    session_id: uuid.UUID | None = None
    tier: str | None = None  # pin one tier (no escalation); None: the tenant's ladder
    max_tokens: int | None = None
    temperature: float = 0.2
    retrieve: bool = True
    system: str | None = None  # the caller's instructions, added to the support assistant's
    stream_id: str | None = None  # the screen share whose text the turn gets (the tenant's own)

    def __post_init__(self) -> None:
        validate_tenant_id(self.tenant_id)
        if self.stream_id is not None:
            tenant_stream(self.tenant_id, self.stream_id)
        if not self.messages or self.messages[-1].role != "user":
            raise ValueError("messages must end with a user message")
        if not self.messages[-1].content.strip():
            raise ValueError("the last user message is empty")


def chat_event(item: str | RoutedAnswer) -> dict[str, Any]:
    """One item of `ChatService.stream` as plain data (what crosses a deployment handle)."""
    return {"routing": item.to_dict()} if isinstance(item, RoutedAnswer) else {"delta": item}


def build_tiers(
    routing: RoutingSettings, pricing: PricingSettings, providers: Mapping[str, LLMProvider] | None = None
) -> list[Tier]:
    """Tiers from settings; `providers` may supply ready providers by tier name (deployment handles)."""
    prices = pricing.load()
    tiers = []
    for t in routing.tiers:
        provider = (providers or {}).get(t.name) or tier_provider(t)
        tiers.append(Tier(t.name, provider, prices[t.model], t.timeout_s))
    return tiers


@dataclass
class ChatService:
    routing: RoutingSettings
    shown: ScreenSettings  # how much screen text a turn carries, and how long it waits for it
    router: EscalationLadder
    retrieve: Retrieve | None = None
    ledger: CostLedger | None = None
    answered: int = 0
    metrics: Metrics | None = None
    screen: ScreenSource | None = None
    intents: IntentClassifier | None = None
    handoffs: Any = None  # serve_app.handoff.desk.HandoffDesk: hands turns to people (None: never)
    # turn text -> the intent step's embedding of it (`turn_vector`), the latest few turns
    turn_vectors: LRU[str, tuple[np.ndarray, str]] = field(default_factory=lambda: LRU(TURN_VECTORS))
    _checker_built_from: tuple[object, ...] = ()  # the policy's models the router's checker was built from
    _system: str = field(default="You are a concise, accurate customer-support assistant.")

    @classmethod
    def create(
        cls,
        settings: Settings,
        retrieve: Retrieve | None = None,
        ledger: CostLedger | None = None,
        providers: Mapping[str, LLMProvider] | None = None,
    ) -> ChatService:
        """From a whole Settings (the CLI and tests); `of` takes just the sections the service reads."""
        return cls.of(settings.routing, settings.screen, settings.pricing, retrieve, ledger, providers)

    @classmethod
    def of(
        cls,
        routing: RoutingSettings,
        screen: ScreenSettings,
        pricing: PricingSettings,
        retrieve: Retrieve | None = None,
        ledger: CostLedger | None = None,
        providers: Mapping[str, LLMProvider] | None = None,
    ) -> ChatService:
        tiers = build_tiers(routing, pricing, providers)
        checker = _checker(routing.policy)
        router = EscalationLadder(
            tiers,
            routing.policy,
            record=ledger.record if ledger else None,
            ladders=routing.tenant_tiers,
            checker=checker,
        )
        service = cls(routing, screen, router, retrieve, ledger)
        service._checker_built_from = _checker_key(routing.policy)
        service._share(checker)
        if routing.intents.enabled:
            service.intents = IntentClassifier.load(routing.intents.model)
        return service

    def _share(self, checker: AnswerChecker | None) -> None:
        """The extractive tiers quote with the answer model the router verifies with (one evidence read
        per question)."""
        if checker is None:
            return
        for tier in self.router.tiers.values():
            if isinstance(tier.provider, ExtractiveResponder):
                tier.provider.checker = checker

    def reconfigure(self, policy: dict[str, Any]) -> None:
        settings = RoutingPolicySettings(**policy)
        # rebuilt when the models it was built from change (compared with those, not the last policy)
        if self.router.checker is None or _checker_key(settings) != self._checker_built_from:
            self.router.checker = _checker(settings)
            self._checker_built_from = _checker_key(settings)
            self._share(self.router.checker)
        self.router.configure(settings)

    async def intent(self, request: ChatRequest) -> Intent | None:
        """The turn's intent (None: the step is off, the turn carries images, it pins a tier (a request
        for one model's answer gets that model), or it asks for no retrieval (a tool's output))."""
        if self.intents is None or request.images or request.tier is not None or not request.retrieve:
            return None
        cfg = self.routing.intents
        text = request.messages[-1].content
        intent = await asyncio.to_thread(self.intents.classify, text, cfg.min_confidence)
        if intent.vector is not None and self.intents.space is not None:
            self.turn_vectors.put(text.strip(), (intent.vector, self.intents.space))
        return intent

    def turn_vector(self, text: str) -> tuple[np.ndarray, str] | None:
        """The embedding the intent step made of this turn text lately, and its vector space (retrieval
        of the same text reuses it instead of embedding it again), or None."""
        return self.turn_vectors.get(text.strip())

    def _grounded(self, request: ChatRequest) -> bool:
        """Whether the turn retrieves help-center passages (the request, the policy and a retriever)."""
        cfg = self.routing
        return bool(request.retrieve and cfg.retrieve and cfg.context_passages and self.retrieve)

    async def _in_scope(
        self, request: ChatRequest, intent: Intent | None, request_id: uuid.UUID
    ) -> tuple[Intent | None, tuple[str, list[str]] | None]:
        """The intent, a question instead of chatter where the help center covers the turn: short product
        questions ("is there a dark mode?") read like chatter to the model. A passage retrieved for the
        turn's own words (no screen: a turn that stays chatter leaves the screen's changes to the next)
        must be at least `intents.chatter_in_scope` similar to it; a failed retrieval leaves it chatter.
        Also (query, passages) of that retrieval, for the question's prompt to reuse."""
        threshold = self.routing.intents.chatter_in_scope
        if intent is None or intent.label != "chatter" or threshold >= 1 or not self._grounded(request):
            return intent, None
        if intent.vector is None or self.intents is None:
            return intent, None
        assert self.retrieve is not None
        query = grounded_query(request.messages[-1].content, [])
        try:
            passages = await self.retrieve(
                request.tenant_id, query, self.routing.context_passages, request_id
            )
        except Exception as exc:  # the decline stands: a turn read as chatter needs no help center
            log.warning("chatter scope check: retrieval failed (%s: %s)", type(exc).__name__, exc)
            return intent, None
        if not passages:
            return intent, None
        vectors = await asyncio.to_thread(self.intents.embed_texts, list(passages))
        turn = intent.vector / (float(np.linalg.norm(intent.vector)) or 1.0)
        norms = np.linalg.norm(vectors, axis=1)
        similarity = float(((vectors @ turn) / np.where(norms > 0, norms, 1.0)).max())
        if similarity < threshold:
            return intent, None
        return Intent("question", intent.confidence, intent.vector), (query, passages)

    def _turn_reply(
        self, request: ChatRequest, intent: Intent | None, request_id: uuid.UUID | None = None
    ) -> RoutedAnswer | None:
        """The reply to a turn that is no help-center question (None: it is one); `request_id`: the
        turn's, under which anything it retrieved was billed."""
        if intent is None or intent.label == "question":
            return None
        routed = RoutedAnswer(
            request_id or uuid.uuid4(),
            self.routing.intents.reply(request.tenant_id, intent.label),
            INTENT_TIER,
            INTENT_MODEL,
            intent.confidence,
            True,
        )
        routed.intent = intent.label
        if intent.label in ("human", "chatter"):
            routed.abstained = True
            routed.abstain_reason = "asked_for_person" if intent.label == "human" else "out_of_scope"
        return routed

    @staticmethod
    def _still_reading(prompt: Prompt) -> RoutedAnswer | None:
        """A question about the screen while its reads are still running and nothing has landed in the
        turn's wait: the reply says the screen is being read (no tier guesses at what it shows)."""
        report = prompt.screen_report
        if not report or report["status"] != "reading" or not report["asked_about_screen"]:
            return None
        routed = RoutedAnswer(uuid.uuid4(), STILL_READING, SCREEN_TIER, SCREEN_MODEL, 0.0, True)
        routed.screen = report
        return routed

    async def prompt(
        self,
        request: ChatRequest,
        request_id: uuid.UUID | None = None,
        retrieved: tuple[str, list[str]] | None = None,
    ) -> tuple[Prompt, list[str]]:
        """The turn's prompt and passages; `retrieved`: (query, passages) already searched this turn,
        reused when the screen leaves the query the same."""
        cfg, shown = self.routing, self.shown
        request_id = request_id or uuid.uuid4()
        question = request.messages[-1].content
        wanted = points_at_screen(question)
        screen = await self._screen(request, request_id, wanted)
        used = grounding(screen, shown.query_chars)
        lines = used.lines
        passages: list[str] = []
        grounded = self._grounded(request)
        query = grounded_query(question, lines)  # screen-grounded retrieval: what changed leads
        if grounded and retrieved is not None and retrieved[0] == query:
            passages = list(retrieved[1])  # the intent step's scope check searched the same words
        elif grounded:
            assert self.retrieve is not None
            passages = await self.retrieve(request.tenant_id, query, cfg.context_passages, request_id)
        images = request.images[-cfg.max_images :] if cfg.max_images else ()
        appeared = [*lines, *(x for x in screen.appeared if x not in lines)]
        prompt = Prompt(
            request.messages,
            system=f"{self._system}\n\n{request.system}" if request.system else self._system,
            context=tuple(passages),
            images=tuple(images),
            max_tokens=min(request.max_tokens or cfg.max_tokens, cfg.max_tokens),
            temperature=request.temperature,
            screen=screen_block(appeared, screen.current, shown.prompt_chars),
            screen_lines=tuple(lines),
            grounded=grounded,
            tenant_id=request.tenant_id,
            screen_report=screen_summary(screen, used, wanted) if self._screen_on(request) else None,
        )
        return prompt, passages

    def _screen_on(self, request: ChatRequest) -> bool:
        return bool(self.screen is not None and self.shown.enabled and (request.stream_id or request.images))

    async def _screen(
        self, request: ChatRequest, request_id: uuid.UUID, wanted: bool = False
    ) -> ScreenContext:
        """The turn's screen text; empty when there is none or it could not be had in time (a turn never
        fails for its screen). A question about the screen (`wanted`) waits longer for reads still
        running (`vague_wait_s`). Each read that landed since the last turn is a `vision` cost event."""
        cfg = self.shown
        if not self._screen_on(request):
            return ScreenContext()
        assert self.screen is not None
        wait_s = max(cfg.turn_wait_s, cfg.vague_wait_s) if wanted else cfg.turn_wait_s
        try:
            context = await asyncio.wait_for(self.screen(request, wait_s), wait_s + 0.5)
        except Exception:
            log.warning("screen text for tenant %s unavailable", request.tenant_id, exc_info=True)
            return ScreenContext()
        if self.ledger is not None:
            for ms, chars, failed, _whole in context.usage:
                self.ledger.record(
                    CostEvent(
                        tenant_id=request.tenant_id,
                        service="vision",
                        provider="self-hosted",
                        model=OCR_MODEL,
                        images=1,
                        characters=chars,
                        latency_ms=ms,
                        session_id=request.session_id,
                        request_id=request_id,
                        outcome="error" if failed else "read",
                    )
                )
        return context

    def _ladder_for(self, request: ChatRequest) -> list[str] | None:
        """The one tier the request pins (no escalation), or None: the tenant's ladder."""
        if request.tier is None:
            return None
        if request.tier not in self.router.tiers:
            raise ChatRequestError(f"unknown tier {request.tier!r}; tiers: {', '.join(self.router.order)}")
        return [request.tier]

    async def answer(self, request: ChatRequest) -> tuple[RoutedAnswer, list[str]]:
        ladder, request_id = self._ladder_for(request), uuid.uuid4()
        request = await self.handoffs.before_turn(request) if self.handoffs else request
        started = time.perf_counter()
        intent, retrieved = await self._in_scope(request, await self.intent(request), request_id)
        turn = self._turn_reply(request, intent, request_id)
        if turn is not None:
            turn = await self.handoffs.after_turn(request, turn) if self.handoffs else turn
            self._answered(request.tenant_id, turn, started)
            return turn, []
        prompt, passages = await self.prompt(request, request_id, retrieved)
        reading = self._still_reading(prompt)
        if reading is not None:
            self._answered(request.tenant_id, reading, started)
            return reading, passages
        routed = await self.router.answer(
            prompt, request.tenant_id, request.session_id, request_id, ladder=ladder
        )
        routed.screen = prompt.screen_report
        routed.intent = intent.label if intent else None
        routed = await self.handoffs.after_turn(request, routed, prompt) if self.handoffs else routed
        self._answered(request.tenant_id, routed, started)
        return routed, passages

    async def reply(self, request: ChatRequest) -> dict[str, Any]:
        """`answer()` as plain data (what crosses a deployment handle)."""
        routed, passages = await self.answer(request)
        return routed.reply(len(passages))

    async def events(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """`stream()` as plain data: {"delta": text} events, then {"routing": ...}."""
        async for item in self.stream(request):
            yield chat_event(item)

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | RoutedAnswer]:
        ladder, request_id = self._ladder_for(request), uuid.uuid4()
        request = await self.handoffs.before_turn(request) if self.handoffs else request
        started = time.perf_counter()
        intent, retrieved = await self._in_scope(request, await self.intent(request), request_id)
        turn = self._turn_reply(request, intent, request_id)
        if turn is not None:  # nothing streamed yet: the handoff's notice can replace the reply
            turn = await self.handoffs.after_turn(request, turn) if self.handoffs else turn
            self._answered(request.tenant_id, turn, started)
            yield turn.text
            yield turn
            return
        prompt, _ = await self.prompt(request, request_id, retrieved)
        reading = self._still_reading(prompt)
        if reading is not None:
            self._answered(request.tenant_id, reading, started)
            yield reading.text
            yield reading
            return
        items = self.router.stream(prompt, request.tenant_id, request.session_id, request_id, ladder=ladder)
        async for item in items:
            if isinstance(item, RoutedAnswer):
                item.screen = prompt.screen_report
                item.intent = intent.label if intent else None
                self._answered(request.tenant_id, item, started)
                if self.handoffs:  # what the customer is told of a handoff follows the streamed answer
                    told = item.text
                    item = await self.handoffs.after_turn(request, item, prompt, streamed=True)
                    if item.text != told:
                        yield item.text[len(told) :]
            yield item

    def _answered(self, tenant: str, routed: RoutedAnswer, started: float) -> None:
        self.answered += 1
        m = self.metrics
        if m is None:
            return
        if routed.intent is not None:
            m.inc("supportgraph_chat_intents", tenant=tenant, intent=routed.intent)
        if routed.abstained:
            m.inc("supportgraph_chat_abstained", tenant=tenant, reason=routed.abstain_reason or "")
        if routed.tier in (INTENT_TIER, SCREEN_TIER):
            return
        answer = {"tenant": tenant, "tier": routed.tier, "model": routed.model}
        m.inc("supportgraph_llm_requests", **answer, offline=str(routed.offline).lower())
        m.observe("supportgraph_llm_latency_ms", (time.perf_counter() - started) * 1e3, **answer)
        if routed.degraded:
            m.inc("supportgraph_llm_degraded", tenant=tenant, tier=routed.tier)
        for a in routed.attempts:
            m.inc("supportgraph_llm_attempts", tenant=tenant, tier=a.tier, model=a.model, outcome=a.outcome)
            if a.outcome != AttemptOutcome.ACCEPTED and a is not routed.attempts[-1]:
                m.inc("supportgraph_llm_escalations", tenant=tenant, tier=a.tier)
            if a.cost_usd:
                m.inc("supportgraph_llm_cost_usd", a.cost_usd, tenant=tenant, tier=a.tier, model=a.model)
            m.inc("supportgraph_llm_tokens", a.input_tokens, tenant=tenant, model=a.model, direction="input")
            m.inc(
                "supportgraph_llm_tokens", a.output_tokens, tenant=tenant, model=a.model, direction="output"
            )

    async def close(self) -> None:
        """Flush the ledger and close provider clients (a clean shutdown loses no cost event)."""
        if self.ledger is not None:
            await self.ledger.close()
        for tier in self.router.tiers.values():
            try:
                await tier.provider.aclose()
            except Exception:  # closing is best effort; the ledger is what must not be lost
                log.warning("closing %s failed", tier.name, exc_info=True)
