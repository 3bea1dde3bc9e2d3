"""Training pairs for a tenant's reranker, made from its own knowledge base without labels.

Each sampled chunk gives one question whose answer is that chunk, by one of four rules:

- `heading`: its section heading (with the article title) asked as a question;
- `first_sentence`: the chunk's first sentence, the chunk kept whole;
- `cloze`: inverse cloze: a sentence of the chunk is the question; the passage is the rest of the chunk
  without that sentence half the time (so it is matched by meaning, not by copied words) and the whole
  chunk the other half (so copied words still count as evidence: a model that only ever saw the sentence
  taken out learns that a passage repeating the question is a wrong one, and ranks real questions' own
  passages last);
- `customer`: one of the three above rewritten the way customers write (`customer_rewrite`): product
  term names dropped for vague words, lowercase, filler and a symptom added. The rewriter is rule-based
  and deterministic for a seed.

Hard negatives come from what the two retrievers return for the question (BM25 and dense, interleaved),
excluding every chunk of the positive's own document and every passage that repeats the question itself
(documentation repeats boilerplate sentences across articles: such a passage answers the question as
well as the positive does), so a negative is a near miss from another article.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import numpy as np

from serve_app.knowledge import store
from serve_app.knowledge.embedders import Embedder

KINDS = ("heading", "first_sentence", "cloze", "customer")
CLOZE_KEEP = 0.5  # share of cloze pairs whose passage keeps the question's sentence
# what the rules above make: pairs saved under another version are made again (2: cloze keeps its
# sentence half the time, no negative repeats the question; 3: every passage in one form, `passage_text`;
# 4: `plain` leaves plain text as it is, so rebuilt positives keep a link's code marks' removal alike)
PAIRS_VERSION = 4
CHUNKS = """
SELECT c.id, c.document_id, d.title, c.heading, c.content
  FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
 ORDER BY c.id
"""
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_MARKS = re.compile(r"[*_`#>|]+")
# a product term: a capitalised run after a vendor prefix, CamelCase, an acronym or a dotted identifier
_VENDOR_TERM = re.compile(r"\b(?:Amazon|AWS|Azure|Google|Microsoft)(?:\s+[A-Z][\w-]*)+")
_TERM = re.compile(r"\b(?:[A-Z][a-z]+[A-Z]\w*|[A-Z]{2,}[\w-]*|[a-z]+\d+[\w.-]*\.\w+)\b")

VAGUE = ("the service", "this thing", "it", "the tool", "your product", "the feature")
OPENERS = (
    "hi, ",
    "hey, ",
    "quick question: ",
    "sorry if this is obvious but ",
    "i'm stuck. ",
    "hello support, ",
    "",
)
SYMPTOMS = (
    " it keeps failing",
    " and nothing happens",
    " i get an error every time",
    " it doesn't seem to work",
    " it worked yesterday",
    "",
)
CLOSERS = (" any idea?", " please help", " thanks", " what am i doing wrong?", "?", "")
HEADING_FORMS = (
    "how do i go about {s}",
    "help with {s}",
    "{s} - how does that work",
    "what should i know about {s}",
    "{s}?",
)


@dataclass(frozen=True)
class KbChunk:
    """One stored chunk, as training reads it."""

    chunk_id: int
    document_id: int
    title: str
    heading: str
    content: str

    @property
    def section(self) -> str:
        """The last part of its heading path (the title where it has no heading of its own)."""
        return (self.heading or self.title).split(" > ")[-1].strip()


@dataclass
class Pair:
    """A question, the passage that answers it, and passages of other documents that do not."""

    query: str
    positive: str
    kind: str
    document_id: int
    chunk_id: int
    negatives: list[str] = field(default_factory=list)


def passage_text(heading: str, content: str) -> str:
    """A passage as the adapted cross-encoder reads it, in training and when serving: its heading path,
    then its content without Markdown marks and with whitespace collapsed. Cloze and first-sentence
    passages are rebuilt from plain sentences, so a negative left in its raw Markdown would differ from
    every such positive by its form alone, and the model would learn the form (pairs version 2 did)."""
    return f"{heading}\n{plain(content)}"


def as_read(candidate_text: str) -> str:
    """A Retriever candidate's text (heading, newline, raw content) in the form `passage_text` gives;
    a text without a heading line is all content."""
    heading, newline, content = candidate_text.partition("\n")
    return passage_text(heading, content) if newline else plain(candidate_text)


def plain(text: str) -> str:
    """Markdown emphasis, code marks and link syntax removed, whitespace collapsed. Links become their
    text before the marks go (a link's text may carry marks), so plain text stays as it is."""
    return " ".join(_MARKS.sub(" ", _LINK.sub(lambda m: m.group(1), text)).split())


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(plain(text)) if s.strip()]


_NOT_CONTENT = re.compile(r"\[\[|https?:|^(For more information|See |The following)|(:|\b\d+\.)$", re.I)


def usable(sentence: str, low: int = 6, high: int = 40) -> bool:
    """A sentence that reads as a question's content: enough words, mostly words (not a table row or a
    code line), not a pointer elsewhere ("For more information, see") or a list's lead-in."""
    words = sentence.split()
    wordy = sum(w.strip(",.;()'\"").isalpha() for w in words)
    return low <= len(words) <= high and wordy >= 0.6 * len(words) and not _NOT_CONTENT.search(sentence)


def strip_terms(text: str, rng: random.Random) -> str:
    """Product names (vendor-prefixed runs, CamelCase, acronyms, dotted identifiers) -> vague words."""
    text = _VENDOR_TERM.sub(lambda _: rng.choice(VAGUE), text)
    return _TERM.sub(lambda _: rng.choice(VAGUE), text)


