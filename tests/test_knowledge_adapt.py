"""The tenant-adapted reranker: training pairs made from a knowledge base without labels, `adapt`
training that stops, resumes and publishes, and the `adapted` arm ranking with a tenant's own model or
falling back (no model: the learned evidence order) without an error."""

from __future__ import annotations

import json
import os
import random
from dataclasses import replace

import numpy as np
import pytest

from serve_app import samples
from serve_app.knowledge import pairs as kb_pairs
from serve_app.knowledge.adapt import META, AdaptConfig, adapt_tenant, schedule, tenant_dir
from serve_app.knowledge.ingest import ingest_path
from serve_app.knowledge.rerankers import Candidate
from serve_app.knowledge.rerankers.adapted import AdaptedReranker
from serve_app.knowledge.rerankers.learned import Evidence, LearnedFusionReranker
from serve_app.knowledge.store import Passage
from tests.conftest import LiveDB

# a few steps of short pairs; a checkpoint only where a run stops early
TINY = AdaptConfig(
    questions=30, negatives=2, max_length=64, batch_questions=4, holdout=4, checkpoint_every=99
)

CONTENT = (
    "Amazon S3 stores objects in buckets. Each bucket lives in one AWS Region that you choose when "
    "you create it. You can turn on versioning to keep every version of an object in the bucket. "
    "DynamoDB tables and IAM policies are configured elsewhere in the console."
)


def chunk(n: int, content: str = CONTENT, doc: int | None = None) -> kb_pairs.KbChunk:
    return kb_pairs.KbChunk(
        n, doc if doc is not None else n, f"Guide {n}", f"Guide {n} > Using buckets {n}", content
    )


def passage(chunk_id: int, doc: int) -> Passage:
    return Passage(chunk_id, doc, f"d{doc}.md", f"D{doc}", f"heading {chunk_id}", f"content {chunk_id}", 1.0)


def test_inverse_cloze_takes_its_sentence_out_of_the_passage_half_the_time() -> None:
    kept = 0
    for seed in range(40):
        question, positive = kb_pairs.question_for(chunk(1), "cloze", random.Random(seed))
        assert question in kb_pairs.sentences(CONTENT) and positive.startswith("Guide 1 > Using buckets 1\n")
        said = kb_pairs.sentences(positive.split("\n", 1)[1])
        if question in positive:  # the whole chunk: copied words are evidence too
            kept += 1
            assert len(said) == len(kb_pairs.sentences(CONTENT))
        else:
            assert len(said) == len(kb_pairs.sentences(CONTENT)) - 1
    assert 10 <= kept <= 30


def test_customer_rewrites_drop_product_terms_and_repeat_for_a_seed() -> None:
    question = "How do I turn on versioning for an Amazon S3 bucket with DynamoDB and IAM on db.m5.large?"
    rewrites = [kb_pairs.customer_rewrite(question, random.Random(seed)) for seed in range(20)]
    for text in rewrites:
        assert not any(term in text for term in ("Amazon S3", "DynamoDB", "IAM", "db.m5.large", "S3"))
        assert "versioning" in text and text == text.lower()
    assert rewrites == [kb_pairs.customer_rewrite(question, random.Random(seed)) for seed in range(20)]
    assert len(set(rewrites)) > 10  # filler, symptoms and vague words vary with the seed


def test_questions_come_in_every_kind_and_are_seeded() -> None:
    chunks = [chunk(n) for n in range(80)]
    made = kb_pairs.make_questions(chunks, 60, seed=3)
    assert len(made) == 60 and {p.kind for p in made} == set(kb_pairs.KINDS)
    assert all(p.query.strip() and p.positive.strip() for p in made)
    assert [p.query for p in made] == [p.query for p in kb_pairs.make_questions(chunks, 60, seed=3)]
    assert [p.query for p in made] != [p.query for p in kb_pairs.make_questions(chunks, 60, seed=4)]
    heading = next(p for p in made if p.kind == "heading")
    assert "using buckets" in heading.query


def test_a_passage_that_repeats_the_question_is_no_negative() -> None:
    pair = kb_pairs.Pair(
        "You can use the console to create a bucket.", "p", "cloze", document_id=7, chunk_id=70
    )
    boiler = Passage(
        10, 1, "d1.md", "D1", "h", "Intro. You can use the **console** to create a `bucket`!", 1.0
    )
    other = Passage(11, 2, "d2.md", "D2", "h", "You can use the console to delete a bucket.", 1.0)
    longer = Passage(12, 3, "d3.md", "D3", "h", "You can use the console to create a bucketful.", 1.0)
    assert kb_pairs.hard_negatives(pair, [boiler, longer], [], 3) == [  # whole words only
        "h\nYou can use the console to create a bucketful."
    ]
    assert kb_pairs.hard_negatives(pair, [boiler, other], [], 3) == [
        "h\nYou can use the console to delete a bucket."
    ]


