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
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from serve_app.answers.compose import compose
from serve_app.answers.evidence import Embed, analyse, terms, unit_features
from serve_app.answers.model import ANSWER_FEATURES, AnswerModel, Evidence, Logistic, answer_features
from serve_app.answers.units import Unit, units
from supportgraph_tools.answers.evaluate import grade

ALPHAS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2)
Groups = Sequence[str] | None  # each example's group (a split keeps a group on one side); None: its own
_CITED = re.compile(r"\[\d+\]")


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
    # a heading's question ("How do I create a bucket?"): answered right by a quote from that section
    # (or, for its withheld twin, from a section that says the same)
    section: str | None = None


def min_delivered(alpha: float, delta: float) -> int:
    """The fewest delivered answers at which 0 wrong ones can certify a rate <= alpha at level delta."""
    return math.ceil(math.log(delta) / math.log(1 - alpha))


def selective_threshold(
    scores: np.ndarray, correct: np.ndarray, alpha: float, delta: float, start: int | None = None
) -> float:
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
    start = max(start or 0, min_delivered(alpha, delta))
    chosen = math.inf
    for i in last_of:
        n = i + 1
        if n < start:
            continue
        if stats.binom.cdf(int(cum_wrong[i]), n, alpha) > delta:
            break
        chosen = float(s[i])
    return chosen


