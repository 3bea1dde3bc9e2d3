"""The graph on a real Ray Serve (session cluster): HTTP end to end, sticky routing across two replicas,
batching across streams, live reconfiguration, and the deployment handle the LiveKit agent uses."""

from __future__ import annotations

import asyncio
import io
import time
import uuid

import httpx
import numpy as np
import pytest
from PIL import Image
from ray import serve

from serve_app.costs.pricing import default_pricing
from serve_app.frames.planes import MEDIA_TYPE as PLANES_TYPE
from serve_app.frames.planes import Planes, to_planes
from serve_app.frames.service import DedupService
from serve_app.handles import HandleFrameBackend
from serve_app.runtime import RunningGraph, load_builder
from serve_app.settings import Settings
from supportgraph_tools.frames.synthetic import ClipFrame, ClipSpec, EventClip, EventClipSpec, ScreenShareClip
from tests import images
from tests.conftest import GRAPH_ARMS
from tests.wire import KnowledgeWire

pytestmark = pytest.mark.ray


def dedup_handle(graph: RunningGraph):
    return serve.get_deployment_handle("FrameDedup", app_name=graph.app_name)


def png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def test_health_and_docs(graph: RunningGraph) -> None:
    assert httpx.get(f"{graph.base_url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{graph.base_url}/docs").status_code == 200


def offer_jpeg(client: httpx.Client, sid: str, frame: ClipFrame, local: DedupService) -> dict:
    """Post one generated frame as JPEG; its decision must equal the Ray-free service's."""
    got = (
        client.post(
            f"/v1/streams/{sid}/frames",
            params={"ts": frame.ts, "speaking": frame.is_speaking},
            content=frame.jpeg,
            headers={"content-type": "image/jpeg"},
        )
        .raise_for_status()
        .json()
    )
    assert got == asyncio.run(local.offer(sid, frame.rgb, frame.is_speaking, frame.ts)).to_dict()
    return got


def test_http_verdicts_equal_the_in_process_service(graph: RunningGraph) -> None:
    """A generated screen share over HTTP gets exactly the verdicts the Ray-free service gives."""
    clip = list(ScreenShareClip(ClipSpec(seed=3, width=640, height=360, duration_s=6)).frames())
    local = DedupService()
    sid = "tenant_http_eq-1.screen"
    with httpx.Client(base_url=graph.base_url, timeout=30) as client:
        for frame in clip:
            offer_jpeg(client, sid, frame, local)
        stats = client.get(f"/v1/streams/{sid}/stats").json()
    assert stats["stream"]["total"] == len(clip)
    assert stats["stream"]["processed"] >= 1 and stats["stream"]["throttled"] > 0


def test_region_changes_through_the_graph_say_why_and_where(graph: RunningGraph) -> None:
    """An inline error and a banner that pHash does not see are sent by the region signal over HTTP, with
    the changed box in frame pixels, exactly as the Ray-free service decides them."""
    spec = EventClipSpec(seed=0, width=640, height=480, duration_s=6, kinds=("inline_error", "banner"))
    clip = EventClip(spec)
    local = DedupService()
    sid = "tenant_http_region-1.screen"
    sent = []
    with httpx.Client(base_url=graph.base_url, timeout=30) as client:
        for frame in clip.frames():
            if (got := offer_jpeg(client, sid, frame, local))["send"]:
                sent.append(got)
    regions = [d for d in sent if d["reason"] == "region"]
    assert sent[0]["reason"] == "first" and len(regions) >= 2
    for d in regions:
        x, y, w, h = d["box"]
        assert 0 <= x < x + w <= 640 and 0 <= y < y + h <= 480 and d["distance"] <= 10
    banner = next(e for e in clip.events if e.kind == "banner")
    assert any(d["box"][2] == 640 and d["ts"] - banner.ts <= 0.5 for d in regions)  # full-width banner


