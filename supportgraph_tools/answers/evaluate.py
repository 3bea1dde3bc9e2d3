"""`supportgraph eval-answers`: are the replies right, and are the ones that cannot be right declined?

Questions come from JSONL files (`_id`, `text`, and for answerable ones the gold `answer`; `kind` says
what a question is: `answerable` (the default for a dataset's queries), `withheld` (its gold document is
left out of the knowledge base), `account`, `person`, `uncovered`). Each goes through the chat service the
HTTP API uses (intent step, retrieval, ladder, verifier, cost ledger) for a tenant whose knowledge base is
the dataset's documents; withheld questions go to a second tenant holding the same documents but the
withheld ones (copied from the first: no second embedding pass).

A reply is `declined` when it abstained or handed off, else `correct` when it carries the gold answer's
content words (`grade`), else `wrong`. The report: correct rate on answerable questions, decline rate on
unanswerable ones, precision of delivered answers, coverage, the AUROC of the confidence, cost and
latency, per tier and for the ladder.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.answers.evidence import STOP, stem, tokens
from serve_app.errors import NoTierAvailable
from serve_app.stats import percentile

UNANSWERABLE = ("withheld", "account", "person", "uncovered", "chatter")
_EXTRA_STOP = frozenset(["amazon", "aws", "use", "used", "using"])


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    text: str
    kind: str = "answerable"
    answer: str | None = None
    doc: str | None = None
    split: str | None = None

    @property
    def answerable(self) -> bool:
        return self.kind not in UNANSWERABLE


def load_questions(path: Path, kind: str | None = None) -> list[EvalQuestion]:
    """JSONL rows with `_id` and `text` (and `answer`, `kind`, `doc`, `split` where known); `kind`
    overrides every row's (e.g. "withheld" for a file of such questions)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "_id" not in row or "text" not in row:
            raise ValueError(f"{path}:{n}: each line needs _id and text")
        out.append(
            EvalQuestion(
                str(row["_id"]),
                row["text"],
                kind or row.get("kind", "answerable"),
                row.get("answer"),
                row.get("doc"),
                row.get("split"),
            )
        )
    return out


def gold_terms(answer: str) -> tuple[list[str], list[str]]:
    """(numbers, other content terms) of a gold answer, normalised like replies ("1MB" = "1 MB", "two" =
    "2", "1,000" = "1000")."""
    said = [t for t in tokens(answer) if "." not in t or t[0].isdigit()]
    numbers = [t for t in said if t[0].isdigit()]
    words = [stem(t) for t in said if not t[0].isdigit() and t not in STOP and t not in _EXTRA_STOP]
    return list(dict.fromkeys(numbers)), list(dict.fromkeys(words))


def grade(reply: str, answer: str, min_share: float = 0.75) -> bool:
    """The reply carries the gold answer's content: every number, and at least `min_share` of its other
    content words (all of them for answers of three words or fewer)."""
    numbers, words = gold_terms(answer)
    if not numbers and not words:
        return False
    said = set(tokens(reply))
    said |= {stem(t) for t in said}
    if any(n not in said for n in numbers):
        return False
    if not words:
        return True
    hits = sum(w in said for w in words)
    return hits == len(words) if len(words) <= 3 else hits / len(words) >= min_share


