"""Router deployments: the escalating router (with the cost ledger) and one deployment per self-hosted
GGUF tier, so the model's memory and CPU are placed and scaled apart from the routing logic.

Thresholds, scorer weights, retries and the breaker arrive as the Router's `user_config` and apply to the
next request without a redeploy. A chat is answered only once its cost events are written
(`CostLedger.durable`), so a Router replica that dies loses none of an answered request's events; a clean
replica shutdown flushes the rest (`__del__`).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ray.serve.handle import DeploymentHandle

from serve_app.costs.ledger import CostLedger, cost_report
from serve_app.db.database import Database
from serve_app.errors import Overloaded, ReplicaLost
from serve_app.experiments.backend import DbExperiments
from serve_app.experiments.config import Assignment, Experiments
from serve_app.experiments.store import ImplicitOutcome, record_request
from serve_app.handles import serve_failures
from serve_app.handoff.desk import HANDOFF_API, HandoffDesk
from serve_app.knowledge.query import MAX_QUERY_CHARS
from serve_app.knowledge.retrieval import prompt_text
from serve_app.metrics import Metrics
from serve_app.priority import lower_process_priority, process_niceness, thread_niceness
from serve_app.routing.providers import tier_provider
from serve_app.routing.providers.base import Completion, LLMProvider, Prompt
from serve_app.routing.providers.errors import call_errors
from serve_app.routing.router import RoutedAnswer
from serve_app.routing.service import ChatRequest, ChatService, chat_event
from serve_app.screen.state import ScreenContext
from serve_app.settings import (
    DatabaseSettings,
    HandoffSettings,
    PricingSettings,
    RoutingSettings,
    ScreenSettings,
    TierSettings,
)

log = logging.getLogger("ray.serve")
# the session of the request a replica task is answering: experiments split by session need it in _retrieve
_SESSION: contextvars.ContextVar[uuid.UUID | None] = contextvars.ContextVar("session", default=None)
# the arms a request was served under, by request id: set where retrieval assigns them, read where the
# request is recorded, so a live reconfiguration or a start/stop passing between the two cannot make the
# recorded arm differ from the served one (one dict per request's task, shared by the tasks it spawns)
_ASSIGNED: contextvars.ContextVar[dict[uuid.UUID, list[Assignment]] | None] = contextvars.ContextVar(
    "assigned", default=None
)


def replica_cpus() -> int:
    """The CPUs Ray assigned this replica (`num_cpus`), rounded up, at least 1."""
    import ray

    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
    return max(1, math.ceil(assigned - 1e-9))


class SelfHostedLLM:
    """One GGUF model (default: the bundled SmolLM2-135M) behind a handle: background work, so its
    process runs `niceness` steps below the interactive replicas and llama.cpp gets the replica's CPUs
    (`tier.threads`, else `num_cpus` rounded up) rather than every core of the machine."""

    def __init__(self, tier: TierSettings, niceness: int = 0):
        self.niceness = lower_process_priority(niceness) if niceness else thread_niceness()
        self.provider = tier_provider(tier, threads=tier.threads or replica_cpus())

    def loaded(self) -> dict[str, Any]:
        """How the model was loaded: `repack_weights` is llama.cpp's use_extra_bufts, read back;
        `threads` its CPU threads; `niceness` the lowest nice value among the process's threads."""
        return {
            "model": self.provider.model,
            "repack_weights": getattr(self.provider, "repacks_weights", None),
            "threads": getattr(self.provider, "threads", None),
            "niceness": process_niceness()["min"],
        }

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        return await self.provider.complete(prompt, timeout_s)

    async def stream(self, prompt: Prompt, timeout_s: float) -> AsyncIterator[str | Completion]:
        async for piece in self.provider.stream(prompt, timeout_s):
            yield piece


def _serve_status(exc: BaseException) -> tuple[int | None, bool]:
    """Serve's failures (as `serve_failures` types them) in HTTP terms for `call_errors`: a full queue
    is a 429, a lost replica a 503."""
    if isinstance(exc, ReplicaLost):
        return 503, True
    if isinstance(exc, Overloaded):
        return 429, True
    return None, False