def test_batched_frames_through_the_graph_decide_as_one_at_a_time(graph: RunningGraph) -> None:
    """The fast path: `offer_many` through the handle (one [B, H, W, 3] array per call, concurrent calls of
    several streams) and `/frames/batch` over HTTP give exactly the Ray-free service's decisions, one
    frame at a time, regions and boxes included."""
    spec = EventClipSpec(seed=0, width=640, height=480, duration_s=6, kinds=("inline_error", "banner"))
    clip = EventClip(spec)
    frames = list(clip.frames())
    rgb = np.stack([f.rgb for f in frames])
    ts = [f.ts for f in frames]
    speaking = [f.is_speaking for f in frames]
    local = DedupService()
    expected = [
        asyncio.run(local.offer("tenant_fast_x", f.rgb, f.is_speaking, f.ts)).to_dict() for f in frames
    ]
    assert any(d["reason"] == "region" for d in expected)
    handle = dedup_handle(graph)

    async def one_stream(sid: str, step: int) -> list[dict]:
        out = []
        for lo in range(0, len(frames), step):
            out += await handle.offer_many.remote(
                stream_id=sid,
                frames=rgb[lo : lo + step],
                is_speaking=speaking[lo : lo + step],
                ts=ts[lo : lo + step],
            )
        return out

    async def streams() -> list[list[dict]]:
        return await asyncio.gather(*(one_stream(f"tenant_fast_g{n}", 8 + 5 * n) for n in range(3)))

    for n, got in enumerate(asyncio.run(streams())):
        assert got == [{**d, "stream_id": f"tenant_fast_g{n}"} for d in expected]
    sid = "tenant_fast_http.screen"
    got = []
    with httpx.Client(base_url=graph.base_url, timeout=60) as client:
        for lo in range(0, len(frames), 16):
            part = frames[lo : lo + 16]
            r = client.post(
                f"/v1/streams/{sid}/frames/batch",
                params={
                    "ts": ts[lo : lo + 16],
                    "speaking": speaking[lo : lo + 16],
                    "sizes": [len(f.jpeg) for f in part],
                },
                content=b"".join(f.jpeg for f in part),
                headers={"content-type": "image/jpeg"},
            )
            got += r.raise_for_status().json()["decisions"]
    assert got == [{**d, "stream_id": sid} for d in expected]
    # planes (luma + 2x2 colour sums), through the handle and over HTTP: the same decisions again
    planes = to_planes(rgb)

    async def planes_stream() -> list[dict]:
        out, backend = [], HandleFrameBackend(handle)
        for lo in range(0, len(frames), 12):
            part = Planes(planes.luma[lo : lo + 12], planes.color[lo : lo + 12])
            out += await backend.offer_planes(
                "tenant_fast_p.screen", part, speaking[lo : lo + 12], ts[lo : lo + 12]
            )
        return out

    got = asyncio.run(planes_stream())
    assert got == [{**d, "stream_id": "tenant_fast_p.screen"} for d in expected]
    got = []
    with httpx.Client(base_url=graph.base_url, timeout=60) as client:
        for lo in range(0, len(frames), 16):
            r = client.post(
                "/v1/streams/tenant_fast_hp.screen/frames/batch",
                params={
                    "ts": ts[lo : lo + 16],
                    "speaking": speaking[lo : lo + 16],
                    "width": 640,
                    "height": 480,
                },
                content=Planes(planes.luma[lo : lo + 16], planes.color[lo : lo + 16]).to_bytes(),
                headers={"content-type": PLANES_TYPE},
            )
            got += r.raise_for_status().json()["decisions"]
    assert got == [{**d, "stream_id": "tenant_fast_hp.screen"} for d in expected]


def test_bad_input_through_the_graph_is_4xx(graph: RunningGraph) -> None:
    with httpx.Client(base_url=graph.base_url) as client:
        bad_id = client.post(
            "/v1/streams/room-without-tenant/frames", content=b"x", headers={"content-type": "image/png"}
        )
        corrupt = client.post(
            "/v1/streams/tenant_a_b/frames",
            content=b"\x89PNG\r\n\x1a\nbroken",
            headers={"content-type": "image/png"},
        )
    assert bad_id.status_code == 400 and "stream id" in bad_id.json()["detail"]
    assert corrupt.status_code == 422


