"""What a question asks and how well each answer unit of the retrieved passages answers it.

`analyse` reads the question: its content terms (lightly stemmed), its rare terms (the ones that name the
thing asked about), and the answer type it wants (a number for "how many / maximum / how long", a yes/no
statement for "can I / does it"). `unit_features` scores every unit of the passages against it with
signals that do not reward a unit for merely repeating the question: the question's rare terms present
in the same unit, the semantic match of question and unit (MiniLM), the answer type present, the
passage's rank, the unit's own shape. The features feed `answers.model`'s unit selector (which unit
carries the asked-for fact) and the verifier (whether any does).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from serve_app.answers.units import Unit

# texts -> L2-normalised float32 rows (the bundled MiniLM by default: answers/embedding.py)
Embed = Callable[[list[str]], np.ndarray]

_TOKEN = re.compile(r"[a-z0-9]+(?:[.\-][a-z0-9]+)*")
_STOPWORDS = (
    "a an and are as at be by can could do does did for from how i if in is it its me my of on or so that the"
    " this to was we what when where which who whom whose why will with you your our us there their them"
    " then than into about please hi hello hey thanks thank get got would should may might just really"
    " any some also still keep keeps kept even already again need needs want wants trying tried try know"
    " use using used way ways make makes made have has had am been being were isn t s don doesn didn can't"
    " okay ok yes no not im ive id tell whats hows"
)
STOP = frozenset(_STOPWORDS.split())
_NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "fifteen": "15",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "hundred": "100",
    "thousand": "1000",
}
_WANTS_NUMBER = re.compile(
    r"\bhow (many|much|long|large|big|often|far|fast|old|high|low|small)\b|\b(max(imum)?|min(imum)?|limits?|"
    r"quotas?|upper|lower|number of|count of|size of|sizes?|capacity|length|duration|timeout|ttl|"
    r"retention|percent(age)?|port|version|up to|at most|at least|how many|cost|price|rate)\b",
    re.I,
)
_YES_NO = re.compile(
    r"^\s*(?:\w+[,!]\s+)?(can|could|does|do|is|are|will|should|may|must|did|has|have|am|was|were)\b|"
    r"\b(can|could) (i|we|you|it)\b|\bis (it|there) (possible|a way|any way)\b|\bdoes \w+ support\b|"
    r"\bpossible to\b|\ballowed to\b",
    re.I,
)
_HAS_NUMBER = re.compile(r"\d")

# The kind of quantity a question asks for, and the kinds a text states. A customer asks "how long are
# the results kept around?" with none of the documentation's words, but the answer that states a
# duration is of the asked kind; one that states a size or a count is not.
# a figure: digits with separators (one run, not restartable at every comma: no quadratic backtracking
# on "1,2,3,..."), or a number word
_FIGURE_WORD = (
    r"(?:(?<![\d,.])\d+(?:[,.]\d+)*|one|two|three|four|five|six|seven|eight|nine|ten|twelve|fifteen|twenty|"
    r"thirty|sixty|ninety|hundred|few|several)"
)
_TIME_UNIT = r"(?:ms|milliseconds?|seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?)"
_SIZE_UNIT = r"(?:bytes?|[KMGTP]i?B|kilobytes?|megabytes?|gigabytes?|terabytes?|petabytes?)"
_STATES = {
    "duration": re.compile(
        rf"\b{_FIGURE_WORD}[\s-]*{_TIME_UNIT}\b|\b\d+(?:h|hrs?|d)\b|"
        r"\b(?:an?|one|every|each|per|once an?) (?:minute|hour|day|week|month|year)\b|"
        r"\b(?:hourly|daily|weekly|monthly|yearly|annually)\b",
        re.I,
    ),
    "size": re.compile(rf"\b{_FIGURE_WORD}[\s-]*{_SIZE_UNIT}(?![a-z/])", re.I),  # not a rate: "100 Mb/s"
    "percent": re.compile(rf"\b{_FIGURE_WORD}\s*(?:%|percent\b|per cent\b)", re.I),
}
# "how long can a bucket name be?" asks for a length (characters, bytes), not a time or a data size
_LENGTH_NOUNS = (
    r"(?:names?|file ?names?|user ?names?|keys?|strings?|values?|characters?|bytes?|paths?|passwords?|"
    r"titles?|descriptions?|identifiers?|ids?|tags?|urls?|messages?|labels?|texts?|prefix(?:es)?|fields?)"
)
_LENGTH_ASK = re.compile(
    rf"\bhow (?:long|large|big)\s+(?:can|may|could|should|must|is|are|will)\s+(?:[\w'-]+\s+){{0,4}}?"
    rf"{_LENGTH_NOUNS}\s*(?:be\b|\?|$)",
    re.I,
)
_ASKS = {
    "duration": re.compile(
        rf"\bhow (?:long|often|soon|quickly|frequently)\b|\b(?:how many|what number of) {_TIME_UNIT}\b",
        re.I,
    ),
    "size": re.compile(
        rf"\bhow (?:much|big|large) (?:\w+ )?(?:data|memory|ram|storage|space|disk)\b|\bhow (?:big|large)\b|"
        rf"\b(?:how many|what number of) {_SIZE_UNIT}(?![a-z])|"
        r"\b(?:max(?:imum)?|min(?:imum)?) (?:\w+ )?size\b|\bsize (?:limit|of)\b",
        re.I,
    ),
    "percent": re.compile(r"\bpercent(?:age)?\b|\bper cent\b|\bwhat (?:fraction|portion)\b", re.I),
}
# a setting that holds a duration, asked about by a "what / which / when" question ("what's the default
# TTL?"), not in "how do I change the timeout?" or "does the key expire?"
_DURATION_SETTING = re.compile(
    r"\b(?:frequency|ttl|time-?out|retention|retained|expir(?:e|es|y|ation)|kept (?:around|for)|"
    r"interval|delay|cool-?down|grace period|waiting period)\b",
    re.I,
)
_HOW_TO = r"\bhow (?:do|can|should|would) (?:i|we|you)\b|\bhow to\b"
_HOW_TO_ASK = re.compile(_HOW_TO, re.I)
_ASKS_VALUE = re.compile(r"\b(?:what|what's|whats|which|when)\b", re.I)
_MONEY = re.compile(r"\b(?:cost|costs|price|pricing|charged?|pay|bill(?:ed|ing)?)\b", re.I)


def asked_quantity(ask: str) -> str | None:
    """The kind of quantity the ask wants (duration, size, percent), or None (another number or none).
    Where it names more than one, the last (the question follows the context it gives)."""
    lengths = [m.start() for m in _LENGTH_ASK.finditer(ask)]
    last: dict[str, int] = {}
    for kind, pattern in _ASKS.items():
        for m in pattern.finditer(ask):
            if m.start() not in lengths and not (kind == "size" and _MONEY.search(ask)):
                last[kind] = m.start()
    if _ASKS_VALUE.search(ask) and not _HOW_TO_ASK.search(ask):
        for m in _DURATION_SETTING.finditer(ask):
            last["duration"] = max(last.get("duration", -1), m.start())
    return max(last, key=last.__getitem__) if last else None


def states_quantity(text: str, kind: str) -> bool:
    """Whether the text states a quantity of that kind ("90 days", "daily", "1 MB", "5 percent")."""
    return bool(_STATES[kind].search(text))


_MODAL = re.compile(
    r"\b(can|cannot|can't|must|only|not|no|supports?|supported|unsupported|allows?|doesn't|isn't|"
    r"required|requires|optional|always|never)\b",
    re.I,
)
_REFERRING = re.compile(r"^(this|that|these|those|it|they|such|here|the following)\b", re.I)


def stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


def tokens(text: str) -> list[str]:
    """Lowercase tokens; dotted and hyphenated names ("db.m5.large", "x-api-key") stay whole, and are
    also split into their parts; number words become digits; "1MB" is "1" and "mb"."""
    out: list[str] = []
    lowered = re.sub(r"(\d)([a-z]{1,4})\b", r"\1 \2", text.lower().replace(",", ""))
    for token in _TOKEN.findall(lowered):
        token = _NUMBER_WORDS.get(token, token)
        out.append(token)
        if "." in token or "-" in token:
            out += [p for p in re.split(r"[.\-]", token) if p]
    return out


def terms(text: str) -> list[str]:
    """Content terms: tokens without stopwords, stemmed."""
    return [stem(t) for t in tokens(text) if t not in STOP]


_PROCEDURE = re.compile(rf"{_HOW_TO}|\bsteps?\b|\bwhat do i do\b", re.I)


@dataclass(frozen=True)
class Question:
    text: str
    terms: tuple[str, ...]
    wants_number: bool
    yes_no: bool
    procedure: bool = False  # "how do I ...": the answer is a list of steps
    ask: str = ""  # the sentence(s) that ask (`ask_of`); the whole text when it is one question
    ask_terms: tuple[str, ...] = ()

    @property
    def term_set(self) -> frozenset[str]:
        return frozenset(self.terms)

    @property
    def asked(self) -> tuple[str, ...]:
        """The terms of what is asked: the ask's, else all of them."""
        return self.ask_terms or self.terms


