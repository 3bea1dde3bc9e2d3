"""Fitting the answer model (`supportgraph fit-answers`): the unit selector, the verifier, and the
verifier's Learn-then-Test thresholds.

Examples are (question, passages, gold answer or None for an unanswerable question). They come from
labelled dev questions and from questions generated from the knowledge base itself, no labels needed:
a sentence (or table row) stating a figure becomes a cloze question ("... up to how many TiB of
storage?") whose gold is that figure, asked with the knowledge base as it is (answerable) and with the
sentence's own document left out of the passages (unanswerable: the figures in other documents are
exactly the near misses a verifier must refuse).

- Selector: logistic regression over `evidence.FEATURES`; a unit is positive when it carries the gold.
- Verifier: logistic regression over `model.ANSWER_FEATURES` of the composed answer; positive when the
  answer carries the gold (an unanswerable question's answers are all negative).
- Thresholds: the verifier's scores are cross-fitted (each example scored by a selector and a verifier
  fitted without its fold); for each tolerated rate alpha, `split_threshold` picks a threshold at which
  the share of wrong answers among delivered ones is <= alpha with probability >= 1 - delta (candidates
  from half the examples, tested on the other half). `selective_threshold` is the same test as one fixed
  sequence over every threshold; it certifies nothing when a wrong answer sits among the few highest
  scores. The saved selector and verifier are refitted on all examples (the guarantee is that of
  cross-fitting).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from serve_app.answers.compose import compose
from serve_app.answers.evaluate import grade
from serve_app.answers.evidence import Embed, analyse, terms, unit_features
from serve_app.answers.model import ANSWER_FEATURES, AnswerModel, Evidence, Logistic, answer_features
from serve_app.answers.units import Unit, units

ALPHAS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2)


@dataclass(frozen=True)
class Example:
    question: str
    passages: tuple[str, ...]
    gold: str | None  # None: unanswerable
    source: str = "dev"  # dev | generated | generated-withheld
    group: str = ""  # examples of one group share a fold (a question and its withheld twin)
    # a generated question's sentence: its withheld twin is still answered right by the same statement
    # in another document (the corpus repeats itself), and only by that
    reference: str | None = None


def min_delivered(alpha: float, delta: float) -> int:
    """The fewest delivered answers at which 0 wrong ones can certify a rate <= alpha at level delta."""
    return math.ceil(math.log(delta) / math.log(1 - alpha))


def selective_threshold(scores: np.ndarray, correct: np.ndarray, alpha: float, delta: float) -> float:
    """The lowest threshold t such that P(wrong | score >= t) <= alpha is certified at level delta by
    fixed-sequence testing: thresholds are the distinct scores from high to low, starting where at least
    `min_delivered(alpha, delta)` answers would be delivered (the order depends on the scores only, not
    on the labels); each is tested with the exact binomial p-value of its delivered answers' wrong count,
    and the sequence stops at the first that fails. inf when none holds."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    order = np.argsort(-scores, kind="stable")
    s, wrong = scores[order], ~correct[order]
    cum_wrong = np.cumsum(wrong)
    last_of = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each distinct score
    start = min_delivered(alpha, delta)
    chosen = math.inf
    for i in last_of:
        n = i + 1
        if n < start:
            continue
        if stats.binom.cdf(int(cum_wrong[i]), n, alpha) > delta:
            break
        chosen = float(s[i])
    return chosen


def _empirical_threshold(scores: np.ndarray, correct: np.ndarray, rate: float, least: int) -> float:
    """The lowest threshold whose delivered answers (at least `least` of them) are wrong at most `rate`
    of the time on these examples (inf: none)."""
    order = np.argsort(-scores, kind="stable")
    s, wrong = scores[order], ~correct[order]
    cum_wrong = np.cumsum(wrong)
    chosen = math.inf
    for i in np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]:
        if i + 1 >= least and cum_wrong[i] <= rate * (i + 1):
            chosen = float(s[i])
    return chosen