def test_each_stream_stays_on_one_replica(graph: RunningGraph) -> None:
    # rendezvous hashing over random replica ids: 8 streams all land on one of 2 replicas in 1 run of
    # 128 (seen once in CI); 32 streams make that 1 in 2 billion
    frame = png(images.text(90, 160, 5))
    owners: dict[str, set[str]] = {}
    with httpx.Client(base_url=graph.base_url) as client:
        for round_ in range(4):
            for i in range(32):
                sid = f"tenant_sticky_room-{i}"
                client.post(
                    f"/v1/streams/{sid}/frames",
                    params={"ts": round_},
                    content=frame,
                    headers={"content-type": "image/png"},
                ).raise_for_status()
                owners.setdefault(sid, set()).add(client.get(f"/v1/streams/{sid}/stats").json()["replica"])
        totals = {sid: client.get(f"/v1/streams/{sid}/stats").json()["stream"] for sid in owners}
    assert all(len(o) == 1 for o in owners.values()), owners
    assert len(set().union(*owners.values())) == 2, "both replicas own streams"
    # state stayed whole: every stream saw all 4 frames, 1 processed then 3 duplicates
    assert all((t["total"], t["processed"], t["duplicate"]) == (4, 1, 3) for t in totals.values())


def test_frames_of_many_streams_are_hashed_in_batches(graph: RunningGraph) -> None:
    handle = dedup_handle(graph)
    frames = [images.noise(120, 160, seed=i) for i in range(16)]

    async def burst() -> list[dict]:
        calls = [
            handle.offer.remote(stream_id=f"tenant_batch_s{i}", frame=frames[i], is_speaking=True, ts=0.0)
            for i in range(16)
        ]
        return await asyncio.gather(*calls)

    decisions = asyncio.run(burst())
    assert [d["verdict"] for d in decisions] == ["processed"] * 16
    batch = max(
        dedup_handle(graph).stats.remote(stream_id=f"tenant_batch_s{i}").result()["mean_batch_size"]
        for i in range(16)
    )
    assert batch > 1.0


def test_handle_api_for_the_agent(graph: RunningGraph) -> None:
    handle = dedup_handle(graph)
    frame = images.gradient(72, 128, 1)
    first = handle.offer.remote(
        stream_id="tenant_agent_r.cam", frame=frame, is_speaking=False, ts=1.0
    ).result()
    again = handle.offer.remote(
        stream_id="tenant_agent_r.cam", frame=frame, is_speaking=False, ts=2.0
    ).result()
    assert (first["verdict"], again["verdict"], again["distance"]) == ("processed", "duplicate", 0)
    closed = handle.close.remote(stream_id="tenant_agent_r.cam").result()
    assert closed["closed"] and closed["stream"]["total"] == 2


def test_user_config_reaches_the_replicas(graph: RunningGraph, graph_settings: Settings) -> None:
    """Thresholds travel as user_config. (A Python serve.run redeploy restarts replicas; `serve deploy`
    of a config whose only change is user_config reconfigures them in place: Ray's own rule.)"""
    handle = dedup_handle(graph)
    sid = "tenant_live_r"
    build = load_builder()
    loose = graph_settings.model_copy(
        update={"dedup": graph_settings.dedup.model_copy(update={"hamming_threshold": 64})}
    )
    try:
        serve.run(build(loose), name=graph.app_name, route_prefix="/")
        first = handle.offer.remote(stream_id=sid, frame=images.noise(64, 64, 1), ts=0.0).result()
        other = handle.offer.remote(stream_id=sid, frame=images.flat(64, 64, (0, 0, 0)), ts=1.0).result()
        assert (first["verdict"], other["verdict"]) == ("processed", "duplicate")  # 64 bits: all alike
    finally:
        serve.run(build(graph_settings), name=graph.app_name, route_prefix="/")
    after = handle.offer.remote(stream_id="tenant_live_s", frame=images.noise(64, 64, 1), ts=0.0).result()
    again = handle.offer.remote(
        stream_id="tenant_live_s", frame=images.flat(64, 64, (0, 0, 0)), ts=1.0
    ).result()
    assert (after["verdict"], again["verdict"]) == ("processed", "processed")


