"""The escalating router in the running graph: OpenAI clients against /v1/chat/completions (plain and
streaming), the offline tiers answering for real, frames on every attempt, the cost report, bad input."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from serve_app.demo import ingest_samples
from serve_app.runtime import RunningGraph
from serve_app.settings import Settings

pytestmark = pytest.mark.ray
TENANT = "chat-t"


@pytest.fixture(scope="module")
def client(graph: RunningGraph, graph_settings: Settings) -> openai.OpenAI:
    asyncio.run(ingest_samples(graph_settings, TENANT))
    return openai.OpenAI(
        base_url=f"{graph.base_url}/v1",
        api_key="unused",
        default_headers={"X-Tenant-Id": TENANT},
        timeout=120,
    )


def data_url(color: tuple[int, int, int] = (200, 30, 30)) -> str:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def test_help_center_question_is_answered_by_the_cheap_grounded_tier(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="auto",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "How do I reset a forgotten password?"},
                    {"type": "image_url", "image_url": {"url": data_url()}},
                ],
            }
        ],
    )
    routing = reply.model_extra["supportgraph"]
    answer = reply.choices[0].message.content
    assert routing["tier"] == "extractive" and routing["offline"] is True
    assert "Forgot password" in answer and "[1]" in answer and "Confidence" not in answer
    assert [(a["tier"], a["outcome"], a["images"]) for a in routing["attempts"]] == [
        ("extractive", "accepted", 1)
    ]
    assert reply.model == "extractive-grounded" and reply.usage.total_tokens > 0


def test_a_question_the_help_center_cannot_answer_escalates_to_smollm2(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hi! Tell me a short joke."}], max_tokens=24
    )
    routing = reply.model_extra["supportgraph"]
    assert [a["tier"] for a in routing["attempts"]] == ["extractive", "smollm2"]
    assert routing["attempts"][0]["outcome"] == "escalated" and routing["tier"] == "smollm2"
    assert reply.choices[0].message.content.strip() and routing["offline"] is True


def test_streaming_through_an_openai_client(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Can I get a refund on an annual plan?"}],
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = chunks[-1]
    assert "refund" in text.lower() and "Confidence" not in text
    assert (
        final.choices[0].finish_reason == "stop" and final.model_extra["supportgraph"]["tier"] == "extractive"
    )


def test_pinning_a_tier_and_listing_models(client: openai.OpenAI, graph: RunningGraph) -> None:
    assert [m.id for m in client.models.list()] == ["auto", "extractive", "smollm2"]
    reply = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
    )
    assert [a["tier"] for a in reply.model_extra["supportgraph"]["attempts"]] == ["smollm2"]


def test_cost_report_counts_every_attempt(client: openai.OpenAI, graph: RunningGraph) -> None:
    client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "How do I export notes?"}]
    )
    report = httpx.get(f"{graph.base_url}/v1/costs", params={"tenant_id": TENANT}, timeout=30).json()
    tiers = {row["tier"]: row for row in report["llm_by_tier"]}
    assert tiers["extractive"]["attempts"] >= 1 and report["llm"]["requests"] >= 1
    assert report["llm"]["cost_usd"] == 0.0  # offline tiers bill nothing
    other = httpx.get(f"{graph.base_url}/v1/costs", params={"tenant_id": "someone-else"}, timeout=30).json()
    assert other["attempts"] == 0 and other["llm_by_tier"] == []


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, {}, "tenant"),
        ({"messages": [{"role": "user", "content": "hi"}], "tenant_id": "Bad_Tenant"}, {}, "invalid tenant"),
        ({"messages": []}, {"X-Tenant-Id": TENANT}, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, {"X-Tenant-Id": TENANT}, "last message"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9"},
            {"X-Tenant-Id": TENANT},
            "unknown tier",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}],
                    }
                ]
            },
            {"X-Tenant-Id": TENANT},
            "data URL",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is on screen?"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"},
                            },
                        ],
                    }
                ]
            },
            {"X-Tenant-Id": TENANT},
            "not a readable image",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "temperature": 9},
            {"X-Tenant-Id": TENANT},
            "temperature",
        ),
    ],
)
def test_bad_chat_requests_get_clear_422s(
    graph: RunningGraph, body: dict, headers: dict, needle: str
) -> None:
    response = httpx.post(f"{graph.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert response.status_code == 422, response.text
    assert needle.lower() in response.text.lower()