_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\n+|\s+-\s+|\s*:\(\s*|\s*:\)\s*")
_INTERROGATIVE = re.compile(
    r"^\s*(?:and |so |but |also |ok |okay |hi |hey |hello |pls |please )*(?:what|what's|whats|how|"
    r"which|when|where|why|who|is|are|can|could|does|do|did|should|may|must)\b",
    re.I,
)
# closing lines that open like questions but ask for nothing in the help center
_CLOSING = re.compile(
    r"^\s*(?:any (?:help|idea|ideas|advice|pointers|tips|thoughts)|thanks|thank you|cheers|appreciate|"
    r"let me know|please (?:help|advise)|"
    r"(?:or )?should i (?:just )?(?:open|file|raise|create|submit|contact)|"
    r"can (?:you|someone) help|is this a bug|am i doing something wrong|what am i doing wrong|"
    r"does that make sense)\b",
    re.I,
)
_POINTING = re.compile(r"\b(it|its|this|that|these|those|they|them|there|then)\b", re.I)
ASK_MIN_TERMS = 3  # an ask with fewer content terms takes the sentence before it along
ASK_SENTENCES = 12  # the ask is looked for among the message's last sentences


def ask_of(text: str) -> str:
    """The part of a customer's message that asks: its last question (a sentence with a question mark
    or one that opens like a question; not a closing line like "Any help appreciated?"), with the
    sentences before it while the question is too short to name its subject or points back at it ("How
    far back does it go?"), and the sentences after a question that points (what it points at: a pasted
    error, the screen's lines). Context before the question (what the customer did, the symptom) names the
    subject, not the asked-for fact: the answer is scored against the ask. A message of one sentence,
    or none that asks, is its own ask."""
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()][-ASK_SENTENCES:]
    if len(sentences) <= 1:
        return text.strip()
    asking = [
        i for i, s in enumerate(sentences) if ("?" in s or _INTERROGATIVE.match(s)) and not _CLOSING.match(s)
    ]
    if not asking:
        return text.strip()
    last = asking[-1]
    pointing = bool(_POINTING.search(sentences[last]))
    # what a pointing question points at may follow it: a pasted message, the screen's lines
    # ("what does this error mean? Sync failed. Error 0x80070005: access denied")
    end = len(sentences) if pointing else last + 1
    start = last
    named = set(terms(" ".join(sentences[last:end])))
    while start > 0 and (len(named) < ASK_MIN_TERMS or (start == last and pointing)):
        start -= 1
        named |= set(terms(sentences[start]))
    return " ".join(sentences[start:end])


