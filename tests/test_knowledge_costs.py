"""Billed knowledge calls (an API embedder's tokens, Cohere's search units) are priced from the pricing
table and recorded in the tenant's cost ledger: at ingest, per search, and split fairly over a batch."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.costs.ledger import CostLedger, cost_report
from serve_app.costs.pricing import default_pricing
from serve_app.costs.usage import TenantBill, Usage
from serve_app.knowledge.cache import CachedEmbedder
from serve_app.knowledge.embedders import create_embedder
from serve_app.knowledge.factory import build_retriever
from serve_app.knowledge.ingest import ingest_path
from serve_app.knowledge.rerankers import Candidate, create_reranker
from serve_app.samples import HELP_CENTER
from serve_app.settings import KnowledgeSettings, RerankerSettings, load_settings
from tests.conftest import LiveDB
from tests.wire import KnowledgeWire, serving

EMBED_PRICE = default_pricing()["text-embedding-3-small"].input_per_mtok / 1e6
SEARCH_PRICE = default_pricing()["rerank-v3.5"].per_search


def test_a_batch_bill_splits_exactly_in_proportion() -> None:
    shares = Usage("embeddings", "text-embedding-3-small", input_tokens=10).split([1, 1, 1])
    assert [s.input_tokens for s in shares] == [4, 3, 3] or sorted(s.input_tokens for s in shares) == [
        3,
        3,
        4,
    ]
    assert sum(s.input_tokens for s in shares) == 10
    big = Usage("embeddings", "m", input_tokens=1000).split([1, 3])
    assert [s.input_tokens for s in big] == [250, 750]
    with pytest.raises(ValueError, match="weights"):
        Usage("embeddings", "m", 5).split([0, 0])
    with pytest.raises(ValueError, match="negative"):
        Usage("rerank", "m", searches=-1)


def test_usage_is_priced_from_the_table() -> None:
    event = Usage("rerank", "rerank-v3.5", searches=3).event("t1", default_pricing())
    assert (event.service, event.provider, event.model) == ("rerank", "cohere", "rerank-v3.5")
    assert event.cost_usd == pytest.approx(3 * SEARCH_PRICE) and SEARCH_PRICE > 0
    with pytest.raises(KeyError, match="no price"):
        Usage("embeddings", "unpriced-model", 10).event("t1", default_pricing())


def test_billed_knowledge_models_must_be_priced() -> None:
    def cohere_arm(model: str | None) -> dict:
        arm = {"backend": "cohere", **({"model": model} if model else {})}
        return {"rerankers": {"c": arm}, "ab_weights": {"c": 1.0}}

    with pytest.raises(ValidationError, match=r"missing from the pricing table: \['unpriced-rerank'\]"):
        load_settings(knowledge=cohere_arm("unpriced-rerank"))
    api = {"backend": "openai-compatible", "model": "my-embed", "base_url": "http://x"}
    with pytest.raises(ValidationError, match=r"missing from the pricing table: \['my-embed'\]"):
        load_settings(knowledge={"embedder": api})
    assert load_settings(knowledge=cohere_arm(None))  # the default rerank-v3.5 is priced
    assert load_settings(knowledge={"embedder": {**api, "model": "text-embedding-3-small"}})


def test_wire_usage_is_read_and_cache_hits_cost_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CO_API_KEY", "k")
    with serving(KnowledgeWire) as url:
        api = create_embedder(
            "openai-compatible", model="text-embedding-3-small", dim=384, base_url=f"{url}/v1"
        )
        cached = CachedEmbedder(api)
        before = KnowledgeWire.tokens_billed
        _, each = cached.embed_each(["reset my password", "export notes", "reset my password", "a b c d"])
        billed_now = KnowledgeWire.tokens_billed - before
        _, again = cached.embed_each(["export notes", "new words here"])
        order, rerank_usage = create_reranker("cohere", base_url=url).rerank(
            "export notes", [Candidate("billing"), Candidate("export your notes"), Candidate("notes")], 2
        )
    assert billed_now == 9  # three distinct texts: 3 + 2 + 4 words
    assert each[2] is None and sum(u.input_tokens for u in each if u) == billed_now  # a repeat is free
    assert again[0] is None and again[1] == Usage("embeddings", "text-embedding-3-small", 3)  # hit, miss
    assert order[0][0] == 1 and rerank_usage == Usage("rerank", "rerank-v3.5", searches=1)


def test_ingest_and_search_costs_reach_the_tenant_ledger(
    live_db: LiveDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CO_API_KEY", "k")
    tenant = "billed-kb"

    async def scenario(url: str) -> tuple[int, int, object, object, list[Usage]]:
        embedder = CachedEmbedder(
            create_embedder(
                "openai-compatible", model="text-embedding-3-small", dim=384, base_url=f"{url}/v1"
            )
        )
        bill = TenantBill(CostLedger(live_db.db), default_pricing(), tenant)
        tokens_before = KnowledgeWire.tokens_billed
        await ingest_path(live_db.db, embedder, HELP_CENTER, tenant, bill=bill)
        ingest_tokens = KnowledgeWire.tokens_billed - tokens_before
        again = await ingest_path(live_db.db, embedder, HELP_CENTER, tenant, bill=bill)
        assert again.unchanged == again.files and again.written == 0  # nothing re-embedded, nothing billed
        await bill.ledger.close()
        after_ingest = await cost_report(live_db.db, tenant)
        cohere = RerankerSettings(backend="cohere", base_url=url)
        knowledge = KnowledgeSettings(rerankers={"cohere": cohere}, ab_weights={"cohere": 1.0})
        retriever = build_retriever(live_db.db, knowledge, embedder)
        result = await retriever.search(tenant, "How do I export my notes?")
        for usage in result.usage:
            bill(usage)
        await bill.ledger.close()
        return ingest_tokens, bill.calls, after_ingest, await cost_report(live_db.db, tenant), result.usage

    with serving(KnowledgeWire) as url:
        ingest_tokens, calls, after_ingest, report, usage = live_db.run(scenario(url))
    by_service = {row["service"]: row for row in report.rows}
    assert ingest_tokens > 0 and after_ingest.rows[0]["input_tokens"] == ingest_tokens
    assert after_ingest.rows[0]["provider"] == "openai"
    assert [u.service for u in usage] == ["embeddings", "rerank"]
    assert by_service["embeddings"]["input_tokens"] == ingest_tokens + usage[0].input_tokens
    assert by_service["rerank"]["provider"] == "cohere" and by_service["rerank"]["attempts"] == 1
    assert by_service["rerank"]["cost_usd"] == pytest.approx(SEARCH_PRICE)
    assert report.total_usd == pytest.approx(
        SEARCH_PRICE + by_service["embeddings"]["input_tokens"] * EMBED_PRICE
    )
    assert calls == after_ingest.attempts + 2