def test_a_killed_replica_costs_at_most_two_extra_frames(graph: RunningGraph) -> None:
    """Kill the replica that owns a stream mid-stream: Serve replaces it, every frame still gets an
    answer, and the stream re-sends at most two frames (one per move: survivor, then replacement)."""
    import time

    import ray

    handle = dedup_handle(graph)
    sid, frame = "tenant_chaos_r.screen", images.text(90, 160, 11)
    verdicts = [handle.offer.remote(stream_id=sid, frame=frame, ts=0.0).result()["verdict"]]
    owner = handle.stats.remote(stream_id=sid).result()["replica"]
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    victim = next(n for n in names if "FrameDedup" in n and n.endswith(owner))
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)

    def running() -> int:
        status = serve.status().applications[graph.app_name].deployments["FrameDedup"]
        return status.replica_states.get("RUNNING", 0)

    deadline, ts, replicas, settled = time.monotonic() + 60, 1.0, set(), 0
    while time.monotonic() < deadline and settled < 10:  # until the replacement has served a while
        verdicts.append(handle.offer.remote(stream_id=sid, frame=frame, ts=ts).result()["verdict"])
        replicas.add(handle.stats.remote(stream_id=sid).result()["replica"])
        settled = settled + 1 if running() == 2 and ts > 5 else 0
        ts += 1.0
        time.sleep(0.1)
    assert settled == 10, "Serve did not replace the killed replica within 60 s"
    assert owner not in replicas
    assert verdicts.count("processed") <= 3, verdicts
    assert set(verdicts) <= {"processed", "duplicate"}


def test_knowledge_search_through_the_graph(graph: RunningGraph, graph_settings: Settings) -> None:
    """Ingest the sample help center, then ask through HTTP: cited passages from the right article."""
    from serve_app import samples
    from serve_app.db.database import Database
    from serve_app.knowledge.factory import build_embedder
    from serve_app.knowledge.ingest import ingest_path

    async def ingest() -> None:
        async with Database.of(graph_settings) as db:
            await ingest_path(
                db, build_embedder(graph_settings.knowledge.embedder), samples.HELP_CENTER, "graph-kb"
            )

    asyncio.run(ingest())
    with httpx.Client(base_url=graph.base_url, timeout=60) as client:
        body = {"tenant_id": "graph-kb", "query": "How long do deleted notes stay in the trash?"}
        answer = client.post("/v1/knowledge/search", json=body).raise_for_status().json()
        again = client.post("/v1/knowledge/search", json=body).raise_for_status().json()
        other = client.post("/v1/knowledge/search", json={**body, "tenant_id": "graph-empty"}).json()
        bad = client.post("/v1/knowledge/search", json={**body, "tenant_id": "Not Valid"})
        empty = client.post("/v1/knowledge/search", json={**body, "query": ""})
        stats = client.get("/v1/knowledge/stats").json()
    assert answer["passages"][0]["source"] == "export-and-import.md"
    assert answer["passages"][0]["citation"].startswith("[1] ") and answer["arm"] == "learned"
    assert again["passages"] == answer["passages"]
    assert other["passages"] == []  # another tenant sees nothing
    assert bad.status_code == 422 and "tenant" in bad.json()["detail"]
    assert empty.status_code == 422
    assert stats["embeddings"]["hits"] >= 1 and stats["arms"]["learned"]["requests"] >= 2


def test_a_billed_rerankers_searches_reach_the_tenants_costs(
    graph: RunningGraph, graph_settings: Settings
) -> None:
    """A tenant on the Cohere arm: each search's billed unit goes from the Reranker replica back to
    KnowledgeBase, into its cost ledger and the tenant's cost report; other tenants are not billed."""
    from serve_app import samples
    from serve_app.db.database import Database
    from serve_app.knowledge.factory import build_embedder
    from serve_app.knowledge.ingest import ingest_path
    from serve_app.knowledge.rerankers import assign_arm

    tenant = "graph-billed-23"
    assert assign_arm(GRAPH_ARMS, tenant) == "cohere"

    async def ingest() -> None:
        async with Database.of(graph_settings) as db:
            await ingest_path(
                db, build_embedder(graph_settings.knowledge.embedder), samples.HELP_CENTER, tenant
            )

    asyncio.run(ingest())
    searches_before = KnowledgeWire.searches_billed
    with httpx.Client(base_url=graph.base_url, timeout=60) as client:
        body = {"tenant_id": tenant, "query": "How do I export my notes?"}
        answers = [client.post("/v1/knowledge/search", json=body).raise_for_status().json() for _ in range(3)]
        # a search returns once what it billed is written: the report right after it has all three
        report = client.get("/v1/costs", params={"tenant_id": tenant}).raise_for_status().json()
        rerank = next((r for r in report["by_service_provider"] if r["service"] == "rerank"), None)
        kb_only = client.get("/v1/costs", params={"tenant_id": "graph-kb"}).raise_for_status().json()
    assert {a["arm"] for a in answers} == {"cohere"} and answers[0]["passages"]
    assert KnowledgeWire.searches_billed - searches_before == 3
    assert rerank is not None and rerank["provider"] == "cohere" and rerank["attempts"] == 3
    assert rerank["cost_usd"] == pytest.approx(3 * default_pricing()["rerank-v3.5"].per_search)
    assert all(r["service"] != "rerank" for r in kb_only["by_service_provider"])  # learned arm: no bill

    # a chat turn's retrieval is billed under the routed request's id, beside its LLM attempts
    with httpx.Client(base_url=graph.base_url, timeout=120) as client:
        turn = (
            client.post(
                "/v1/chat/completions",
                json={
                    "model": "auto",
                    "messages": [{"role": "user", "content": "How do I export my notes?"}],
                },
                headers={"X-Tenant-Id": tenant},
            )
            .raise_for_status()
            .json()
        )
    request_id = uuid.UUID(turn["supportgraph"]["request_id"])

    async def services_of_request() -> set[str]:
        async with Database.of(graph_settings) as db, db.tenant(tenant) as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT service FROM cost_events WHERE request_id = $1", request_id
            )
        return {r["service"] for r in rows}

    deadline, joined = time.monotonic() + 30, set()
    while time.monotonic() < deadline and joined != {"llm", "rerank"}:
        joined = asyncio.run(services_of_request())
        time.sleep(0.3)
    assert joined == {"llm", "rerank"}


