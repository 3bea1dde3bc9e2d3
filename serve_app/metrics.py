"""The graph's Prometheus metrics: defined once here, recorded by the core services, exported by Ray.

In the graph, `Metrics.ray()` records through `ray.serve.metrics` (Ray's metrics agent serves them on
each node's metrics export port, names prefixed `ray_`; Ray Serve adds replica, deployment and
application labels). Without Ray, `Metrics.prometheus(registry)` records into a prometheus_client
registry. Labels carry the tenant and, for LLM metrics, the tier and model; keep tenant counts in the
thousands, not millions, or drop the label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)
Kind = Literal["counter", "histogram", "gauge"]
LATENCY_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]


@dataclass(frozen=True)
class Spec:
    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


SPECS = {
    s.name: s
    for s in (
        Spec(
            "supportgraph_http_requests", "counter", "HTTP requests by route and status", ("route", "status")
        ),
        Spec(
            "supportgraph_http_latency_ms", "histogram", "HTTP request latency", ("route",), tuple(LATENCY_MS)
        ),
        Spec(
            "supportgraph_frames",
            "counter",
            "frames offered, by verdict and reason (first, phash, region, throttled, duplicate)",
            ("tenant", "verdict", "reason"),
        ),
        Spec("supportgraph_retrievals", "counter", "knowledge retrievals", ("tenant", "mode")),
        Spec(
            "supportgraph_retrieval_latency_ms",
            "histogram",
            "knowledge retrieval latency (embed, search, fuse, rerank)",
            ("tenant", "mode"),
            tuple(LATENCY_MS),
        ),
        Spec("supportgraph_embedding_lookups", "counter", "query embedding cache lookups", ("model",)),
        Spec("supportgraph_embedding_cache_hits", "counter", "query embedding cache hits", ("model",)),
        Spec(
            "supportgraph_llm_requests",
            "counter",
            "routed requests by the tier that answered",
            ("tenant", "tier", "model", "offline"),
        ),
        Spec(
            "supportgraph_llm_attempts",
            "counter",
            "router attempts by tier and outcome",
            ("tenant", "tier", "model", "outcome"),
        ),
        Spec("supportgraph_llm_escalations", "counter", "escalations out of a tier", ("tenant", "tier")),
        Spec(
            "supportgraph_llm_degraded",
            "counter",
            "answers returned degraded (the tiers they escalated to failed), by the tier that answered",
            ("tenant", "tier"),
        ),
        Spec(
            "supportgraph_chat_abstained",
            "counter",
            "chat turns that got no answer but an honest 'I don't know' or a handoff, by reason (unverified,"
            " no_evidence, asked_for_person, out_of_scope)",
            ("tenant", "reason"),
        ),
        Spec("supportgraph_chat_intents", "counter", "chat turns by intent", ("tenant", "intent")),
        Spec("supportgraph_llm_cost_usd", "counter", "LLM spend in USD", ("tenant", "tier", "model")),
        Spec("supportgraph_llm_tokens", "counter", "LLM tokens", ("tenant", "model", "direction")),
        Spec(
            "supportgraph_llm_latency_ms",
            "histogram",
            "routed request latency, all attempts",
            ("tenant", "tier", "model"),
            tuple(LATENCY_MS),
        ),
        Spec(
            "supportgraph_screen_reads",
            "counter",
            "screen reads (OCR of sent frames and chat images), by outcome (text, empty, error, stale)",
            ("tenant", "outcome"),
        ),
        Spec(
            "supportgraph_screen_characters",
            "counter",
            "characters read off screens (the vision rows' `characters` in the cost ledger)",
            ("tenant",),
        ),
        Spec(
            "supportgraph_screen_read_latency_ms",
            "histogram",
            "screen read latency (batch), by scope (region, frame)",
            ("scope",),
            tuple(LATENCY_MS),
        ),
        Spec(
            "supportgraph_handoffs",
            "counter",
            "conversations handed to a person, by reason",
            ("tenant", "reason"),
        ),
        Spec("supportgraph_handoff_queue", "gauge", "handoffs queued for a person", ("tenant",)),
        Spec(
            "supportgraph_handoff_wait_s",
            "histogram",
            "seconds from handoff to a person claiming it",
            ("tenant",),
            (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400),
        ),
        Spec(
            "supportgraph_handoff_human_minutes",
            "counter",
            "minutes people spent on handoffs (claim to resolve or return)",
            ("tenant", "outcome"),
        ),
    )
}


class Metrics:
    """Record by name; `make(spec)` builds the backend's metric object once per name."""

    def __init__(self, make: Callable[[Spec], Any], kind_of_backend: str):
        self._make, self.backend = make, kind_of_backend
        self._metrics: dict[str, Any] = {}

    def _get(self, name: str) -> tuple[Spec, Any]:
        spec = SPECS[name]
        if name not in self._metrics:
            self._metrics[name] = None  # a metric that cannot be made is skipped from then on
            self._metrics[name] = self._make(spec)
        return spec, self._metrics[name]

    def _tags(self, spec: Spec, tags: dict[str, str]) -> dict[str, str]:
        if set(tags) != set(spec.labels):
            raise ValueError(f"{spec.name} takes labels {spec.labels}, got {sorted(tags)}")
        return {k: str(v) for k, v in tags.items()}

    def inc(self, name: str, value: float = 1.0, **tags: str) -> None:
        labels = self._tags(SPECS[name], tags)  # a wrong label is a bug: it raises
        if value > 0:  # Ray's counters refuse 0; nothing to count anyway
            self._record(name, "inc", value, labels)

    def observe(self, name: str, value: float, **tags: str) -> None:
        self._record(name, "observe", value, self._tags(SPECS[name], tags))

    def set(self, name: str, value: float, **tags: str) -> None:
        """A gauge's current value."""
        self._record(name, "set", value, self._tags(SPECS[name], tags))

    def _record(self, name: str, method: str, value: float, labels: dict[str, str]) -> None:
        """Metrics are best effort: an exporter that fails (or is missing outside a replica) is logged,
        never fails the request."""
        if name in self._metrics and self._metrics[name] is None:
            return
        try:
            _, metric = self._get(name)
            if self.backend == "ray":
                getattr(metric, method)(value, tags=labels)
            else:
                getattr(metric.labels(**labels), method)(value)
        except Exception:
            log.warning("recording %s failed", name, exc_info=True)

    @classmethod
    def ray(cls) -> Metrics:
        def make(spec: Spec) -> Any:
            from ray.serve import metrics

            if spec.kind == "counter":
                return metrics.Counter(spec.name, description=spec.description, tag_keys=spec.labels)
            if spec.kind == "histogram":
                return metrics.Histogram(
                    spec.name,
                    description=spec.description,
                    boundaries=list(spec.buckets),
                    tag_keys=spec.labels,
                )
            return metrics.Gauge(spec.name, description=spec.description, tag_keys=spec.labels)

        return cls(make, "ray")

    @classmethod
    def prometheus(cls, registry: Any = None) -> Metrics:
        import prometheus_client as prom

        registry = registry if registry is not None else prom.CollectorRegistry()

        def make(spec: Spec) -> Any:
            if spec.kind == "counter":
                return prom.Counter(spec.name, spec.description, spec.labels, registry=registry)
            if spec.kind == "histogram":
                return prom.Histogram(
                    spec.name, spec.description, spec.labels, registry=registry, buckets=spec.buckets
                )
            return prom.Gauge(spec.name, spec.description, spec.labels, registry=registry)

        metrics = cls(make, "prometheus")
        metrics.registry = registry
        return metrics


def exported_names(spec: Spec, prefix: str = "ray_") -> set[str]:
    """The series names Prometheus sees for a metric (Ray adds `ray_`; counters `_total`)."""
    base = prefix + spec.name
    if spec.kind == "counter":
        return {base + "_total"}
    if spec.kind == "histogram":
        return {base + "_bucket", base + "_sum", base + "_count"}
    return {base}