MARKDOWN = (
    "Amazon S3 stores **objects** in `buckets`.\n\nEach bucket lives in one AWS Region that you choose"
    " when you create it. Run [`aws s3api put-bucket-versioning`](https://example.com/v) to keep every"
    " version of an"
    " object.\n| Setting | Default |\n| --- | --- |\n| Versioning | Off |\nIAM policies are set elsewhere."
)


def test_positives_negatives_and_served_candidates_are_read_in_one_form() -> None:
    """Cloze and first-sentence positives are rebuilt from plain sentences; a negative or a served
    candidate left in raw Markdown would differ from them by form alone (what pairs version 2 taught the
    model: it ranked the wrong passages first). Every passage the model reads has no Markdown marks and
    no line breaks after its heading line."""

    def one_form(text: str) -> bool:
        _, _, content = text.partition("\n")
        return (
            content == kb_pairs.plain(content)
            and "\n" not in content
            and not any(mark in content for mark in "*`|#")
        )

    raw = chunk(1, MARKDOWN)
    positives = [
        made[1]
        for kind in kb_pairs.KINDS
        for seed in range(12)
        if (made := kb_pairs.question_for(raw, kind, random.Random(seed)))
    ]
    assert len(positives) >= 30 and all(one_form(p) for p in positives), positives
    pair = kb_pairs.Pair("q", "p", "cloze", document_id=7, chunk_id=70)
    other = Passage(10, 1, "d1.md", "D1", "Guide > Tables", MARKDOWN, 1.0)
    (negative,) = kb_pairs.hard_negatives(pair, [other], [], 1)
    assert one_form(negative) and negative.startswith("Guide > Tables\n")
    served = kb_pairs.as_read(f"Guide > Tables\n{MARKDOWN}")  # the Retriever's candidate text, as read
    assert served == negative and kb_pairs.as_read(served) == served
    # plain text stays as it is, so a positive rebuilt from plain sentences reads like its raw chunk
    assert kb_pairs.plain(kb_pairs.plain(MARKDOWN)) == kb_pairs.plain(MARKDOWN)
    assert kb_pairs.as_read("no heading line") == "no heading line"


def test_hard_negatives_skip_the_positives_document_and_interleave_both_retrievers() -> None:
    pair = kb_pairs.Pair("q", "p", "cloze", document_id=7, chunk_id=70)
    lexical = [passage(70, 7), passage(71, 7), passage(10, 1), passage(11, 1)]
    dense = [passage(20, 2), passage(10, 1), passage(72, 7), passage(30, 3)]
    negatives = kb_pairs.hard_negatives(pair, lexical, dense, 3)
    assert negatives == ["heading 20\ncontent 20", "heading 10\ncontent 10", "heading 11\ncontent 11"]


