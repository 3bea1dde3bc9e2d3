"""Settings of the knowledge base: the embedder, the reranker arms, chunking and hybrid retrieval."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from serve_app.settings.base import _Section

COHERE_DEFAULT_MODEL = "rerank-v3.5"  # a Cohere arm without `model` (priced like any billed model)


class EmbedderSettings(_Section):
    """The embedding model of chunks and queries (the Embeddings deployment)."""

    backend: Literal["sentence-transformers", "openai-compatible"] = Field(
        "sentence-transformers", description="local sentence-transformers model, or an OpenAI-style API"
    )
    model: str = Field(
        "all-MiniLM-L6-v2", description="bundled MiniLM, a local path, or a hub/API model name"
    )
    device: str = Field("cpu", description="sentence-transformers device (cpu, cuda)")
    batch_size: int = Field(64, ge=1, description="texts embedded per call")
    base_url: str | None = Field(None, description="openai-compatible: the API base URL")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai-compatible: variable holding the key")
    dim: int = Field(384, ge=1, description="vector size; the schema's column is vector(384)")
    cache_size: int = Field(10_000, ge=0, description="query embeddings kept in the in-process LRU")
    redis_url: str | None = Field(
        None, description="optional Redis (redis://host:6379/0) behind the LRU, shared by every replica"
    )
    redis_ttl_s: int = Field(7 * 86_400, ge=1, description="how long a query vector stays in Redis")

    def space(self) -> str:
        """Which vectors this embedder makes: a vector computed elsewhere in the same space (the chat
        turn's, embedded once for its intent) can stand for the query's own embedding."""
        return f"{self.backend}/{self.model}/{self.dim}"


class RerankerSettings(_Section):
    """One reranker arm."""

    backend: Literal["none", "learned", "cross-encoder", "cohere", "adapted"] = Field(
        "none",
        description="none keeps the fused order; learned: evidence model; cross-encoder; cohere (API);"
        " adapted: the tenant's own cross-encoder (`supportgraph adapt`)",
    )
    model: str | None = Field(
        None,
        description="cross-encoder name or path; Cohere model; learned: weights JSON "
        "(`supportgraph fit-reranker`; default: the bundled fit); adapted: the folder of the tenants' "
        "models (`supportgraph adapt`; default: STATE_DIR/models)",
    )
    base_url: str | None = Field(None, description="cohere: another endpoint of its API")
    api_key_env: str = Field("CO_API_KEY", description="cohere: variable holding the key")

    def options(self) -> dict[str, Any]:
        if self.backend == "none":
            return {}
        if self.backend == "learned":
            return {"path": self.model} if self.model else {}
        if self.backend == "adapted":
            return {"models": self.model} if self.model else {}
        opts: dict[str, Any] = {"model": self.model} if self.model else {}
        if self.backend == "cohere":
            opts.update(api_key_env=self.api_key_env, base_url=self.base_url)
        return opts


class KnowledgeSettings(_Section):
    """Chunking, embeddings, hybrid retrieval (depths, fusion) and the reranker arms."""

    embedder: EmbedderSettings = EmbedderSettings()
    rerankers: dict[str, RerankerSettings] = Field(
        default_factory=lambda: {
            "learned": RerankerSettings(backend="learned"),
            "none": RerankerSettings(),
            "adapted": RerankerSettings(backend="adapted"),
        },
        description="arm name -> reranker; `adapted` ranks with the tenant's own model "
        "(`supportgraph adapt`) "
        "and falls back to the learned order for a tenant without one",
    )
    ab_weights: dict[str, float] = Field(
        default_factory=lambda: {"learned": 1.0},
        description="arm -> share of traffic (unnamed arms get none)",
    )
    ab_split_by: Literal["tenant", "request"] = Field(
        "tenant", description="what the default reranker experiment assigns arms to"
    )
    chunk_words: int = Field(180, ge=20, description="chunk size, words")
    chunk_overlap: int = Field(30, ge=0, description="words shared by consecutive chunks")
    dense_k: int = Field(50, ge=1, le=1000, description="HNSW candidates per query")
    lexical_k: int = Field(50, ge=1, le=1000, description="BM25 candidates per query")
    rrf_k: int = Field(10, ge=1, description="RRF constant (tuned on the aws_docs_qa dev split)")
    dense_weight: float = Field(1.0, ge=0, description="the dense list's weight in RRF")
    lexical_weight: float = Field(2.0, ge=0, description="BM25's weight in RRF (dev split: 2)")
    fuse_by: Literal["document", "chunk"] = Field(
        "document", description="what RRF fuses (dev split: document)"
    )
    lexical_postings_cap: int = Field(3000, ge=100, description="BM25 postings read per query term")
    rerank_candidates: int = Field(30, ge=1, le=200, description="fused candidates the reranker sees")
    top_k: int = Field(5, ge=1, le=100, description="passages returned (one per document)")

    def chunking(self) -> dict[str, int]:
        """The chunking arguments of `serve_app.knowledge.ingest.ingest_path`."""
        return {"max_words": self.chunk_words, "overlap": self.chunk_overlap}

    @model_validator(mode="after")
    def _arms_exist(self) -> KnowledgeSettings:
        unknown = set(self.ab_weights) - set(self.rerankers)
        if unknown:
            raise ValueError(f"knowledge.ab_weights names unknown rerankers: {sorted(unknown)}")
        return self