def analyse(question: str) -> Question:
    ask = ask_of(question)
    return Question(
        question,
        tuple(dict.fromkeys(terms(question))),
        bool(_WANTS_NUMBER.search(ask)),
        bool(_YES_NO.search(ask)),
        bool(_PROCEDURE.search(ask)),
        ask,
        tuple(dict.fromkeys(terms(ask))),
    )


CONTEXT_WEIGHT = 0.5  # a term said around the question, not in it, weighs this much of one in it


def _idf(question: Question, bags: Sequence[Counter]) -> dict[str, float]:
    """Inverse unit frequency of each question term among the candidate units (smoothed)."""
    n = len(bags)
    df = Counter(t for bag in bags for t in question.term_set if bag[t])
    return {t: math.log(1 + (n + 1) / (df.get(t, 0) + 0.5)) for t in question.term_set}


FEATURES = (
    "sem",
    "sem_heading",
    "lex",
    "lex_context",
    "rare",
    "rare_in_unit",
    "bigram",
    "number",
    "wants_number_missing",
    "yes_no_modal",
    "rank",
    "first_of_passage",
    "row",
    "item",
    "log_words",
    "referring",
    "lex_share_of_best",
)


@dataclass
class Scored:
    """The units of a question's passages with their feature rows (`FEATURES`)."""

    question: Question
    units: list[Unit]
    x: np.ndarray  # [units, features]
    question_vector: np.ndarray | None = None


