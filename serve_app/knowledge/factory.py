"""Settings -> embedder, rerankers, retriever: the one place knowledge components are wired, and the one
place a Retriever is built (for the CLI and for the KnowledgeBase deployment alike)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from serve_app.db.database import Database
from serve_app.knowledge.adapters import (
    AsyncReranker,
    HandleEmbedder,
    HandleReranker,
    InlineReranker,
    ThreadedEmbedder,
    ThreadedReranker,
)
from serve_app.knowledge.cache import CachedEmbedder, RedisVectors
from serve_app.knowledge.embedders import Embedder, create_embedder
from serve_app.knowledge.rerankers import Reranker, create_reranker
from serve_app.knowledge.retrieval import Retriever
from serve_app.settings import EmbedderSettings, KnowledgeSettings, RerankerSettings

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

INLINE_BACKENDS = frozenset({"learned"})  # cheaper than a thread hop or a round trip: run in the caller


def build_embedder(cfg: EmbedderSettings) -> CachedEmbedder:
    if cfg.backend == "sentence-transformers":
        inner = create_embedder(cfg.backend, model=cfg.model, device=cfg.device, batch_size=cfg.batch_size)
    else:
        if not cfg.base_url:
            raise ValueError("knowledge.embedder.base_url is required for the openai-compatible backend")
        inner = create_embedder(
            cfg.backend, model=cfg.model, base_url=cfg.base_url, dim=cfg.dim, api_key_env=cfg.api_key_env
        )
    if inner.dim != cfg.dim:
        raise ValueError(
            f"embedder {inner.name} makes {inner.dim}-d vectors; knowledge.embedder.dim is {cfg.dim}"
        )
    shared = RedisVectors(cfg.redis_url, inner.name, inner.dim, cfg.redis_ttl_s) if cfg.redis_url else None
    return CachedEmbedder(inner, cfg.cache_size, shared)


PER_TENANT_BACKENDS = frozenset({"adapted"})  # ranked by the tenant's own model: `rerank_for(tenant, ...)`


def build_reranker(cfg: RerankerSettings, state_dir: Path | None = None) -> Reranker:
    """The backend `cfg` names; an `adapted` one finds the tenants' models under `state_dir/models`
    unless its `model` names another folder."""
    options = cfg.options()
    if cfg.backend == "adapted" and "models" not in options:
        if state_dir is None:
            raise ValueError("the adapted reranker needs the state dir (or its `model` folder)")
        options["models"] = Path(state_dir) / "models"
    return create_reranker(cfg.backend, **options)


def build_rerankers(cfg: KnowledgeSettings, state_dir: Path | None = None) -> dict[str, Reranker]:
    return {name: build_reranker(r, state_dir) for name, r in cfg.rerankers.items()}


def build_retriever(
    db: Database,
    cfg: KnowledgeSettings,
    embedder: Embedder | None = None,
    *,
    embeddings: DeploymentHandle | None = None,
    reranker_arms: DeploymentHandle | None = None,
    rerank: bool = True,
) -> Retriever:
    """The Retriever that `cfg` describes, with its A/B arms.

    Queries are embedded by the `Embeddings` deployment when its handle `embeddings` is given, else by
    `embedder` (default: the configured one) in a worker thread. Text rerankers run in the `RerankerArms`
    deployment when its handle `reranker_arms` is given (a per-tenant arm with the tenant as its
    multiplexed model id), else in a worker thread; the learned reranker runs inline either way.
    `rerank=False`: no arms, the fused order (what fit-reranker learns from)."""
    query_embedder: HandleEmbedder | ThreadedEmbedder = (
        HandleEmbedder(embeddings, cfg.embedder.model, cfg.embedder.dim)
        if embeddings is not None
        else ThreadedEmbedder(embedder or build_embedder(cfg.embedder))
    )
    if embeddings is not None or embedder is None:  # the configured embedder: its vectors' space is known
        query_embedder.space = cfg.embedder.space()
    arms: dict[str, AsyncReranker] = {}
    for arm, r in (cfg.rerankers if rerank else {}).items():
        if r.backend in INLINE_BACKENDS:
            arms[arm] = InlineReranker(build_reranker(r))
        elif reranker_arms is not None:
            arms[arm] = HandleReranker(reranker_arms, arm, per_tenant=r.backend in PER_TENANT_BACKENDS)
        else:
            arms[arm] = ThreadedReranker(build_reranker(r, db.state_dir))
    weights = cfg.ab_weights if rerank else {}
    return Retriever(db, query_embedder, arms, weights, cfg.ab_split_by, cfg)