def ltt_threshold(
    scores: np.ndarray, correct: np.ndarray, alpha: float, delta: float, seed: int = 0, groups: Groups = None
) -> float:
    """The lower of two Learn-then-Test thresholds, each at level delta / 2 (so the lower one holds at
    delta by the union bound): `split_threshold`, and `selective_threshold` starting where three times
    the answers needed to certify alpha with no error are delivered (so one early wrong answer among the
    highest scores does not end the sequence before it has the data to pass)."""
    half = delta / 2
    by_split = split_threshold(scores, correct, alpha, half, seed, groups)
    by_sequence = selective_threshold(scores, correct, alpha, half, start=3 * min_delivered(alpha, half))
    return min(by_split, by_sequence)


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
    scores: np.ndarray,
    correct: np.ndarray,
    alpha: float,
    delta: float,
    seed: int = 0,
    groups: Groups = None,
) -> float:
    """Learn then Test on a split: half the examples propose candidate thresholds (the lowest at which
    their own wrong share stays within alpha/4, alpha/2 and 3 alpha/4), the other half tests them, most
    conservative first, with the exact binomial p-value of the wrong count among its delivered answers;
    the sequence stops at the first candidate that fails. The candidates and their order come from the
    first half only, so the chosen threshold has P(wrong | delivered) <= alpha with probability
    >= 1 - delta over the second half's draw. With `groups` (twins of one question, examples of one
    section), the halves split groups, not rows: rows of one group are not independent, and a group
    on both sides would test a candidate on the rows that proposed it. inf when none holds."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    a, b = _halves(len(scores), seed, groups)
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


def _halves(n: int, seed: int, groups: Groups) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two halves drawn at random: whole groups to each side when groups are given."""
    rng = np.random.default_rng(seed)
    if groups is None:
        pick = rng.permutation(n)
        return pick[: n // 2], pick[n // 2 :]
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} scores")
    names = sorted(set(groups))
    first = {names[i] for i in rng.permutation(len(names))[: len(names) // 2]}
    side = np.array([g in first for g in groups], bool)
    return np.nonzero(side)[0], np.nonzero(~side)[0]


def _unit_labels(found: list[Unit], gold: str) -> np.ndarray:
    return np.array([grade(f"{u.heading} {u.text}", gold) and grade(u.text, gold) for u in found], bool)


def _labels(example: Example, found: list[Unit]) -> np.ndarray:
    """Which units answer the example: those carrying the gold, or for a heading's question, those
    quoting its section."""
    section = getattr(example, "section", None)
    if section is not None and example.source == "generated":
        return np.array([_from_section(u.text, section) for u in found], bool)
    return _unit_labels(found, example.gold) if example.gold else np.zeros(len(found), bool)


@dataclass
class Prepared:
    example: Example
    ev_x: np.ndarray  # unit features
    found: list[Unit]
    unit_y: np.ndarray
    scored: object
    weight: int = 1  # fit-answers --also PATH:N: another knowledge base's examples, weighted


def prepare(
    examples: Sequence[Example], embed: Embed, progress: Callable[[], None] | None = None
) -> list[Prepared]:
    out = []
    for ex in examples:
        q = analyse(ex.question)
        found = units(ex.passages)
        scored = unit_features(q, found, embed)
        labels = _labels(ex, found)
        out.append(Prepared(ex, scored.x, found, labels, scored))
        if progress:
            progress()
    return out


def widen_sections(rows: Sequence[Prepared]) -> list[Prepared]:
    """A heading's question is answered right by any passage of its document, not only its own chunk:
    a knowledge base splits long pages over several chunks, and the steps under "To export a snapshot"
    can sit in the chunk after the heading's. The document's passages among an example's are those
    its withheld twin (same group) lacks."""
    twins = {r.example.group: r.example for r in rows if r.example.source == "generated-withheld"}
    out = []
    for r in rows:
        ex = r.example
        twin = twins.get(ex.group)
        if getattr(ex, "section", None) is None or ex.source != "generated" or twin is None:
            out.append(r)
            continue
        own = [p for p in ex.passages if p not in twin.passages]
        if not own:
            out.append(r)
            continue
        wider = replace(ex, section="\n".join([ex.section or "", *own]))
        out.append(
            Prepared(wider, r.ev_x, r.found, _labels(wider, r.found), r.scored, getattr(r, "weight", 1))
        )
    return out


EMPIRICAL_LEAST = 10  # delivered answers an empirical threshold rests on at least
DEV_WEIGHT = 4  # a labelled question counts as this many generated ones (they are what customers ask)


def _weighted(rows: Sequence[Prepared]) -> list[Prepared]:
    return [
        r
        for r in rows
        for _ in range((DEV_WEIGHT if r.example.source == "dev" else 1) * getattr(r, "weight", 1))
    ]


def _fit_selector(rows: Sequence[Prepared]) -> Logistic:
    rows = _weighted(rows)
    usable = [
        r
        for r in rows
        if r.example.source in ("dev", "generated") and r.example.reference is None and r.unit_y.any()
    ]
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


def _from_section(text: str, section: str) -> bool:
    """The answer quotes the section: at least 80% of its content terms are the section's."""
    said = terms(_CITED.sub(" ", text))
    known = set(terms(section))
    return len(said) >= 3 and sum(t in known for t in said) >= 0.8 * len(said)


def _right(example: Example, text: str) -> bool:
    """The answer carries the gold; for a withheld twin, also in a restatement of the same sentence; for
    a heading's question, it quotes the heading's section."""
    section = getattr(example, "section", None)  # examples cached before headings had none
    if section is not None:
        return _from_section(text, section)
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
    groups = [r.example.group or r.example.question for r in rows]
    thresholds = {str(a): ltt_threshold(scores, labels, a, delta, seed, groups) for a in ALPHAS}
    empirical = {str(a): _empirical_threshold(scores, labels, a, EMPIRICAL_LEAST) for a in ALPHAS}
    model = AnswerModel(selector, verifier, thresholds, delta, embedder, empirical=empirical)
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
    figures = [m for m in figures if _unit_word(m.group(2))]
    if not figures:
        return None
    m = rng.choice(figures)
    unit_word = (m.group(2) or "").strip()
    asked = _WH.get(unit_word.lower(), f"how many {unit_word}" if unit_word else "what number")
    # a customer names the subject, not the whole sentence: a few of its content words, in order
    pool = _content(text[: m.start()]) + _content(text[m.end() :])
    if len(pool) < 4:
        return None  # too little of the sentence left to say what is asked
    keep = sorted(rng.sample(range(len(pool)), max(4, min(7, len(pool) // 2))))
    question = " ".join([asked, *(pool[i] for i in keep)])
    gold = f"{m.group(1)} {unit_word}".strip()
    return f"{question[0].upper()}{question[1:]}?", gold


# words after a figure that are not its unit: function words, single letters ("2 x"), and (below)
# capitalised words, which start the next sentence part or name something, bar the short units
_NOT_A_UNIT_WORDS = (
    "then than you your can will would that this which its not no all any each more less new one two "
    "may might must should could also only times"
)
_NOT_A_UNIT = frozenset(_NOT_A_UNIT_WORDS.split())
_SHORT_UNITS_WORDS = "KB MB GB TB PB KiB MiB GiB TiB PiB ms AZ AZs IP IPs CPU CPUs vCPU vCPUs"
_SHORT_UNITS = frozenset(_SHORT_UNITS_WORDS.lower().split())


def _unit_word(word: str | None) -> bool:
    if word == "%":
        return True
    if not word or len(word) < 2 or not word.isalpha() or word.lower() in _NOT_A_UNIT:
        return False
    return word.islower() or word.lower() in _SHORT_UNITS  # not "900 Valid", "2 EXAMPLE"


def plausible_cloze(example: Example) -> bool:
    """A generated question that says what it asks (also used to clean examples cached before the
    generator's current filters): a unit word and at least four words of its sentence."""
    if not example.source.startswith("generated") or getattr(example, "section", None) is not None:
        return True
    unit = (example.gold or "").split(" ", 1)[1:] or [""]
    words = example.question.rstrip("?").split()
    asked = 3 if words[:2] == ["How", "many"] else 2
    return _unit_word(unit[0]) and len(words) - asked >= 4


_GERUND_E = ("at", "iz", "ur", "bl", "ag", "ov", "us", "ir", "ac", "iv", "uc", "et", "ot", "ut", "ar")


def _base_verb(word: str) -> str:
    """'Creating' -> 'create', 'Setting' -> 'set', 'Launching' -> 'launch' (headings' gerunds, roughly)."""
    base = word[:-3].lower()
    if len(base) > 2 and base[-1] == base[-2] and base[-1] not in "lsdf":
        return base[:-1]
    if base.endswith(_GERUND_E) or len(base) == 2:
        return base + "e"
    return base


def heading_question(heading: str) -> str | None:
    """A customer's question for a section from its heading's last part: "To create a bucket" and
    "Creating a bucket" -> "How do I create a bucket?"; a task heading ("Share a note by link") ->
    "How do I share a note by link?"; a noun heading ("Deleted notes") -> "What should I know about
    deleted notes?". None for headings too short, too long or not words."""
    last = _STEP.sub("", heading.rsplit(">", 1)[-1].strip().strip("#*` ").rstrip(":."))
    last = re.sub(r"\byour\b", "my", last, flags=re.I)
    words = last.split()
    if not 2 <= len(words) <= 10 or not _prose(last) or any(w.isdigit() for w in words):
        return None
    if [w.lower() for w in words[:2]] == ["how", "to"]:
        words = words[1:]
    first, rest = words[0], " ".join(words[1:])
    if first.lower() == "to" and len(words) >= 2:
        return f"How do I {rest[0].lower()}{rest[1:]}?"
    if first.endswith("ing") and len(first) > 5 and words[1].lower() not in ("and", "&", "or"):
        return f"How do I {_base_verb(first)} {rest}?"
    if first.lower() in _TASK_VERBS:
        return f"How do I {first.lower()} {rest}?"
    return f"What should I know about {last[0].lower()}{last[1:]}?"


_TASK_VERB_WORDS = (
    "add change choose configure connect create delete disable edit enable export find get import "
    "install invite launch manage move remove rename reset restore set share sign start stop turn "
    "update upgrade use view"
)
_TASK_VERBS = frozenset(_TASK_VERB_WORDS.split())
_STEP = re.compile(r"^(step\s+\d+|\d+(\.\d+)*)\s*[:.)-]?\s*", re.I)


def _content(text: str) -> list[str]:
    """The words a question would keep: no stopwords, no short ones, punctuation stripped."""
    words = (w.strip(".,;:()") for w in text.split())
    return [w for w in words if len(w) > 2 and w.lower() not in _NOT_UNITS]
