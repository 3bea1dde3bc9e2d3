"""What `eval-answers` and `fit-answers` run on: a dataset's documents in a tenant's knowledge base (and a
copy without the withheld documents), and the chat service the HTTP API uses, in this process.

The service is `ChatService.create` with an in-process retriever (the Router deployment's retrieval, the
same passages formatted the same way) and a cost ledger in the same database: every attempt of every
question is recorded as in production.
"""

from __future__ import annotations

import random
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from serve_app.answers.units import units
from serve_app.costs.ledger import CostLedger
from serve_app.db.database import Database
from serve_app.knowledge.embedders import Embedder
from serve_app.knowledge.factory import build_retriever
from serve_app.knowledge.pairs import customer_rewrite
from serve_app.knowledge.retrieval import Retriever, prompt_text
from serve_app.routing.providers.base import Message
from serve_app.routing.service import ChatRequest, ChatService
from serve_app.settings import Settings
from supportgraph_tools.answers.evaluate import EvalQuestion, withheld_sources
from supportgraph_tools.answers.fit import _SHORT_UNITS, Example, cloze, heading_question


@dataclass(frozen=True)
class Tenants:
    full: str  # the dataset's documents
    withheld: str  # the same without the withheld ones


async def prepare_tenants(
    db: Database, embedder: Embedder, settings: Settings, docs: Path, tenant: str, withheld: Path | None
) -> Tenants:
    """Ingest `docs` for `tenant` (unchanged files are skipped) and copy it, less the withheld documents,
    to `<tenant>-withheld`; what was done goes to stderr."""
    from serve_app.knowledge.ingest import copy_knowledge, ingest_path

    started = time.perf_counter()
    report = await ingest_path(db, embedder, docs, tenant, **settings.knowledge.chunking())
    print(
        f"ingest {docs} -> {tenant}: {report.written} written, {report.unchanged} unchanged"
        f" ({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    if withheld is None:
        return Tenants(tenant, tenant)
    other = f"{tenant}-withheld"[:63]
    started = time.perf_counter()
    skip = set(withheld_sources(withheld))
    copied = await copy_knowledge(db, tenant, other, skip)
    print(
        f"copy {tenant} -> {other} without {len(skip)} withheld documents: {copied.written} written,"
        f" {copied.unchanged} unchanged, {copied.removed} removed ({time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    return Tenants(tenant, other)


def retrieve_with(retriever: Retriever):  # type: ignore[no-untyped-def]
    """The Router deployment's retrieval (hybrid with the reranker arm), in process."""

    async def retrieve(tenant_id: str, question: str, k: int, request_id: uuid.UUID) -> list[str]:
        result = await retriever.search(
            tenant_id, question, mode="hybrid_rerank", top_k=k, request_id=str(request_id)
        )
        return [prompt_text(h.passage.heading, h.passage.title, h.passage.content) for h in result.hits]

    return retrieve


@asynccontextmanager
async def local_chat(
    db: Database, embedder: Embedder, settings: Settings, verify: bool = True
) -> AsyncIterator[ChatService]:
    """`verify` False: nothing is verified and no intent step runs (fit-answers needs the retrieval only)."""
    ledger = CostLedger(db)
    ledger.start()
    retriever = build_retriever(db, settings.knowledge, embedder)
    routing = settings.routing
    if not verify:
        policy = routing.policy.model_copy(update={"verify": False})
        routing = routing.model_copy(
            update={"policy": policy, "intents": routing.intents.model_copy(update={"enabled": False})}
        )
    service = ChatService.of(routing, settings.screen, settings.pricing, retrieve_with(retriever), ledger)
    try:
        yield service
    finally:
        await service.close()


def request_for(q: EvalQuestion, tenants: Tenants, tier: str | None = None) -> ChatRequest:
    tenant = tenants.withheld if q.kind == "withheld" else tenants.full
    return ChatRequest(tenant, (Message("user", q.text),), tier=tier)


async def examples_for(
    service: ChatService, questions: list[EvalQuestion], tenants: Tenants, tick: Callable[[], None]
) -> list[Example]:
    """Labelled examples: each question's passages exactly as the chat path retrieves them. Turns the
    intent step answers itself (a request for a person, a greeting) never reach the verifier: skipped."""
    from serve_app.answers.intent import IntentClassifier

    intents = IntentClassifier.load(service.routing.intents.model)
    out = []
    for q in questions:
        tick()
        if intents.classify(q.text, service.routing.intents.min_confidence).label != "question":
            continue
        prompt, _ = await service.prompt(request_for(q, tenants))
        out.append(Example(q.text, prompt.context, q.answer if q.answerable else None, "dev", q.id))
    return out


def generated_question(
    row: Mapping[str, str], rng: random.Random, headings: bool = True, customer: float = 0.0
) -> tuple[str, str | None, str | None, str | None] | None:
    """(question, gold, reference unit, section) for one chunk (`heading`, `title`, `content`), or None:
    half the time (with `headings`) its heading asked as a question, answered by a quote of its section;
    otherwise a cloze question on one of its figures. A `customer` share of them is then rewritten the
    way customers write (`pairs.customer_rewrite`: product terms replaced by vague words, lowercase,
    filler, a symptom), so the examples are not all in the documents' own words; the gold stays."""
    asked = heading_question(row["heading"] or "") if headings and rng.random() < 0.5 else None
    if asked is not None:
        question, gold, reference, section = asked, None, None, row["content"]
    else:
        text = prompt_text(row["heading"], row["title"], row["content"])
        made = [(u, *c) for u in units([text]) if (c := cloze(u, rng))]
        if not made:
            return None
        unit, question, gold = rng.choice(made)
        reference, section = unit.text, None
    if customer and rng.random() < customer:  # no draw at 0: the examples of a seed stay the same
        question = _as_customer(question, gold, rng)
    return question, gold, reference, section


def _as_customer(question: str, gold: str | None, rng: random.Random) -> str:
    """`customer_rewrite`, with the asked unit kept: "How many TiB ..." must not become "how many it"
    (a customer names the unit: "how many gb can one object hold")."""
    unit = (gold or "").split(" ", 1)[1:]
    if not unit or unit[0].lower() not in _SHORT_UNITS:
        return customer_rewrite(question, rng)
    marked = re.sub(rf"\b{re.escape(unit[0])}\b", "qqunit", question)  # lowercase: no product term
    return customer_rewrite(marked, rng).replace("qqunit", unit[0].lower())


async def generated_examples(
    db: Database,
    retriever: Retriever,
    tenant: str,
    n: int,
    avoid: set[str],
    k: int,
    seed: int,
    tick: Callable[[], None],
    headings: bool = True,
    customer: float = 0.0,
) -> list[Example]:
    """Questions from the tenant's own chunks, half from headings (`fit.heading_question`: "How do I
    create a bucket?") and half cloze questions on a figure (`fit.cloze`), each asked twice: with the
    knowledge base as it is, and with the question's own document left out of the passages (its withheld
    twin). Documents in `avoid` (those of reported questions) give none; `headings` off: figures only;
    `customer`: the share of questions asked the way customers write (`generated_question`)."""
    rng = random.Random(seed)
    async with db.tenant(tenant) as conn:
        rows = await conn.fetch(
            "SELECT c.heading, c.content, d.source, d.title FROM knowledge_chunks c"
            " JOIN knowledge_documents d ON d.id = c.document_id"
        )
    rows = [r for r in rows if r["source"].rsplit(".", 1)[0] not in avoid and r["source"] not in avoid]
    rng.shuffle(rows)
    out: list[Example] = []
    for row in rows:
        if len(out) >= 2 * n:
            break
        made = generated_question(row, rng, headings, customer)
        if made is None:
            continue
        question, gold, reference, section = made
        result = await retriever.search(tenant, question, mode="hybrid_rerank", top_k=k + 8)
        hits = [
            (h.passage.source, prompt_text(h.passage.heading, h.passage.title, h.passage.content))
            for h in result.hits
        ]
        group = f"gen{seed}:{len(out)}"
        out.append(
            Example(question, tuple(t for _, t in hits[:k]), gold, "generated", group, section=section)
        )
        others = tuple(t for s, t in hits if s != row["source"])[:k]
        out.append(
            Example(question, others, gold, "generated-withheld", group, reference=reference, section=section)
        )
        tick()
    return out
