"""The graph builder: the only place deployments are composed (`.bind()`), from one Settings object.

`serve run configs/local.yaml` imports `deployments.graph:build_app` with the config's `args`;
`serve.run(build_app(settings))` does the same from Python. Options that Serve config files may also set
(replicas, CPUs, user_config) take their defaults from Settings here. Every deployment is bound by
keyword, each argument from its own Settings section, so the graph's shape reads off the binds and does
not hang on the order of a constructor's parameters.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from deployments.frame_dedup import FrameDedup
from deployments.ingress import Ingress
from deployments.knowledge import Embeddings, KnowledgeBase, RerankerArms
from deployments.router import Router, SelfHostedLLM
from deployments.screen_reader import ScreenReaderDeployment, reads_in_flight
from deployments.stream_affinity import StreamAffinityRequestRouter
from serve_app.experiments.config import live_config
from serve_app.settings import DeploymentResources, Settings, load_settings

QUIET_LOGS = {"enable_access_log": False, "log_level": "WARNING"}


def _options(res: DeploymentResources, log_level: str) -> dict[str, Any]:
    actor: dict[str, Any] = {"num_cpus": res.num_cpus}
    if res.num_gpus:
        actor["num_gpus"] = res.num_gpus
    if res.resources:
        actor["resources"] = dict(res.resources)
    return {
        "num_replicas": res.num_replicas,
        "ray_actor_options": actor,
        "max_ongoing_requests": res.max_ongoing_requests,
        "max_queued_requests": res.max_queued_requests,
        "logging_config": {**QUIET_LOGS, "log_level": log_level},
    }


def _settings_from(config: Settings | dict[str, Any] | None) -> Settings:
    if isinstance(config, Settings):
        return config
    config = dict(config or {})
    config_file = config.pop("config_file", None)
    return load_settings(config_file, **config)


def build_app(config: Settings | dict[str, Any] | None = None) -> Application:
    """FrameDedup, the knowledge base and the escalating router behind the HTTP ingress.

    `config`: Settings, or a dict of Settings fields (+ an optional `config_file`)."""
    settings = _settings_from(config)
    level = settings.log_level
    frame_dedup = serve.deployment(FrameDedup, name="FrameDedup").options(
        **_options(settings.serve.frame_dedup, level),
        user_config=settings.dedup.live_config(),
        request_router_config=RequestRouterConfig(request_router_class=StreamAffinityRequestRouter),
    )
    ingress = serve.deployment(Ingress, name="Ingress").options(**_options(settings.serve.ingress, level))
    embeddings = serve.deployment(Embeddings, name="Embeddings").options(
        **_options(settings.serve.embeddings, level)
    )
    reranker_arms = serve.deployment(RerankerArms, name="Reranker").options(
        **_options(settings.serve.reranker, level)
    )
    knowledge = serve.deployment(KnowledgeBase, name="KnowledgeBase").options(
        **_options(settings.serve.knowledge, level), user_config=live_config(settings.experiments)
    )
    dedup_init = {"device": settings.dedup.device, "hash_threads": settings.dedup.hash_threads}
    kb = knowledge.bind(
        knowledge=settings.knowledge,
        db=settings.db,
        state_dir=settings.state_dir,
        pricing=settings.pricing,
        embeddings=embeddings.bind(embedder=settings.knowledge.embedder),
        reranker_arms=reranker_arms.bind(knowledge=settings.knowledge, state_dir=settings.state_dir),
    )
    self_hosted = {
        t.name: serve.deployment(SelfHostedLLM, name=self_hosted_name(t.name))
        .options(**_options(settings.serve.self_hosted_llm, level))
        .bind(tier=t, niceness=settings.serve.background_niceness)
        for t in settings.routing.tiers
        if t.backend == "gguf"
    }
    router = serve.deployment(Router, name="Router").options(
        **_options(settings.serve.router, level),
        user_config={**settings.routing.policy.model_dump(mode="json"), **live_config(settings.experiments)},
    )
    screen = (
        serve.deployment(ScreenReaderDeployment, name="ScreenReader")
        .options(
            **_options(settings.serve.screen_reader, level),
            request_router_config=RequestRouterConfig(request_router_class=StreamAffinityRequestRouter),
        )
        .bind(
            cfg=settings.screen,
            db=settings.db,
            state_dir=settings.state_dir,
            niceness=settings.serve.background_niceness,
        )
        if settings.screen.enabled
        else None
    )
    return ingress.bind(
        frame_dedup=frame_dedup.bind(
            dedup=dedup_init,
            screen_reader=screen,
            reads_in_flight=reads_in_flight(settings.serve.screen_reader, settings.serve.frame_dedup),
        ),
        knowledge=kb,
        router=router.bind(
            routing=settings.routing,
            screen=settings.screen,
            pricing=settings.pricing,
            db=settings.db,
            state_dir=settings.state_dir,
            knowledge=kb,
            self_hosted=self_hosted,
            screen_reader=screen,
            experiments=settings.experiment_set(),
            handoff=settings.handoff,
        ),
        http=settings.http,
        auth=settings.auth,
        db=settings.db,
        state_dir=settings.state_dir,
        replicas=settings.serve.ingress.num_replicas,
    )


def self_hosted_name(tier: str) -> str:
    """Deployment name of a self-hosted GGUF tier (one deployment per tier)."""
    return f"LLM-{tier}"