def test_the_schedule_warms_up_then_decays_to_zero() -> None:
    rates = [schedule(step, 100) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and max(rates) == pytest.approx(1.0)
    assert rates[9] == pytest.approx(1.0) and rates[-1] < 0.02 and rates == sorted(rates[:10]) + rates[10:]


def test_adapt_stops_resumes_publishes_and_the_arm_ranks_with_it(live_db: LiveDB, embedder) -> None:
    """A run cut after two steps publishes an incomplete model and leaves a checkpoint; the next run
    resumes there, on the same pairs, to the end; a third keeps it. The adapted reranker then ranks the
    tenant's candidates with that model, and a tenant without one gets the learned evidence order."""
    state = live_db.db.state_dir
    live_db.run(ingest_path(live_db.db, embedder, samples.HELP_CENTER, "adapt-t"))
    model = embedder.inner
    first = live_db.run(adapt_tenant(live_db.db, model, state, "adapt-t", TINY, max_steps=2))
    home = tenant_dir(state, "adapt-t")
    assert first["steps"] == 2 and not first["complete"] and (home / "work" / "checkpoint").is_dir()
    assert json.loads((home / "reranker" / META).read_text())["complete"] is False
    second = live_db.run(adapt_tenant(live_db.db, model, state, "adapt-t", TINY))
    assert second["resumed_at"] == 2 and second["complete"] and second["steps"] == second["total_steps"] > 2
    assert second["pairs"] == first["pairs"] and not (home / "work" / "checkpoint").exists()
    assert "skipped" in live_db.run(adapt_tenant(live_db.db, model, state, "adapt-t", TINY))
    # a model trained on pairs made by older rules is not kept: the next run trains again
    meta = home / "reranker" / META
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"pairs_version": kb_pairs.PAIRS_VERSION - 1}))
    redo = live_db.run(adapt_tenant(live_db.db, model, state, "adapt-t", TINY, max_steps=1))
    assert "skipped" not in redo and redo["steps"] == 1 and redo["pairs_version"] == kb_pairs.PAIRS_VERSION

    reranker = AdaptedReranker(state / "models")
    texts = [  # as the Retriever gives candidates: heading line, raw Markdown content
        "Exports > Size\nExports larger than **2 GB** fail;\n\nsplit the export by `date`.",
        "Profile > Avatar\nChange your [avatar](https://example.com/a) in *settings*.",
    ]
    candidates = [Candidate(t) for t in texts]
    ranking, usage = reranker.rerank_for("adapt-t", "my export is too big", candidates, 2)
    assert reranker.last_source == "model" and usage is None and sorted(i for i, _ in ranking) == [0, 1]
    scores = reranker.model_for("adapt-t").cross_encoder.model.predict(  # read as it was trained
        [("my export is too big", kb_pairs.as_read(t)) for t in texts]
    )
    assert [s for _, s in ranking] == pytest.approx(sorted(np.asarray(scores).ravel().tolist(), reverse=True))

    evidence = [Evidence(3, None, 0.2, 0.5), Evidence(1, 1, 1.0, 1.0)]
    with_evidence = [Candidate(t, e) for t, e in zip(texts, evidence, strict=True)]
    fallback, _ = reranker.rerank_for("no-model-t", "my export is too big", with_evidence, 2)
    assert reranker.last_source == "fallback"
    assert fallback == LearnedFusionReranker().rerank_evidence(evidence, 2)
    assert reranker.rerank_for("no-model-t", "q", candidates, 2)[0] == [(0, 1.0), (1, 0.5)]

    loaded = reranker.model_for("adapt-t")
    meta = home / "reranker" / META
    os.utime(meta, ns=(meta.stat().st_atime_ns, meta.stat().st_mtime_ns + 10**9))  # a new adapt run
    assert loaded.stale()
    again = reranker.model_for("adapt-t")
    assert again is not loaded and again.version == meta.stat().st_mtime_ns and not again.stale()

    # a checkpoint resumes only its own run: other settings (here the held-out count) start over
    stamp = json.loads((home / "work" / "pairs.json").read_text())
    assert stamp["version"] == kb_pairs.PAIRS_VERSION  # pairs made by older rules are made again
    other = replace(TINY, holdout=3)
    cut = live_db.run(adapt_tenant(live_db.db, model, state, "adapt-t", other, max_steps=1))
    assert cut["resumed_at"] == 0 and cut["steps"] == 1 and (home / "work" / "checkpoint").is_dir()
    back = live_db.run(adapt_tenant(live_db.db, model, state, "adapt-t", TINY, max_steps=1))
    assert back["resumed_at"] == 0 and back["steps"] == 1
    assert (
        live_db.run(adapt_tenant(live_db.db, model, state, "adapt-t", TINY, max_steps=1))["resumed_at"] == 1
    )


def test_the_adapted_arm_serves_searches_with_and_without_a_model(live_db: LiveDB, embedder) -> None:
    from serve_app.knowledge.factory import build_retriever
    from serve_app.settings import KnowledgeSettings

    state = live_db.db.state_dir
    for tenant in ("adapt-t", "plain-t"):
        live_db.run(ingest_path(live_db.db, embedder, samples.HELP_CENTER, tenant))
    live_db.run(adapt_tenant(live_db.db, embedder.inner, state, "adapt-t", replace(TINY), max_steps=1))
    retriever = build_retriever(live_db.db, KnowledgeSettings(), embedder)

    async def search(tenant: str, arm: str) -> list[str]:
        result = await retriever.search(tenant, "How long do deleted notes stay in the trash?", arm=arm)
        assert result.arm == arm
        return [h.passage.source for h in result.hits]

    adapted = live_db.run(search("adapt-t", "adapted"))
    assert adapted and retriever.rerankers["adapted"].reranker.last_source == "model"
    without = live_db.run(search("plain-t", "adapted"))
    assert retriever.rerankers["adapted"].reranker.last_source == "fallback"
    assert without == live_db.run(search("plain-t", "learned"))  # no model: the default arm's order
    assert retriever.arm_stats["adapted"].failures == 0


class ReversingModel:
    """Stands in for a tenant's cross-encoder: ranks what it is given last first."""

    def rerank(self, query: str, candidates: list[Candidate], top_n: int) -> list[tuple[int, float]]:
        return [(i, float(i)) for i in reversed(range(len(candidates)))][:top_n]


def test_the_model_ranks_only_the_first_candidates_and_the_rest_follow_in_order(tmp_path) -> None:
    reranker = AdaptedReranker(tmp_path, candidates=3)
    ranking, _ = reranker.rerank_with(ReversingModel(), "q", [Candidate(str(i)) for i in range(5)], 5)
    assert [i for i, _ in ranking] == [2, 1, 0, 3, 4]
    assert [s for _, s in ranking] == sorted((s for _, s in ranking), reverse=True)
    assert [i for i, _ in reranker.rerank_with(ReversingModel(), "q", [Candidate("a")] * 5, 2)[0]] == [2, 1]
