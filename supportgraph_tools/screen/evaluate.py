"""`supportgraph eval-screen`: does reading the screen find the article a vague question is about?

Each case is a generated desktop (`screens.error_screen`, from a seed) before and after an error
message of the help center shows on a toast, banner or dialog, and a vague question ("what does this
error mean?"). The path is the graph's, without Ray: the dedup service decides the two frames (the
error's frame is sent with its reason and box), the screen reader reads the changed region (the whole
frame for a pHash send), the stream's screen state gives the turn what appeared, and the retriever
ranks documents for the question alone and for the question grounded on the screen lines. Scores:
OCR character accuracy against the rendered text, R@1 / R@5 / MRR@10 of the error's article, and per
stage latency; `ocr_p95_ms` is over region reads of at most a quarter of the frame. `toast_to_text` is
the time from the error's frame reaching the dedup to its text being usable (decision, then the read of
its changed box, or of the whole frame when the dedup gave no compact box). `busy`: busy desktops
(`frames/busy.py`), whose first frame is read whole into the stream's state before the error shows, so
the question must be grounded on what changed, not on the busy screen.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.frames.service import DedupService
from serve_app.screen.context import grounded_query, query_lines
from serve_app.screen.reader import ReadRequest, ScreenReader, compact
from serve_app.screen.state import ScreenStore
from serve_app.settings import DedupSettings
from serve_app.stats import percentile
from supportgraph_tools.knowledge.evaluate import corpus_id
from supportgraph_tools.screen.screens import QUESTIONS, Box, ErrorMessage, ErrorScreen, error_screen

# (question) -> ranked document ids
Rank = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True)
class Case:
    error: ErrorMessage
    question: str
    seed: int


def cases(errors: list[ErrorMessage], per_error: int = 2, seed: int = 1000) -> list[Case]:
    out = []
    for n, error in enumerate(errors):
        for k in range(per_error):
            out.append(Case(error, QUESTIONS[(n + k) % len(QUESTIONS)], seed + n * per_error + k))
    return out


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _inside(line_box: tuple, box: tuple) -> bool:
    cx, cy = line_box[0] + line_box[2] / 2, line_box[1] + line_box[3] / 2
    return box[0] <= cx <= box[0] + box[2] and box[1] <= cy <= box[1] + box[3]


def _scores(ranked: list[str], relevant: str) -> dict[str, float]:
    rank = next((i for i, d in enumerate(ranked[:10], 1) if d == relevant), None)
    return {
        "R@1": float(relevant in ranked[:1]),
        "R@5": float(relevant in ranked[:5]),
        "MRR@10": 1.0 / rank if rank else 0.0,
    }


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in rows])), 3) for k in ("R@1", "R@5", "MRR@10")}


def _latency(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": 0.0, "p95": 0.0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.5), 1),
        "p95": round(percentile(values, 0.95), 1),
    }


async def dedup_decision(
    shot: ErrorScreen, stream: str, timings: list[float] | None = None
) -> tuple[dict[str, Any], Box | None]:
    """The dedup's decision on the screen after the error showed (it saw the one before first), and the
    changed box it sends for a region decision (None: the whole frame is read)."""
    dedup, decisions = DedupService(DedupSettings()), []
    for ts, frame in ((0.0, shot.before), (1.0, shot.after)):
        pending = dedup.admit(stream, frame, False, ts)
        started = time.perf_counter()
        (decision,) = await dedup.decide_batch([pending])
        if timings is not None:
            timings.append((time.perf_counter() - started) * 1000)
        decisions.append(decision.to_dict())
    sent = decisions[1]
    box = sent["box"] if sent["send"] else None
    if box is None or not (sent["reason"] == "region" or compact(shot.after.shape, box)):
        return sent, None
    return sent, tuple(box)


async def evaluate_screen(
    rank: Rank,
    reader: ScreenReader,
    all_cases: list[Case],
    width: int = 1280,
    height: int = 720,
    query_chars: int = 300,
    progress: Callable[[int], None] | None = None,
    busy: bool = False,
) -> dict[str, Any]:
    reader.read(ReadRequest(error_screen(all_cases[0].error, 1, width, height).after[:120, :400]))  # warm-up
    dedup_ms, ocr_region_ms, ocr_frame_ms, q_ms, s_ms, usable_ms = [], [], [], [], [], []
    errors_chars, truth_chars = 0, 0
    with_screen, question_only, rows = [], [], []
    quarter = width * height / 4
    for n, case in enumerate(all_cases):
        shot = error_screen(case.error, case.seed, width, height, busy=busy)
        stream = f"tenant_eval-screen_case-{n}.screen"
        store = ScreenStore()
        if busy:  # the busy screen's own text is in the stream's state first, as the first frame's read
            first = reader.read(ReadRequest(shot.before, None, stream_id=stream, ts=0.0, seq=1))
            ocr_frame_ms.append(first.ms)
            store.landed(first, started=False)
        decided: list[float] = []
        sent, box = await dedup_decision(shot, stream, decided)
        dedup_ms.extend(decided)
        request = ReadRequest(shot.after, box, stream_id=stream, reason=str(sent["reason"]), ts=1.0, seq=2)
        reading = reader.read(request)
        if box is not None and box[2] * box[3] <= quarter:
            ocr_region_ms.append(reading.ms)
        else:
            ocr_frame_ms.append(reading.ms)
        usable_ms.append(decided[-1] + reading.ms)  # the toast's frame decided, then its text read
        store.landed(reading, started=False)
        context = await store.turn(stream, 0)
        truth = [case.error.title, case.error.text]
        if shot.surface == "banner":
            truth = [f"{case.error.title}: {case.error.text}"]
        elif shot.surface == "dialog":
            truth += ["Cancel", "OK"]  # the rendered dialog's buttons
        read = [ln.text for ln in reading.lines if _inside(ln.box, shot.box)]
        expected, got = " ".join(truth), " ".join(read)
        errors_chars += min(len(expected), levenshtein(got, expected))
        truth_chars += len(expected)
        lines = query_lines(context, query_chars)
        started = time.perf_counter()
        alone = await rank(case.question)
        q_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        grounded = await rank(grounded_query(case.question, lines))
        s_ms.append((time.perf_counter() - started) * 1000)
        question_only.append(_scores(alone, case.error.doc))
        with_screen.append(_scores(grounded, case.error.doc))
        rows.append(
            {
                "doc": case.error.doc,
                "surface": shot.surface,
                "reason": sent["reason"],
                "question": case.question,
                "read": read,
                "top_alone": alone[:1],
                "top_grounded": grounded[:1],
                "lines": lines,
            }
        )
        if progress:
            progress(1)
    return {
        "cases": len(all_cases),
        "ocr_char_accuracy": round(1 - errors_chars / max(1, truth_chars), 4),
        "with_screen": _mean(with_screen),
        "question_only": _mean(question_only),
        "latency_ms": {
            "dedup_decide": _latency(dedup_ms),
            "ocr_region": _latency(ocr_region_ms),
            "ocr_whole_frame": _latency(ocr_frame_ms),
            "retrieval_question_only": _latency(q_ms),
            "retrieval_with_screen": _latency(s_ms),
            "toast_to_text": _latency(usable_ms),
        },
        "busy": busy,
        "ocr_p95_ms": round(percentile(ocr_region_ms, 0.95), 1) if ocr_region_ms else None,
        "rows": rows,
    }


def ranker(search: Callable[..., Awaitable[Any]], tenant: str) -> Rank:
    """Ranked document ids from a Retriever's `search` (one passage per document)."""

    async def rank(query: str) -> list[str]:
        result = await search(tenant, query, top_k=10)
        return [corpus_id(hit.passage.source) for hit in result.hits]

    return rank