def split_threshold(
    scores: np.ndarray, correct: np.ndarray, alpha: float, delta: float, seed: int = 0
) -> float:
    """Learn then Test on a split: half the examples propose candidate thresholds (the lowest at which
    their own wrong share stays within alpha/4, alpha/2 and 3 alpha/4), the other half tests them, most
    conservative first, with the exact binomial p-value of the wrong count among its delivered answers;
    the sequence stops at the first candidate that fails. The candidates and their order come from the
    first half only, so the chosen threshold has P(wrong | delivered) <= alpha with probability
    >= 1 - delta over the second half's draw. inf when none holds."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(scores))
    a, b = pick[: len(pick) // 2], pick[len(pick) // 2 :]
    least = max(1, min_delivered(alpha, delta) // 2)
    candidates = sorted(
        {
            t
            for r in (0.25, 0.5, 0.75)
            if math.isfinite(t := _empirical_threshold(scores[a], correct[a], r * alpha, least))
        },
        reverse=True,
    )
    chosen = math.inf
    for t in candidates:
        delivered = scores[b] >= t
        n, k = int(delivered.sum()), int((delivered & ~correct[b]).sum())
        if n == 0 or stats.binom.cdf(k, n, alpha) > delta:
            break
        chosen = t
    return chosen


def _unit_labels(found: list[Unit], gold: str) -> np.ndarray:
    return np.array([grade(f"{u.heading} {u.text}", gold) and grade(u.text, gold) for u in found], bool)


@dataclass
class Prepared:
    example: Example
    ev_x: np.ndarray  # unit features
    found: list[Unit]
    unit_y: np.ndarray
    scored: object


def prepare(
    examples: Sequence[Example], embed: Embed, progress: Callable[[], None] | None = None
) -> list[Prepared]:
    out = []
    for ex in examples:
        q = analyse(ex.question)
        found = units(ex.passages)
        scored = unit_features(q, found, embed)
        labels = _unit_labels(found, ex.gold) if ex.gold else np.zeros(len(found), bool)
        out.append(Prepared(ex, scored.x, found, labels, scored))
        if progress:
            progress()
    return out


DEV_WEIGHT = 4  # a labelled question counts as this many generated ones (they are what customers ask)


def _weighted(rows: Sequence[Prepared]) -> list[Prepared]:
    return [r for r in rows for _ in range(DEV_WEIGHT if r.example.source == "dev" else 1)]


def _fit_selector(rows: Sequence[Prepared]) -> Logistic:
    rows = _weighted(rows)
    usable = [r for r in rows if r.example.gold and r.example.reference is None and r.unit_y.any()]
    x = np.vstack([r.ev_x for r in usable])
    y = np.concatenate([r.unit_y for r in usable]).astype(float)
    # every question weighs the same, however many units its passages have
    return Logistic.fit(x, y, l2=0.05)


def _answer_rows(
    rows: Sequence[Prepared], selector: Logistic, texts: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The verifier's features and labels of each row's composed answer (its text into `texts`)."""
    xs, ys = [], []
    for r in rows:
        if not r.found:
            xs.append(None)
            ys.append(False)
            if texts is not None:
                texts.append("")
            continue
        ev = Evidence(r.scored.question, r.scored, selector.predict(r.ev_x))  # type: ignore[attr-defined]
        text, chosen = compose(ev)
        xs.append(answer_features(ev, chosen))  # type: ignore[arg-type]
        ys.append(_right(r.example, text))
        if texts is not None:
            texts.append(text)
    width = len(ANSWER_FEATURES)
    matrix = np.vstack([x if x is not None else np.full(width, np.nan) for x in xs])
    return matrix, np.asarray(ys, bool)


def _right(example: Example, text: str) -> bool:
    """The answer carries the gold; for a withheld twin, also in a restatement of the same sentence."""
    if example.reference is None:
        return bool(example.gold) and grade(text, example.gold or "")
    said, ref = set(terms(text)), set(terms(example.reference))
    return grade(text, example.gold or "") and len(said & ref) >= 0.6 * len(ref)


def _folds(rows: Sequence[Prepared], k: int, seed: int) -> list[int]:
    groups = sorted({r.example.group or r.example.question for r in rows})
    rng = random.Random(seed)
    rng.shuffle(groups)
    fold_of = {g: i % k for i, g in enumerate(groups)}
    return [fold_of[r.example.group or r.example.question] for r in rows]