class HandleProvider(LLMProvider):
    """A tier whose model runs in another deployment; Serve failures become typed provider errors."""

    vendor = "self-hosted"
    offline = True

    def __init__(self, model: str, handle: DeploymentHandle):
        super().__init__(model)
        self.handle = handle

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        async with call_errors(self.vendor, timeout_s, _serve_status):
            with serve_failures("self-hosted model"):
                return await self.handle.complete.remote(prompt, timeout_s)

    async def stream(self, prompt: Prompt, timeout_s: float) -> AsyncIterator[str | Completion]:
        async with call_errors(self.vendor, timeout_s, _serve_status):
            with serve_failures("self-hosted model"):
                async for piece in self.handle.options(stream=True).stream.remote(prompt, timeout_s):
                    yield piece


class Router:
    def __init__(
        self,
        routing: RoutingSettings,
        screen: ScreenSettings,
        pricing: PricingSettings,
        db: DatabaseSettings,
        state_dir: Path,
        knowledge: DeploymentHandle | None = None,
        self_hosted: dict[str, DeploymentHandle] | None = None,
        screen_reader: DeploymentHandle | None = None,
        experiments: Experiments | None = None,
        handoff: HandoffSettings | None = None,
    ):
        """`experiments`: the A/B experiments (`Settings.experiment_set()`), replaced live by the
        `experiments` key of the user_config. `handoff`: when and how turns go to people."""
        self.routing = routing
        self.screen_reader = screen_reader
        self.knowledge = knowledge
        self.db = Database(db, state_dir)
        self.ledger = CostLedger(self.db)
        providers = {
            t.name: HandleProvider(t.model, self_hosted[t.name])
            for t in routing.tiers
            if self_hosted and t.name in self_hosted
        }
        self.service = ChatService.of(routing, screen, pricing, self._retrieve, self.ledger, providers)
        self.service.metrics = Metrics.ray()
        self.service.handoffs = HandoffDesk(handoff or HandoffSettings(), self.db, self.service.metrics)
        if screen_reader is not None:
            self.service.screen = self._screen
        self.experiments = experiments or Experiments()
        self.experiment_api = DbExperiments(self.db, self.experiments)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = dict(user_config)
        experiments = config.pop("experiments", None)  # serve_app.experiments; the rest is the policy
        if experiments is not None:
            self.experiments.configure(experiments)
        self.service.reconfigure(config)

    async def _ready(self) -> None:
        await self.db.ready()
        self.ledger.start()

    async def _retrieve(self, tenant_id: str, question: str, k: int, request_id: uuid.UUID) -> list[str]:
        """Passages for the question; a failed retrieval is logged and the turn goes on without them."""
        if self.knowledge is None:
            return []
        assigned = self._assign(tenant_id, _SESSION.get(), request_id)
        query = question[:MAX_QUERY_CHARS]
        # the turn's intent step embedded this very text: the search takes that vector (in its space)
        turn = self.service.turn_vector(question) if query.strip() == question.strip() else None
        try:
            found = await self.knowledge.search.remote(
                tenant_id=tenant_id,
                query=query,
                mode="hybrid_rerank",
                top_k=k,
                request_id=str(request_id),  # the search's billed calls join the request's attempts
                arm=self.experiments.reranker_arm(assigned),
                query_vector=turn[0].tolist() if turn else None,
                vector_space=turn[1] if turn else None,
            )
        except Exception:
            log.warning(
                "retrieval for tenant %s failed; answering without passages", tenant_id, exc_info=True
            )
            return []
        return [prompt_text(p["heading"], p["title"], p["content"]) for p in found["passages"]]

    async def _screen(self, request: ChatRequest, wait_s: float) -> ScreenContext:
        """The screen text of the request's stream, or of its images (read once each, under a key of
        the session, or of the first image when there is no session)."""
        assert self.screen_reader is not None
        key = request.stream_id
        if key is None:
            anchor = str(request.session_id) if request.session_id else hashlib.sha256(request.images[0].data)
            anchor = anchor if isinstance(anchor, str) else anchor.hexdigest()[:32]
            key = f"chat:{request.tenant_id}:{anchor}"
            await self.screen_reader.read_images.remote(
                stream_id=key, images=[i.data for i in request.images[-self.routing.max_images :]]
            )
        return ScreenContext.from_dict(await self.screen_reader.turn.remote(stream_id=key, wait_s=wait_s))

    def _assign(
        self, tenant_id: str, session_id: uuid.UUID | None, request_id: uuid.UUID
    ) -> list[Assignment]:
        """The request's arms: assigned once (at its retrieval, or when it is recorded), then kept."""
        kept = _ASSIGNED.get()
        if kept is not None and request_id in kept:
            return kept[request_id]
        assigned = self.experiments.assign(tenant_id, session_id, request_id)
        if kept is not None:
            kept[request_id] = assigned
        return assigned

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        await self._ready()
        _SESSION.set(request.session_id)  # this request's task (and context) only
        _ASSIGNED.set({})
        started = time.perf_counter()
        routed, passages = await self.service.answer(request)
        await self._durable(routed)
        await self._record(request, routed, started)
        return routed.reply(len(passages))

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """{"delta": text} events, then {"routing": ...}."""
        await self._ready()
        _SESSION.set(request.session_id)
        _ASSIGNED.set({})
        started = time.perf_counter()
        async for item in self.service.stream(request):
            if isinstance(item, RoutedAnswer):  # recorded before the caller learns the request id it may rate
                await self._durable(item)
                await self._record(request, item, started)
            yield chat_event(item)

    async def _durable(self, routed: RoutedAnswer) -> None:
        """Answered only once the request's cost events are written (at most the ledger's wait); the
        reply says whether they were (`costs_written`)."""
        routed.costs_written = await self.ledger.durable(routed.request_id)

    async def _record(self, request: ChatRequest, routed: RoutedAnswer, started: float) -> None:
        """The request's experiment arms and implicit outcome; a failed write is logged, not raised."""
        request_id = routed.request_id
        try:
            await record_request(
                self.db,
                request.tenant_id,
                request_id,
                request.session_id,
                self._assign(request.tenant_id, request.session_id, request_id),
                ImplicitOutcome.of_routed(routed, (time.perf_counter() - started) * 1e3),
            )
        except Exception:
            log.warning("recording request %s for experiments failed", request_id, exc_info=True)

    async def feedback(
        self, tenant_id: str, request_id: str, resolved: bool, rating: int | None, comment: str | None
    ) -> dict[str, Any] | None:
        return await self.experiment_api.feedback(tenant_id, request_id, resolved, rating, comment)

    async def session_feedback(
        self, tenant_id: str, session_id: str, resolved: bool, rating: int | None = None
    ) -> int:
        return await self.experiment_api.session_feedback(tenant_id, session_id, resolved, rating)

    async def experiment_report(self, tenant_id: str | None, name: str) -> dict[str, Any] | None:
        return await self.experiment_api.experiment_report(tenant_id, name)

    async def handoff(self, op: str, *args: Any) -> dict[str, Any]:
        """The handoff desk's HTTP side (`serve_app.handles.HandleHandoffs`): list, get, create, claim,
        resolve, give_back."""
        if op not in HANDOFF_API:
            raise ValueError(f"unknown handoff operation {op!r}")
        await self._ready()
        return await getattr(self.service.handoffs, op)(*args)

    async def costs(self, tenant_id: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        await self._ready()
        await self.ledger.flush()  # the report includes what this replica still buffers
        return (await cost_report(self.db, tenant_id, since, until)).to_dict()

    async def status(self) -> dict[str, Any]:
        return {
            **self.service.router.status(),
            "answered": self.service.answered,
            "ledger": {
                "written": self.ledger.written,
                "pending": self.ledger.pending,
                "late": self.ledger.late,
            },
        }

    async def __del__(self) -> None:
        await self.ledger.stop()
        await self.service.close()
        await self.db.close()