def test_the_adapted_arm_ranks_with_each_tenants_own_model(
    graph: RunningGraph, graph_settings: Settings
) -> None:
    """A tenant with a trained reranker is ranked by it in the Reranker replica (its model loaded
    through Serve's model multiplexing, the tenant as model id): the same scores as the model loaded
    here. A tenant without one gets the learned arm's order, not an error."""
    from serve_app import samples
    from serve_app.db.database import Database
    from serve_app.knowledge.adapt import AdaptConfig, adapt_tenant
    from serve_app.knowledge.factory import build_embedder
    from serve_app.knowledge.ingest import ingest_path
    from serve_app.knowledge.rerankers import Candidate
    from serve_app.knowledge.rerankers.adapted import AdaptedReranker

    adapted, plain = "graph-adapted", "graph-unadapted"
    tiny = AdaptConfig(questions=20, negatives=2, max_length=64, holdout=2, checkpoint_every=99)

    async def prepare() -> None:
        embedder = build_embedder(graph_settings.knowledge.embedder)
        async with Database.of(graph_settings) as db:
            for tenant in (adapted, plain):
                await ingest_path(db, embedder, samples.HELP_CENTER, tenant)
            await adapt_tenant(db, embedder.inner, graph_settings.state_dir, adapted, tiny, max_steps=1)

    asyncio.run(prepare())
    kb = serve.get_deployment_handle("KnowledgeBase", app_name=graph.app_name)
    question = "How long do deleted notes stay in the trash?"
    with_model = kb.search.remote(adapted, question, arm="adapted").result()
    without = kb.search.remote(plain, question, arm="adapted").result()
    learned = kb.search.remote(plain, question, arm="learned").result()
    assert with_model["arm"] == "adapted" and with_model["passages"]
    assert without["arm"] == "adapted" and without["passages"]
    assert [p["source"] for p in without["passages"]] == [p["source"] for p in learned["passages"]]

    reranker = serve.get_deployment_handle("Reranker", app_name=graph.app_name)
    texts = ["Deleted notes stay in the trash for 30 days.", "Change your avatar in settings."]
    candidates = [Candidate(t) for t in texts]
    served, _ = (
        reranker.options(multiplexed_model_id=adapted)
        .rerank.remote("adapted", question, candidates, 2)
        .result()
    )
    local, _ = AdaptedReranker(graph_settings.state_dir / "models").rerank_for(
        adapted, question, candidates, 2
    )
    assert [i for i, _ in served] == [i for i, _ in local]
    assert [s for _, s in served] == pytest.approx([s for _, s in local], abs=1e-4)
    fallback, _ = (
        reranker.options(multiplexed_model_id=plain)
        .rerank.remote("adapted", question, candidates, 2)
        .result()
    )
    assert fallback == [(0, 1.0), (1, 0.5)]  # no model, no evidence: the fused order