def customer_rewrite(question: str, rng: random.Random) -> str:
    """A question as a customer might type it: terms dropped, lowercase, filler and a symptom."""
    text = strip_terms(question.rstrip(" ?.!"), rng)
    words = text.split()
    body = " ".join(words[:14]).lower()  # customers ask about the gist, not a whole sentence
    symptom = rng.choice(SYMPTOMS) if rng.random() < 0.5 else ""
    return f"{rng.choice(OPENERS)}{body}{symptom}{rng.choice(CLOSERS)}".strip()


def heading_question(chunk: KbChunk, rng: random.Random) -> str | None:
    section = plain(chunk.section)
    if len(section.split()) < 2 and section == plain(chunk.title):
        return None  # a one-word title asks nothing
    form = rng.choice(HEADING_FORMS).format(s=section.lower())
    title = plain(chunk.title)
    return form if title.lower() in form else f"{form} ({title})"


def question_for(chunk: KbChunk, kind: str, rng: random.Random) -> tuple[str, str] | None:
    """(question, positive passage) of `kind` for the chunk, or None where the chunk cannot give one."""
    whole = passage_text(chunk.heading, chunk.content)
    if kind == "heading":
        question = heading_question(chunk, rng)
        return (question, whole) if question else None
    said = sentences(chunk.content)
    if kind == "first_sentence":
        return (said[0], whole) if said and usable(said[0]) else None
    if kind == "cloze":
        picks = [i for i, s in enumerate(said) if usable(s)]
        if len(said) < 3 or not picks:
            return None
        i = rng.choice(picks)
        if rng.random() < CLOZE_KEEP:
            return said[i], passage_text(chunk.heading, " ".join(said))
        return said[i], passage_text(chunk.heading, " ".join(said[:i] + said[i + 1 :]))
    if kind == "customer":
        base = question_for(chunk, rng.choice(KINDS[:3]), rng)
        return (customer_rewrite(base[0], rng), base[1]) if base else None
    raise ValueError(f"unknown question kind {kind!r} ({', '.join(KINDS)})")


def make_questions(
    chunks: list[KbChunk], count: int, seed: int = 0, weights: dict[str, float] | None = None
) -> list[Pair]:
    """Up to `count` pairs (no negatives yet) from a seeded sample of the chunks, one per chunk, kinds
    drawn by `weights` (default: customer 2, cloze 2, heading 1, first sentence 1)."""
    weights = weights or {"heading": 1.0, "first_sentence": 1.0, "cloze": 2.0, "customer": 2.0}
    rng = random.Random(seed)
    order = list(range(len(chunks)))
    rng.shuffle(order)
    kinds, shares = list(weights), list(weights.values())
    pairs: list[Pair] = []
    for i in order:
        if len(pairs) >= count:
            break
        chunk, kind = chunks[i], rng.choices(kinds, shares)[0]
        made = question_for(chunk, kind, rng)
        if made and len(made[1].split()) >= 8:
            pairs.append(Pair(made[0], made[1], kind, chunk.document_id, chunk.chunk_id))
    return pairs


def interleave(*lists: list[store.Passage]) -> Iterator[store.Passage]:
    for rank in range(max((len(x) for x in lists), default=0)):
        for ranked in lists:
            if rank < len(ranked):
                yield ranked[rank]


def _folded(text: str) -> str:
    return " ".join(re.findall(r"\w+", plain(text).lower()))


def hard_negatives(
    pair: Pair, lexical: list[store.Passage], dense: list[store.Passage], count: int
) -> list[str]:
    """The first `count` distinct chunks the two retrievers return for the question (interleaved),
    none from the positive's document and none that repeats the question (case, markup and
    punctuation aside): that passage answers it too."""
    seen: set[int] = set()
    out = []
    asked = _folded(pair.query)
    for p in interleave(lexical, dense):
        if p.document_id == pair.document_id or p.chunk_id in seen:
            continue
        if len(asked.split()) >= 4 and f" {asked} " in f" {_folded(p.content)} ":
            continue
        seen.add(p.chunk_id)
        out.append(passage_text(p.heading, p.content))
        if len(out) == count:
            break
    return out


async def load_chunks(conn: asyncpg.Connection) -> list[KbChunk]:
    """Every chunk of the connection's tenant."""
    return [KbChunk(*row.values()) for row in await conn.fetch(CHUNKS)]


async def mine_negatives(
    conn: asyncpg.Connection, embedder: Embedder, pairs: list[Pair], count: int = 4, depth: int = 20
) -> list[Pair]:
    """Each pair with `count` hard negatives from BM25 and dense top-`depth` (pairs that find none
    are dropped: nothing to contrast them with)."""
    vectors, _ = embedder.embed([p.query for p in pairs]) if pairs else (np.empty((0, 0)), None)
    kept = []
    for pair, vector in zip(pairs, vectors, strict=True):
        lexical = await store.fulltext(conn, pair.query, depth)
        dense = await store.dense(conn, vector, depth)
        pair.negatives = hard_negatives(pair, lexical, dense, count)
        if pair.negatives:
            kept.append(pair)
    return kept


def save_pairs(path: Path, pairs: Iterable[Pair]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as fh:
        for pair in pairs:
            fh.write(json.dumps(asdict(pair)) + "\n")
    tmp.replace(path)


def load_pairs(path: Path) -> list[Pair]:
    with path.open() as fh:
        return [Pair(**json.loads(line)) for line in fh if line.strip()]
