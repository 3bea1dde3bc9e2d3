"""Screen reading through the running graph: an error toast sent over HTTP is read (FrameDedup hands the
processed frame to the ScreenReader), and a vague question naming the stream gets the article about it,
with the reads in the tenant's costs as `vision` events."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image
from ray import serve

from serve_app.runtime import RunningGraph
from serve_app.settings import Settings
from supportgraph_tools.screen.screens import ERRORS, error_screen

pytestmark = pytest.mark.ray
TENANT = "screen-t"
STREAM = f"tenant_{TENANT}_desk-1.screen"


def _png(rgb) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def _toast_read(seen: dict[str, Any]) -> bool:
    return any("0x80070005" in line for line in seen["appeared"])


def _screen_once(reader: Any, stream: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The screen reader's view of `stream` once `done` holds of it (its last view after 240 s)."""
    deadline, seen = time.monotonic() + 240, {}
    while time.monotonic() < deadline:
        seen = reader.peek.remote(stream_id=stream).result()
        if done(seen):
            break
        time.sleep(1)
    return seen


def _vague_question(text: str, stream: str) -> dict[str, Any]:
    """A chat request naming the screen-share `stream`: the question alone says nothing of the error."""
    return {"model": "auto", "messages": [{"role": "user", "content": text}], "stream_id": stream}


def test_an_error_toast_is_read_and_grounds_the_answer(graph: RunningGraph, graph_settings: Settings) -> None:
    from serve_app import samples

    asyncio.run(samples.ingest_help_center(graph_settings, TENANT))
    shot = error_screen(ERRORS[0], seed=11, surface="toast")
    reader = serve.get_deployment_handle("ScreenReader", app_name=graph.app_name)
    with httpx.Client(base_url=graph.base_url, timeout=120) as client:
        url = f"/v1/streams/{STREAM}/frames"
        png = {"content-type": "image/png"}
        first = client.post(url, params={"ts": 0}, content=_png(shot.before), headers=png).json()
        toast = client.post(url, params={"ts": 1}, content=_png(shot.after), headers=png).json()
        assert first["reason"] == "first" and toast["send"], toast
        # both reads landed (the region read may land before the whole frame's call arrives)
        seen = _screen_once(reader, STREAM, lambda s: _toast_read(s) and s["reads"] >= 2 and not s["pending"])
        assert any("Error 0x80070005: access denied" in line for line in seen["appeared"]), seen
        body = _vague_question("what does this error mean?", STREAM)
        reply = client.post("/v1/chat/completions", json=body, headers={"X-Tenant-Id": TENANT})
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        other = client.post(
            "/v1/chat/completions",
            json={**body, "stream_id": "tenant_someone-else_desk-1.screen"},
            headers={"X-Tenant-Id": TENANT},
        )
        deadline, vision = time.monotonic() + 30, None
        while time.monotonic() < deadline and vision is None:
            costs = client.get("/v1/costs", params={"tenant_id": TENANT}).json()
            vision = next((r for r in costs["by_service_provider"] if r["service"] == "vision"), None)
            time.sleep(0.5)
    text = answer["choices"][0]["message"]["content"]
    assert "notes folder" in text and "[1]" in text, text  # the article on 0x80070005, cited
    assert answer["supportgraph"]["tier"] == "extractive"
    assert other.status_code == 403
    assert vision is not None and vision["cost_usd"] == 0 and vision["attempts"] >= 2  # both reads


def _jpeg(rgb) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=75)
    return out.getvalue()


def test_on_a_busy_screen_what_changed_leads_the_vague_question(
    graph: RunningGraph, graph_settings: Settings
) -> None:
    """A dashboard with a chat sidebar, typed text and a clock (alert words of its own: 'error',
    'access', 'password'), then the toast: the vague question is answered from the toast's article by
    the extractive tier, and the reply names the toast's lines and when they were read."""
    from serve_app import samples

    asyncio.run(samples.ingest_help_center(graph_settings, TENANT))
    shot = error_screen(ERRORS[0], seed=12, surface="toast", busy=True)
    stream = f"tenant_{TENANT}_desk-busy.screen"
    reader = serve.get_deployment_handle("ScreenReader", app_name=graph.app_name)
    with httpx.Client(base_url=graph.base_url, timeout=120) as client:
        url, jpeg = f"/v1/streams/{stream}/frames", {"content-type": "image/jpeg"}
        client.post(url, params={"ts": 0}, content=_jpeg(shot.before), headers=jpeg).raise_for_status()
        toast = client.post(url, params={"ts": 1}, content=_jpeg(shot.after), headers=jpeg).json()
        assert toast["send"], toast
        _screen_once(reader, stream, lambda s: _toast_read(s) and not s["pending"])
        body = _vague_question("What does this error mean and how do I fix it?", stream)
        reply = client.post("/v1/chat/completions", json=body, headers={"X-Tenant-Id": TENANT})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    text, report = answer["choices"][0]["message"]["content"], answer["supportgraph"]["screen"]
    assert "notes folder" in text and answer["supportgraph"]["tier"] == "extractive", (text, report)
    assert any("0x80070005" in line for line in report["lines"]) and len(report["lines"]) <= 3, report
    assert report["source"] == "change" and report["status"] == "read" and report["read_at"] > 0
    assert report["frame_ts"] == 1
