"""Knowledge pieces without a database: chunking, RRF, the embedding cache, A/B arms, metrics, and the
rerank backends (Cohere SDK against a local server speaking its wire format; a tiny local cross-encoder)."""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from pydantic import ValidationError

from serve_app.knowledge.cache import CachedEmbedder
from serve_app.knowledge.chunking import Document, chunk_document, load_document
from serve_app.knowledge.fusion import rrf
from serve_app.knowledge.rerankers import Candidate, NoReranker, assign_arm, create_reranker
from serve_app.samples import HELP_CENTER
from serve_app.settings import load_settings
from supportgraph_tools.knowledge.evaluate import corpus_id, metrics_for
from tests.wire import reply_json, running, serving

SAMPLES = HELP_CENTER


def candidates(*texts: str) -> list[Candidate]:
    return [Candidate(t) for t in texts]


def test_markdown_html_and_text_load_with_titles_and_clean_text() -> None:
    md = load_document(SAMPLES / "billing-and-plans.md", SAMPLES)
    html = load_document(SAMPLES / "integrations.html", SAMPLES)
    txt = load_document(SAMPLES / "mobile-app.txt", SAMPLES)
    assert (md.source, md.title) == ("billing-and-plans.md", "Billing and plans")
    assert html.title == "Integrations" and "Home / Help" not in html.text and "## Slack" in html.text
    assert txt.title == "mobile app"


def test_aws_style_markdown_escapes_and_anchors_are_removed(tmp_path: Path) -> None:
    f = tmp_path / "a.md"
    f.write_text('# Using C\\# with \\.NET<a name="x"></a>\n\nSet `--flag` \\(optional\\)\\.\n')
    doc = load_document(f, tmp_path)
    assert doc.title == "Using C# with .NET" and "Set `--flag` (optional)." in doc.text


def test_chunks_follow_headings_respect_size_and_overlap() -> None:
    body = "\n\n".join(" ".join(f"w{p}_{i}" for i in range(70)) for p in range(6))
    doc = Document("d.md", "Guide", f"intro words here\n\n## Setup\n\n{body}\n\n## Other\n\nshort tail")
    chunks = chunk_document(doc, max_words=150, overlap=20)
    assert chunks[0].heading == "Guide" and chunks[0].content == "intro words here"
    setup = [c for c in chunks if c.heading == "Guide > Setup"]
    assert len(setup) >= 3 and all(len(c.content.split()) <= 150 for c in setup)
    assert setup[1].content.split()[:20] == setup[0].content.split()[-20:]  # overlap carried
    assert chunks[-1].heading == "Guide > Other" and [c.ordinal for c in chunks] == list(range(len(chunks)))
    words = {w for c in setup for w in c.content.split()}
    assert words == set(body.split())  # nothing lost


def test_chunking_never_loops_on_long_paragraphs() -> None:
    doc = Document("d.md", "T", " ".join(["word"] * 5000) + "\n\n" + " ".join(["x"] * 170))
    chunks = chunk_document(doc, max_words=180, overlap=30)
    assert 25 < len(chunks) < 40


def test_rrf_fuses_and_breaks_ties_by_best_rank() -> None:
    fused = rrf([["a", "b", "c"], ["c", "a", "d"]], k=60)
    assert [item for item, _ in fused] == ["a", "c", "b", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    weighted = rrf([["a"], ["b"]], weights=[1.0, 2.0])
    assert weighted[0][0] == "b"
    with pytest.raises(ValueError):
        rrf([["a"]], weights=[1.0, 2.0])


class CountingEmbedder:
    name, dim = "count", 4

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed(self, texts: list[str]) -> tuple[np.ndarray, None]:
        self.seen += texts
        return np.array([[len(t), 1, 0, 0] for t in texts], np.float32), None


def test_query_cache_hits_and_evicts() -> None:
    inner = CountingEmbedder()
    cache = CachedEmbedder(inner, maxsize=2)
    cache.embed(["a", "bb", "a"])
    assert inner.seen == ["a", "bb"] and (cache.hits, cache.misses) == (0, 3)
    np.testing.assert_array_equal(cache.embed(["bb"])[0][0], [2, 1, 0, 0])
    assert cache.hits == 1 and cache.hit_rate == pytest.approx(0.25)
    cache.embed(["ccc"])  # evicts "a", the least recently used
    cache.embed(["a"])
    assert inner.seen == ["a", "bb", "ccc", "a"]


def test_ab_assignment_is_sticky_and_weighted() -> None:
    arms = {"bge": 1.0, "cohere": 3.0}
    assert all(assign_arm(arms, f"tenant-{i}") == assign_arm(arms, f"tenant-{i}") for i in range(50))
    share = Counter(assign_arm(arms, f"req-{i}") for i in range(4000))
    assert 800 < share["bge"] < 1200 and share["bge"] + share["cohere"] == 4000
    assert assign_arm({"only": 1.0}, "x") == "only"
    with pytest.raises(ValueError):
        assign_arm({"a": 0.0}, "x")


def test_knowledge_settings_reject_unknown_arms() -> None:
    with pytest.raises(ValidationError, match="unknown rerankers"):
        load_settings(knowledge={"ab_weights": {"ghost": 1.0}})


def test_metrics_for_a_ranking() -> None:
    m = metrics_for(["x", "gold", "y"], {"gold"})
    assert (m["R@1"], m["R@5"], m["MRR@10"]) == (0.0, 1.0, 0.5)
    assert m["nDCG@10"] == pytest.approx(1 / np.log2(3))
    assert corpus_id("amazon-ec2-user-guide/EBSEncryption.md") == "amazon-ec2-user-guide/EBSEncryption"


def test_no_reranker_keeps_order() -> None:
    assert [i for i, _ in NoReranker().rerank("q", candidates("a", "b", "c"), 2)[0]] == [0, 1]


class CohereWire(BaseHTTPRequestHandler):
    """Speaks Cohere's v2 rerank: POST /v2/rerank {model, query, documents, top_n} -> results by relevance."""

    requests: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        CohereWire.requests.append({"path": self.path, "auth": self.headers.get("authorization"), **body})
        words = set(body["query"].lower().split())
        scores = [len(words & set(d.lower().split())) / (1 + len(words)) for d in body["documents"]]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: body.get("top_n") or len(scores)]
        payload = {
            "id": "local",
            "results": [{"index": i, "relevance_score": scores[i]} for i in order],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        }
        reply_json(self, payload)

    def log_message(self, *_: object) -> None:
        pass


