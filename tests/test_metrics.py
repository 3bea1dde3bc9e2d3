"""Prometheus metrics: recorded by the core services with tenant/model labels (checked Ray-free on a
prometheus_client registry), exported by Ray in the running graph, and used as named by the Grafana
dashboard."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_app.backends import LocalFrameBackend
from serve_app.frames.service import DedupService
from serve_app.http import create_app
from serve_app.metrics import SPECS, Metrics, exported_names
from serve_app.routing.providers.base import Message
from serve_app.routing.service import ChatRequest, ChatService
from serve_app.settings import DedupSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_frames_are_counted_by_tenant_verdict_and_reason() -> None:
    metrics = Metrics.prometheus()
    service = DedupService(DedupSettings(idle_fps=5, hamming_threshold=64))  # pHash never fires here
    service.metrics = metrics
    frame = np.zeros((480, 640, 3), np.uint8)
    toast = frame.copy()
    toast[400:460, 320:620] = (34, 139, 84)  # a green box in a corner: a region change
    frames = [frame, frame, frame, frame, toast, toast]
    for n, f in enumerate(frames):  # 10 fps offered at 5 fps idle sampling: every other frame throttled
        asyncio.run(service.offer("tenant_acme_r1.screen", f, False, n * 0.1))
    counted = {
        (v, r): value(metrics, "supportgraph_frames_total", tenant="acme", verdict=v, reason=r)
        for v, r in [
            ("throttled", "throttled"),
            ("duplicate", "duplicate"),
            ("processed", "first"),
            ("processed", "region"),
            ("processed", "phash"),
        ]
    }
    assert counted == {
        ("throttled", "throttled"): 3.0,
        ("duplicate", "duplicate"): 1.0,
        ("processed", "first"): 1.0,
        ("processed", "region"): 1.0,
        ("processed", "phash"): 0.0,
    }


def test_routed_answers_are_counted_by_tier_model_and_outcome() -> None:
    metrics = Metrics.prometheus()
    settings = load_settings(
        routing={"tiers": [{"name": "extractive", "backend": "extractive", "model": "extractive-grounded"}]}
    )

    async def retrieve(tenant: str, question: str, k: int, request_id: uuid.UUID) -> list[str]:
        return ["## Export\nChoose Settings > Data > Export to export your notes."]

    service = ChatService.create(settings, retrieve)
    service.metrics = metrics
    asyncio.run(service.answer(ChatRequest("acme", (Message("user", "How do I export notes?"),))))
    labels = {"tenant": "acme", "tier": "extractive", "model": "extractive-grounded"}
    assert value(metrics, "supportgraph_llm_requests_total", **labels, offline="true") == 1
    assert value(metrics, "supportgraph_llm_attempts_total", **labels, outcome="accepted") == 1
    assert value(metrics, "supportgraph_llm_latency_ms_count", **labels) == 1
    tokens = value(
        metrics,
        "supportgraph_llm_tokens_total",
        tenant="acme",
        model="extractive-grounded",
        direction="output",
    )
    assert tokens > 0


def test_http_requests_are_counted_per_route_template() -> None:
    metrics = Metrics.prometheus()
    app = create_app(metrics=metrics)
    app.state.frames = LocalFrameBackend(DedupService())
    client = TestClient(app)
    client.get("/healthz")
    client.get("/v1/streams/tenant_acme_r1/stats")
    client.get("/v1/streams/not-a-stream/stats")
    route = "/v1/streams/{stream_id}/stats"
    assert value(metrics, "supportgraph_http_requests_total", route=route, status="200") == 1
    assert value(metrics, "supportgraph_http_requests_total", route=route, status="400") == 1
    assert value(metrics, "supportgraph_http_latency_ms_count", route="/healthz") == 1


def test_labels_must_match_the_definition() -> None:
    with pytest.raises(ValueError, match="takes labels"):
        Metrics.prometheus().inc("supportgraph_frames", tenant="acme")


def test_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads((ROOT / "ops/grafana/supportgraph.json").read_text())
    ours = set().union(*(exported_names(spec) for spec in SPECS.values()))
    serve_builtin = {"ray_serve_deployment_replica_healthy", "ray_serve_deployment_queued_queries"}
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bray_[a-z_]+", target["expr"])
    }
    assert used and used <= ours | serve_builtin, used - ours - serve_builtin
    assert {n for n in ours if n.endswith("_total") or n.endswith("_bucket")} - used == set()  # all shown
    assert dashboard["templating"]["list"][1]["name"] == "tenant"


@pytest.mark.ray
def test_the_running_graph_exports_its_metrics(graph, graph_settings) -> None:
    """Ray exports replica metrics on an interval: keep answering until the series shows up."""
    body = {"model": "auto", "messages": [{"role": "user", "content": "How do I export notes?"}]}
    headers = {"X-Tenant-Id": "metrics-t"}
    url = f"http://127.0.0.1:{graph_settings.serve.metrics_port}/metrics"
    deadline, ours = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        reply = httpx.post(f"{graph.base_url}/v1/chat/completions", json=body, headers=headers, timeout=120)
        assert reply.status_code == 200, reply.text
        text = httpx.get(url, timeout=5).text
        ours = [line for line in text.splitlines() if line.startswith("ray_supportgraph_")]
        llm = [line for line in ours if line.startswith("ray_supportgraph_llm_requests_total{")]
        http = [line for line in ours if 'route="/v1/chat/completions"' in line]
        if any('tenant="metrics-t"' in line for line in llm) and http:
            break
        time.sleep(3)
    else:
        pytest.fail(f"no router metrics exported in 120 s; supportgraph series seen: {ours[:20]}")
    line = next(line for line in llm if 'tenant="metrics-t"' in line)
    assert 'deployment="Router"' in line and 'model="' in line and 'tier="' in line
