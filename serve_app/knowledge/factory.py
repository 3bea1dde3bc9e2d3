"""Settings -> embedder, rerankers, retriever: the one place knowledge components are wired."""

from __future__ import annotations

from serve_app.db.database import Database
from serve_app.knowledge.cache import CachedEmbedder, RedisVectors
from serve_app.knowledge.embedders import create_embedder
from serve_app.knowledge.rerankers import Reranker, create_reranker
from serve_app.knowledge.retrieval import RetrievalConfig, Retriever
from serve_app.settings import EmbedderSettings, KnowledgeSettings


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


def build_rerankers(cfg: KnowledgeSettings) -> dict[str, Reranker]:
    return {name: create_reranker(r.backend, **r.options()) for name, r in cfg.rerankers.items()}


def retrieval_config(cfg: KnowledgeSettings) -> RetrievalConfig:
    return RetrievalConfig(
        dense_k=cfg.dense_k,
        lexical_k=cfg.lexical_k,
        rrf_k=cfg.rrf_k,
        dense_weight=cfg.dense_weight,
        lexical_weight=cfg.lexical_weight,
        fuse_by=cfg.fuse_by,
        lexical_postings_cap=cfg.lexical_postings_cap,
        rerank_candidates=cfg.rerank_candidates,
        top_k=cfg.top_k,
    )


def build_retriever(
    db: Database, cfg: KnowledgeSettings, embedder: CachedEmbedder | None = None
) -> Retriever:
    return Retriever(
        db,
        embedder or build_embedder(cfg.embedder),
        build_rerankers(cfg),
        cfg.ab_weights,
        cfg.ab_split_by,
        retrieval_config(cfg),
    )