def test_cohere_reranker_speaks_the_v2_wire_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CO_API_KEY", "test-key")
    with serving(CohereWire) as url:
        reranker = create_reranker("cohere", model="rerank-v3.5", base_url=url)
        order, _ = reranker.rerank(
            "refund annual plan", candidates("mobile app crash", "annual plan refund rules", "refund"), 2
        )
    assert [i for i, _ in order] == [1, 2]
    sent = CohereWire.requests[-1]
    assert sent["path"] == "/v2/rerank" and sent["model"] == "rerank-v3.5" and sent["top_n"] == 2
    assert sent["auth"] == "Bearer test-key"


def test_cohere_without_a_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CO_API_KEY", raising=False)
    with pytest.raises(ValueError, match="CO_API_KEY"):
        create_reranker("cohere")


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised 2-layer BERT cross-encoder saved locally (no hub)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-ce")
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *sorted(
            {
                w
                for w in [
                    "refund",
                    "annual",
                    "plan",
                    "mobile",
                    "app",
                    "crash",
                    "rules",
                    "sync",
                    "password",
                    "reset",
                ]
            }
        ),
    ]
    (path / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    return str(path)


def test_cross_encoder_reranker_loads_a_local_model(tiny_cross_encoder: str) -> None:
    reranker = create_reranker("cross-encoder", model=tiny_cross_encoder)
    docs = candidates("refund rules", "mobile app crash", "sync password reset", "annual plan")
    order, _ = reranker.rerank("refund annual plan", docs, 3)
    assert len(order) == 3 and len({i for i, _ in order}) == 3
    scores = [s for _, s in order]
    assert scores == sorted(scores, reverse=True)
    assert order == reranker.rerank("refund annual plan", docs, 3)[0]  # deterministic


class OpenAIEmbeddingsWire(BaseHTTPRequestHandler):
    """Speaks POST /v1/embeddings: {model, input: [..]} -> {data: [{index, embedding}], usage}."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0]}
            for i, t in enumerate(texts)
        ]
        usage = {"prompt_tokens": 1, "total_tokens": 1}
        reply_json(
            self, {"object": "list", "model": body["model"], "data": list(reversed(data)), "usage": usage}
        )

    def log_message(self, *_: object) -> None:
        pass


def test_openai_compatible_embedder_over_the_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.knowledge.embedders import create_embedder

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    with serving(OpenAIEmbeddingsWire) as url:
        embedder = create_embedder("openai-compatible", model="embed-small", dim=3, base_url=f"{url}/v1")
        vectors, _ = embedder.embed(["a", "abcd"])
        wrong = create_embedder("openai-compatible", model="m", dim=5, base_url=f"{url}/v1")
        with pytest.raises(ValueError, match="shape"):
            wrong.embed(["a"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    assert vectors[1, 0] > vectors[0, 0]  # rows put back in input order, then normalised


def test_evidence_ranks_and_shares_from_both_lists() -> None:
    from serve_app.knowledge.rerankers.learned import evidence_for

    ev = evidence_for([("a", 10.0), ("b", 5.0)], [("b", 0.8), ("c", 0.6)])
    assert ev["a"].lexical_rank == 1 and ev["a"].dense_rank is None
    assert ev["a"].lexical_share == 1.0 and ev["a"].dense_share == 0.6 / 0.8  # missed: the list's floor
    assert (ev["b"].lexical_rank, ev["b"].dense_rank, ev["b"].lexical_share) == (2, 1, 0.5)
    assert ev["c"].lexical_share == 0.0 and ev["c"].features()[0] == 0.0
    assert ev["b"].features()[1] == 1.0 and ev["b"].features()[0] == pytest.approx(1 / np.log2(3))


def test_pairwise_fit_learns_which_signal_marks_the_relevant_candidate() -> None:
    """Synthetic queries where relevance follows the dense rank and the lexical rank is noise: the fit
    must weigh dense over lexical, and rank the relevant candidate first on unseen queries."""
    from serve_app.knowledge.rerankers.learned import Evidence, LearnedFusionReranker, fit_pairwise

    rng = np.random.default_rng(0)

    def query() -> tuple[list[Evidence], list[bool]]:
        lex, dense = rng.permutation(10) + 1, rng.permutation(10) + 1
        ev = [Evidence(int(lex[i]), int(dense[i]), 1 / lex[i], 1 - dense[i] / 20) for i in range(10)]
        return ev, [int(d) == 1 for d in dense]

    weights = fit_pairwise([query() for _ in range(30)])
    assert weights[1] + weights[3] > 3 * abs(weights[0] + weights[2])
    reranker = LearnedFusionReranker(weights=weights)
    for ev, relevant in (query() for _ in range(10)):
        best, _ = reranker.rerank_evidence(ev, 3)[0]
        assert relevant[best]
    with pytest.raises(ValueError, match="relevant"):
        fit_pairwise([(ev, [False] * len(ev))])


def test_learned_reranker_weights_load_and_are_checked(tmp_path: Path) -> None:
    from serve_app.knowledge.rerankers.learned import BUNDLED, FEATURES, LearnedFusionReranker, save_weights

    bundled = create_reranker("learned")
    assert bundled.name == f"learned:{BUNDLED.name}" and len(bundled.weights) == len(FEATURES)
    path = tmp_path / "w.json"
    save_weights(path, [0.0, 1.0, 0.0, 0.0], "test")
    assert list(LearnedFusionReranker(path).weights) == [0.0, 1.0, 0.0, 0.0]
    path.write_text(json.dumps({"features": ["other"], "weights": [1.0]}))
    with pytest.raises(ValueError, match="fitted on features"):
        LearnedFusionReranker(path)
    with pytest.raises(ValueError, match="finite"):
        LearnedFusionReranker(weights=[1.0, float("nan"), 0.0, 0.0])
    with pytest.raises(TypeError, match="evidence"):
        bundled.rerank("q", candidates("d"), 1)
    assert load_settings(None).knowledge.ab_weights == {"learned": 1.0}  # the default arm


@pytest.fixture()
def redis_url() -> Iterator[str]:
    """A local server speaking Redis's wire protocol (fakeredis), for the real redis-py client."""
    from fakeredis import TcpFakeServer

    with running(TcpFakeServer(("127.0.0.1", 0))) as port:
        yield f"redis://127.0.0.1:{port}/0"


def test_redis_cache_is_shared_between_replicas(redis_url: str) -> None:
    from serve_app.knowledge.cache import RedisVectors

    first_inner, second_inner = CountingEmbedder(), CountingEmbedder()
    first = CachedEmbedder(first_inner, 100, RedisVectors(redis_url, "count", 4, ttl_s=60))
    second = CachedEmbedder(second_inner, 100, RedisVectors(redis_url, "count", 4, ttl_s=60))
    other_model = CachedEmbedder(CountingEmbedder(), 100, RedisVectors(redis_url, "other", 4))
    a, _ = first.embed(["reset password", "export notes"])
    b, _ = second.embed(["export notes", "reset password", "new one"])  # another replica: two from Redis
    np.testing.assert_array_equal(b[:2], a[::-1])
    assert first_inner.seen == ["reset password", "export notes"] and second_inner.seen == ["new one"]
    assert (second.hits, second.shared_hits, second.misses) == (2, 2, 1)
    second.embed(["export notes"])  # now in its own LRU: Redis is not asked
    assert second.shared_hits == 2 and second.hits == 3
    other_model.embed(["export notes"])  # another model's vectors are never mixed in
    assert other_model.shared_hits == 0 and other_model.misses == 1
    ttl = first.shared.client.ttl(first.shared.key("export notes"))
    assert 0 < ttl <= 60 and second.stats()["redis_hits"] == 2


def test_redis_cache_failures_degrade_to_embedding(redis_url: str) -> None:
    from serve_app.knowledge.cache import RedisVectors

    shared = RedisVectors(redis_url, "count", 4)
    shared.client.set(shared.key("bad"), b"\x00" * 3)  # a value of the wrong size: a miss
    cache = CachedEmbedder(CountingEmbedder(), 100, shared)
    cache.embed(["bad"])
    assert cache.misses == 1 and len(shared.client.get(shared.key("bad"))) == 16  # overwritten
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket closes
    dead = RedisVectors(f"redis://127.0.0.1:{closed}/0", "count", 4, pause_s=60)
    down = CachedEmbedder(CountingEmbedder(), 100, dead)
    np.testing.assert_array_equal(down.embed(["x", "yy"])[0], [[1, 1, 0, 0], [2, 1, 0, 0]])
    down.embed(["zzz"])
    # the failed read pauses Redis: the write after it and the next batch do not wait on it again
    assert dead.errors == 1 and dead.paused and down.stats()["redis_errors"] == 1 and down.misses == 3