def _bigrams(items: Sequence[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(items))


def unit_features(
    question: Question,
    found: list[Unit],
    embed: Embed | None,
    max_embedded: int = 32,
) -> Scored:
    """Feature rows for every unit. Only the `max_embedded` units with the best lexical scores (and the
    passages' headings) are embedded; the others get the lowest semantic score seen."""
    if not found:
        return Scored(question, [], np.zeros((0, len(FEATURES))))
    unit_terms = [terms(u.text) for u in found]
    heading_terms = [terms(u.heading) for u in found]
    bags = [Counter(t) for t in unit_terms]
    context = [Counter(t) + Counter(h) for t, h in zip(unit_terms, heading_terms, strict=True)]
    idf = _idf(question, context)
    asked = set(question.asked)
    # the terms of the context around the question (what the customer did, the symptom) count less
    weight = {t: idf[t] * (1.0 if t in asked else CONTEXT_WEIGHT) for t in question.term_set}
    total = sum(weight.values()) or 1.0
    rare = sorted(asked, key=lambda t: -idf[t])[: max(1, min(3, len(asked) // 2))]
    q_bigrams = _bigrams(question.asked)
    lex = np.array([sum(weight[t] for t in question.term_set if b[t]) / total for b in bags])
    lex_context = np.array([sum(weight[t] for t in question.term_set if c[t]) / total for c in context])
    rare_context = np.array([sum(1 for t in rare if c[t]) / max(len(rare), 1) for c in context])
    rare_unit = np.array([sum(1 for t in rare if b[t]) / max(len(rare), 1) for b in bags])
    bigram = np.array(
        [len(q_bigrams & _bigrams(t)) / len(q_bigrams) if q_bigrams else 0.0 for t in unit_terms]
    )
    sem = np.zeros(len(found))
    sem_heading = np.zeros(len(found))
    question_vector = None
    if embed is not None:
        order = np.argsort(-(lex_context + rare_unit), kind="stable")[:max_embedded]
        headings = sorted({u.heading for u in found})
        # a message with context around its question is matched as a whole and by its ask, averaged
        asks = [question.ask] if question.ask and question.ask != question.text else []
        texts = [question.text, *asks] + [found[i].text for i in order] + headings
        vectors = embed(texts)
        question_vector = vectors[0]
        probe = vectors[0] if not asks else vectors[0] + vectors[1]
        probe = probe / (float(np.linalg.norm(probe)) or 1.0)
        sims = vectors[1 + len(asks) :] @ probe
        unit_sims, heading_sims = sims[: len(order)], dict(zip(headings, sims[len(order) :], strict=True))
        sem[:] = float(unit_sims.min()) if len(unit_sims) else 0.0
        sem[order] = unit_sims
        sem_heading = np.array([heading_sims[u.heading] for u in found])
    best_lex = max(float(lex.max()), 1e-9)
    x = np.column_stack(
        [
            sem,
            sem_heading,
            lex,
            lex_context,
            rare_context,
            rare_unit,
            bigram,
            [float(bool(_HAS_NUMBER.search(u.text))) for u in found],
            [float(question.wants_number and not _HAS_NUMBER.search(u.text)) for u in found],
            [float(question.yes_no and bool(_MODAL.search(u.text))) for u in found],
            [1.0 / u.passage for u in found],
            [float(u.position == 0) for u in found],
            [float(u.kind == "row") for u in found],
            [float(u.kind == "item") for u in found],
            [math.log1p(u.words) for u in found],
            [float(bool(_REFERRING.match(u.text))) for u in found],
            lex / best_lex,
        ]
    )
    return Scored(question, found, x, question_vector)
