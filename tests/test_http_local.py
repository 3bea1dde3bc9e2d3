"""The HTTP API over the in-process backend: good uploads decide, bad ones get a clear 4xx."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_app.backends import LocalFrameBackend
from serve_app.frames.decode import FrameLimits
from serve_app.frames.service import DedupService
from serve_app.http import create_app
from tests import images

URL = "/v1/streams/tenant_acme_s1.screen/frames"


def encode(frame: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture()
def client() -> TestClient:
    app = create_app(FrameLimits(max_bytes=2_000_000, max_pixels=1920 * 1080))
    app.state.frames = LocalFrameBackend(DedupService())
    return TestClient(app)


def post(client: TestClient, body: bytes, ctype: str, url: str = URL, **params: object):
    return client.post(url, content=body, headers={"content-type": ctype}, params=params)


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/v1/streams/{stream_id}/frames", "/v1/streams/{stream_id}/stats"} <= set(paths)


def test_jpeg_png_and_raw_frames_are_decided(client: TestClient) -> None:
    frame = images.text(120, 160, 4)
    first = post(client, encode(frame, "PNG"), "image/png", ts=0)
    assert first.status_code == 200 and first.json()["verdict"] == "processed" and first.json()["send"]
    raw = post(client, frame.tobytes(), "application/octet-stream", ts=1, width=160, height=120)
    assert raw.json()["verdict"] == "duplicate" and raw.json()["distance"] == 0
    jpeg = post(client, encode(images.gradient(120, 160, 1), "JPEG"), "image/jpeg", ts=2)
    assert jpeg.json()["verdict"] == "processed"
    stats = client.get("/v1/streams/tenant_acme_s1.screen/stats").json()
    assert stats["stream"]["total"] == 3 and stats["tenant"]["processed"] == 2
    closed = client.delete("/v1/streams/tenant_acme_s1.screen").json()
    assert closed["closed"] and not client.get("/v1/streams/tenant_acme_s1.screen/stats").json()["known"]


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge image (the pixel data never needs to exist)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("body", "ctype", "params", "url", "status", "needle"),
    [
        (b"x", "image/png", {}, "/v1/streams/not-a-stream/frames", 400, "invalid stream id"),
        (b"x", "image/png", {}, "/v1/streams/tenant_BAD_room/frames", 400, "invalid stream id"),
        (b"", "image/png", {}, URL, 422, "empty body"),
        (b"not an image", "image/png", {}, URL, 422, "not a valid PNG"),
        (b"\xff\xd8\xff\xe0garbage", "image/jpeg", {}, URL, 422, "JPEG"),
        (b"GIF89a....", "image/gif", {}, URL, 415, "unsupported content type"),
        (b"abc", "application/octet-stream", {}, URL, 422, "width and height"),
        (b"abc", "application/octet-stream", {"width": 2, "height": 2}, URL, 422, "needs 12 bytes"),
        (b"\0" * 3_000_000, "image/png", {}, URL, 413, "limit"),
        (huge_png(50_000, 50_000), "image/png", {}, URL, 413, "pixels"),
    ],
)
def test_bad_input_gets_a_clear_4xx(client, body, ctype, params, url, status, needle) -> None:
    response = post(client, body, ctype, url=url, **params)
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"]


def test_truncated_jpeg_is_422(client: TestClient) -> None:
    data = encode(images.noise(200, 200), "JPEG")
    response = post(client, data[: len(data) // 2], "image/jpeg")
    assert response.status_code == 422 and "JPEG" in response.json()["detail"]


@pytest.mark.parametrize("ts", ["-1", "nan", "inf", "yesterday"])
def test_bad_timestamps_are_422(client: TestClient, ts: str) -> None:
    response = client.post(
        URL,
        content=encode(images.flat(8, 8, (1, 1, 1)), "PNG"),
        headers={"content-type": "image/png"},
        params={"ts": ts},
    )
    assert response.status_code == 422


def test_overload_is_503_with_retry_after() -> None:
    """A full FrameDedup queue (Ray's BackPressureError) becomes 503 + Retry-After, not a 500."""
    from ray.serve.exceptions import BackPressureError

    from serve_app.handles import HandleFrameBackend

    class FullQueue:  # the shape of a DeploymentHandle method whose queue is full
        def remote(self, **_: object) -> None:
            raise BackPressureError(num_queued_requests=512, max_queued_requests=512)

    app = create_app()
    app.state.frames = HandleFrameBackend(type("Handle", (), {"offer": FullQueue()})())
    response = post(TestClient(app), encode(images.flat(8, 8, (1, 2, 3)), "PNG"), "image/png")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "retry later" in response.json()["detail"]


def test_a_replica_lost_under_a_request_is_503_with_retry_after() -> None:
    """A replica that dies while it serves (its node lost, its process killed: Ray's ActorDiedError)
    is a 503 + Retry-After naming what was lost, for frames, search, chat and its stream; not a 500."""
    import json

    from ray.exceptions import ActorDiedError

    from serve_app.handles import HandleChatBackend, HandleFrameBackend, HandleKnowledgeBackend

    class Dead:  # the shape of a DeploymentHandle (and of its methods) whose replica died mid-call
        def __getattr__(self, name: str) -> Dead:
            return self

        def options(self, **_: object) -> Dead:
            return self

        def remote(self, *_: object, **__: object) -> object:
            raise ActorDiedError()

    app = create_app()
    app.state.frames = HandleFrameBackend(Dead())
    app.state.knowledge = HandleKnowledgeBackend(Dead())
    app.state.chat = HandleChatBackend(Dead())
    client = TestClient(app, raise_server_exceptions=False)
    chat = {"messages": [{"role": "user", "content": "hi"}], "tenant_id": "acme"}
    search = {"tenant_id": "acme", "query": "refund"}
    for response, what in (
        (post(client, encode(images.flat(8, 8, (1, 2, 3)), "PNG"), "image/png"), "frame dedup"),
        (client.post("/v1/knowledge/search", json=search), "knowledge base"),
        (client.post("/v1/chat/completions", json=chat), "router"),
    ):
        assert response.status_code == 503 and response.headers["retry-after"] == "1", response.text
        assert f"the {what} replica serving this request was lost" in response.json()["detail"]
    streamed = client.post("/v1/chat/completions", json={**chat, "stream": True})
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert events[-1]["error"]["code"] == 503 and "router replica" in events[-1]["error"]["message"]


def test_knowledge_routes_validate_before_reaching_a_backend(client: TestClient) -> None:
    ok_shape = {"tenant_id": "acme", "query": "refund"}
    assert client.post("/v1/knowledge/search", json={**ok_shape, "tenant_id": "ACME"}).status_code == 422
    assert client.post("/v1/knowledge/search", json={**ok_shape, "query": "   "}).status_code == 422
    assert client.post("/v1/knowledge/search", json={**ok_shape, "query": "x" * 2001}).status_code == 422
    assert client.post("/v1/knowledge/search", json={**ok_shape, "top_k": 0}).status_code == 422
    assert client.post("/v1/knowledge/search", json={**ok_shape, "mode": "magic"}).status_code == 422
    missing = client.post("/v1/knowledge/search", json=ok_shape)  # this app has no knowledge backend
    assert missing.status_code == 503 and "knowledge base" in missing.json()["detail"]


def test_internal_errors_of_the_router_are_not_reported_as_bad_input() -> None:
    from serve_app.routing.service import ChatRequestError

    class Failing:
        def __init__(self, exc: Exception):
            self.exc = exc

        async def chat(self, request):
            raise self.exc

    app = create_app()
    body = {"messages": [{"role": "user", "content": "hi"}], "tenant_id": "acme"}
    app.state.chat = Failing(ValueError("a bug deep inside"))
    response = TestClient(app, raise_server_exceptions=False).post("/v1/chat/completions", json=body)
    assert response.status_code == 500 and "a bug deep inside" not in response.text
    app.state.chat = Failing(ChatRequestError("unknown tier 'x'"))
    response = TestClient(app).post("/v1/chat/completions", json=body)
    assert response.status_code == 422 and response.json()["detail"] == "unknown tier 'x'"


def _failing_escalation(**policy: object):  # type: ignore[no-untyped-def]
    from serve_app.routing.providers.base import ProviderError
    from tests.chat import LocalChat, extractive_service
    from tests.test_router_policy import Scripted

    service = extractive_service(
        {"name": "sonnet", "backend": "extractive", "model": "claude-sonnet-4-5"}, **policy
    )
    service.router.tiers["sonnet"].provider = Scripted(
        "sonnet", ProviderError("anthropic", "server", "down", 529)
    )
    app = create_app()
    app.state.chat = LocalChat(service)
    return app


def _sse(app, body):  # type: ignore[no-untyped-def]
    import json

    streamed = TestClient(app).post("/v1/chat/completions", json={**body, "stream": True})
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    return events, "".join(e["choices"][0]["delta"].get("content", "") for e in events)


def test_a_degraded_answer_is_a_200_that_says_so_streaming_or_not() -> None:
    """Without verification, the tier escalated to fails: the cheap tier's answer comes back marked
    degraded, with the failed attempt and its error, in the reply's `supportgraph` and in the SSE
    stream's final chunk."""
    app = _failing_escalation(verify=False, threshold=1.0)
    body = {"messages": [{"role": "user", "content": "where is the export"}], "tenant_id": "acme"}
    reply = TestClient(app).post("/v1/chat/completions", json=body)
    routing = reply.json()["supportgraph"]
    assert reply.status_code == 200 and routing["degraded"] is True and routing["tier"] == "extractive"
    assert routing["failures"] == [{"attempt": 2, "tier": "sonnet", "error": "anthropic: server 529: down"}]
    events, text = _sse(app, body)
    final = events[-1]
    assert final["choices"][0]["finish_reason"] == "stop" and final["supportgraph"]["degraded"] is True
    assert text.strip() == reply.json()["choices"][0]["message"]["content"]


def test_an_unverified_answer_whose_escalation_fails_is_declined_not_sent() -> None:
    """With verification (the default), an answer the verifier does not support is never sent, even
    when the tier it escalated to fails: the reply abstains, says why, and lists the failure."""
    app = _failing_escalation()
    body = {
        "messages": [{"role": "user", "content": "what is the price of the enterprise plan"}],
        "tenant_id": "acme",
    }
    reply = TestClient(app).post("/v1/chat/completions", json=body)
    routing = reply.json()["supportgraph"]
    assert (
        reply.status_code == 200
        and routing["abstained"] is True
        and routing["abstain_reason"] == "unverified"
    )
    assert routing["verified"] is False and routing["tier"] == "abstained"
    assert routing["failures"] == [{"attempt": 2, "tier": "sonnet", "error": "anthropic: server 529: down"}]
    assert "Export" not in reply.json()["choices"][0]["message"]["content"]
    events, text = _sse(app, body)
    assert events[-1]["supportgraph"]["abstained"] is True and "Export" not in text
    assert text == reply.json()["choices"][0]["message"]["content"]