def auroc(scores: Iterable[float], labels: Iterable[bool]) -> float | None:
    """Area under the ROC curve (ties count half); None without both classes."""
    s, y = np.asarray(list(scores), float), np.asarray(list(labels), bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


@dataclass
class Row:
    """One question's reply, graded."""

    id: str
    kind: str
    split: str | None
    question: str
    reply: str
    tier: str
    confidence: float
    abstained: bool
    reason: str | None
    intent: str | None
    outcome: str  # correct | wrong | declined | failed (no tier answered: the API's 503)
    candidate_correct: bool  # the best attempt's answer (delivered or not) carries the gold
    cost_usd: float
    latency_ms: float
    attempts: list[str] = field(default_factory=list)
    candidate: str | None = None  # the best attempt's answer, delivered or not
    gold: str | None = None

    @property
    def answerable(self) -> bool:
        return self.kind not in UNANSWERABLE

    @property
    def delivered(self) -> bool:
        return self.outcome not in ("declined", "failed")


# (question, tenant) -> (routed answer's dict, reply text, the best attempt's text)
Ask = Callable[[EvalQuestion], Awaitable[tuple[dict[str, Any], str, str | None]]]


async def run(
    questions: list[EvalQuestion], ask: Ask, progress: Callable[[], None] | None = None
) -> list[Row]:
    rows = []
    for q in questions:
        started = time.perf_counter()
        try:
            routing, reply, candidate = await ask(q)
        except NoTierAvailable as failed:  # every tier failed (timeouts on a loaded machine): the API's 503
            routing, reply, candidate = {"tier": "none", "error": str(failed)}, "", None
        took = (time.perf_counter() - started) * 1e3
        declined = bool(routing.get("abstained")) or routing.get("handoff") is not None
        right = bool(q.answer) and grade(reply, q.answer or "")
        outcome = "declined" if declined else ("correct" if right else "wrong")
        outcome = "failed" if "error" in routing else outcome
        rows.append(
            Row(
                q.id,
                q.kind,
                q.split,
                q.text,
                reply,
                routing.get("tier", "?"),
                float(routing.get("confidence") or 0.0),
                bool(routing.get("abstained")),
                routing.get("abstain_reason"),
                routing.get("intent"),
                outcome,
                bool(q.answer) and grade(candidate or reply, q.answer or ""),
                float(routing.get("cost_usd") or 0.0),
                took,
                [f"{a['tier']}:{a['outcome']}" for a in routing.get("attempts", [])],
                candidate,
                q.answer,
            )
        )
        if progress:
            progress()
    return rows


def summarise(rows: list[Row]) -> dict[str, Any]:
    """The figures of a set of graded replies (see the module doc)."""
    answerable = [r for r in rows if r.answerable]
    unanswerable = [r for r in rows if not r.answerable]
    delivered = [r for r in rows if r.delivered]
    correct = sum(r.outcome == "correct" for r in answerable)
    right_delivered = sum(r.outcome == "correct" for r in delivered)
    latencies = [r.latency_ms for r in rows]
    # the verifier's confidence, over the replies it scored (an intent reply's confidence is the intent's)
    verified = [r for r in rows if r.tier != "intent" and r.outcome != "failed"]  # scored answers only
    score = auroc([r.confidence for r in verified], [r.candidate_correct for r in verified])
    return {
        "questions": len(rows),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "correct": _rate(correct, len(answerable)),
        "declined_unanswerable": _rate(sum(r.outcome == "declined" for r in unanswerable), len(unanswerable)),
        "declined_answerable": _rate(sum(r.outcome == "declined" for r in answerable), len(answerable)),
        "delivered": len(delivered),
        "failed": sum(r.outcome == "failed" for r in rows),
        "wrong_delivered": len(delivered) - right_delivered,
        "delivered_precision": _rate(right_delivered, len(delivered)),
        "coverage": _rate(len(delivered), len(rows)),
        "auroc": None if score is None else round(score, 3),
        "cost_usd": round(sum(r.cost_usd for r in rows), 6),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.5), 1) if latencies else None,
            "p95": round(percentile(latencies, 0.95), 1) if latencies else None,
        },
    }


def _rate(k: int, n: int) -> float | None:
    return round(k / n, 3) if n else None


def by_tier(rows: list[Row]) -> dict[str, dict[str, Any]]:
    """Per delivering tier (and "abstained"): replies, correct, wrong, precision, latency, cost."""
    out: dict[str, dict[str, Any]] = {}
    for tier in sorted({r.tier for r in rows}):
        mine = [r for r in rows if r.tier == tier]
        right = sum(r.outcome == "correct" for r in mine)
        wrong = sum(r.outcome == "wrong" for r in mine)
        out[tier] = {
            "replies": len(mine),
            "correct": right,
            "wrong": wrong,
            "precision": _rate(right, right + wrong),
            "latency_ms_p50": round(percentile([r.latency_ms for r in mine], 0.5), 1),
            "cost_usd": round(sum(r.cost_usd for r in mine), 6),
        }
    return out


def by_kind(rows: list[Row]) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in sorted({r.kind for r in rows}):
        mine = [r for r in rows if r.kind == kind]
        out[kind] = {
            "questions": len(mine),
            "correct": sum(r.outcome == "correct" for r in mine),
            "wrong": sum(r.outcome == "wrong" for r in mine),
            "declined": sum(r.outcome == "declined" for r in mine),
        }
    return out


def save_rows(rows: list[Row], path: Path) -> None:
    path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in rows))


def withheld_sources(path: Path) -> list[str]:
    """Corpus ids (one per line, '#' comments) -> the documents' sources as ingested ("<id>.md")."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line if re.search(r"\.\w+$", line) else f"{line}.md")
    return out