def fit(
    rows: Sequence[Prepared], delta: float = 0.1, k: int = 5, seed: int = 0, embedder: str = ""
) -> tuple[AnswerModel, np.ndarray, np.ndarray, list[str]]:
    """(the model refitted on all rows, cross-fitted verifier scores, their labels, the answers)."""
    folds = np.asarray(_folds(rows, k, seed))
    scores = np.zeros(len(rows))
    labels = np.zeros(len(rows), bool)
    answers = [""] * len(rows)
    for f in range(k):
        train = [r for r, g in zip(rows, folds, strict=True) if g != f]
        held = [i for i, g in enumerate(folds) if g == f]
        selector = _fit_selector(train)
        x_train, y_train = _answer_rows(_weighted(train), selector)
        ok = ~np.isnan(x_train).any(axis=1)
        verifier = Logistic.fit(x_train[ok], y_train[ok], l2=0.1)
        held_texts: list[str] = []
        x_held, y_held = _answer_rows([rows[i] for i in held], selector, held_texts)
        p = np.where(np.isnan(x_held).any(axis=1), 0.0, verifier.predict(np.nan_to_num(x_held)))
        scores[held], labels[held] = p, y_held
        for i, text in zip(held, held_texts, strict=True):
            answers[i] = text
    selector = _fit_selector(rows)
    x_all, y_all = _answer_rows(_weighted(rows), selector)
    ok = ~np.isnan(x_all).any(axis=1)
    verifier = Logistic.fit(x_all[ok], y_all[ok], l2=0.1)
    thresholds = {str(a): split_threshold(scores, labels, a, delta, seed) for a in ALPHAS}
    model = AnswerModel(selector, verifier, thresholds, delta, embedder)
    return model, scores, labels, answers


# --- questions generated from the knowledge base ---------------------------------------------------
_FIGURE = re.compile(
    r"\b(\d[\d,]*(?:\.\d+)?)\s*(%|percent|[A-Za-z]{1,12})?"  # a figure and the word after it (its unit)
)
_WH = {"%": "what percentage", "percent": "what percentage"}


_NOT_PROSE = re.compile(r"[{}$<>=|\\]|://|\]\(|^\W|--|\b\w+\.\w+\(|\w_\w")
_NOT_UNITS = frozenset(
    [
        "a",
        "an",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "the",
        "is",
        "are",
        "was",
        "be",
        "by",
        "with",
        "from",
        "as",
        "if",
        "per",
        "step",
        "steps",
        "version",
    ]
)


def _prose(text: str) -> bool:
    """Running text, not code, commands, JSON, links or tables."""
    words = text.split()
    alphabetic = sum(w.strip(".,;:()").isalpha() for w in words)
    return not _NOT_PROSE.search(text) and alphabetic >= 0.7 * len(words)


def cloze(unit: Unit, rng: random.Random) -> tuple[str, str] | None:
    """A question asking for one figure of a sentence, and its gold (the figure with its unit word);
    None when the sentence is no prose or has no figure with a unit worth asking for."""
    text = unit.text
    if unit.kind == "row" or len(text.split()) < 6 or len(text.split()) > 45 or not _prose(text):
        return None
    figures = [
        m
        for m in _FIGURE.finditer(text)
        if not re.match(r"^(19|20)\d\d$", m.group(1))
        and len(m.group(1).replace(",", "")) <= 7
        and m.group(2)
        and m.group(2).lower() not in _NOT_UNITS
        and (m.start() == 0 or text[m.start() - 1] in " (")  # a number of its own, not part of a name
        and not text[m.end() : m.end() + 1].isalnum()
    ]
    if not figures:
        return None
    m = rng.choice(figures)
    unit_word = (m.group(2) or "").strip()
    asked = _WH.get(unit_word.lower(), f"how many {unit_word}" if unit_word else "what number")
    # a customer names the subject, not the whole sentence: a few of its content words, in order
    pool = _content(text[: m.start()]) + _content(text[m.end() :])
    keep = sorted(rng.sample(range(len(pool)), min(len(pool), max(2, min(6, len(pool) // 2)))))
    question = " ".join([asked, *(pool[i] for i in keep)])
    gold = f"{m.group(1)} {unit_word}".strip()
    return f"{question[0].upper()}{question[1:]}?", gold


def _content(text: str) -> list[str]:
    """The words a question would keep: no stopwords, no short ones, punctuation stripped."""
    words = (w.strip(".,;:()") for w in text.split())
    return [w for w in words if len(w) > 2 and w.lower() not in _NOT_UNITS]
