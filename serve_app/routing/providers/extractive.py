"""The offline first tier: a grounded extractive responder over the retrieved passages.

It quotes the passage section (a heading's block) that best covers the question's terms (BM25-weighted
overlap with light stemming), and a second one if it adds terms, each cited [n], and states as its
confidence the idf-weighted share of the question's terms those sections cover. It never invents text:
when the passages do not cover the question, it says so with a low confidence and the router escalates.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from serve_app.routing.providers.base import Completion, LLMProvider, Prompt, completion

EXTRACTIVE = "extractive-grounded"
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")
_TOKEN = re.compile(r"[a-z0-9]+")
_LIST_ITEM = re.compile(r"^(\d+[.)]|[-*+])\s")
_STOPWORDS = (
    "a an and are as at be by can do does for from how i if in is it its me my of on or so that the this"
    " to was we what when where which who why will with you your our us there their them then than into"
    " about please hi hello thanks thank get got"
)
_STOP = frozenset(_STOPWORDS.split(" "))
NOT_FOUND = "I could not find this in the help center."


def terms(text: str) -> list[str]:
    """Lowercase content words, crudely stemmed (plural/-ing/-ed endings)."""
    out = []
    for word in _TOKEN.findall(text.lower()):
        if word in _STOP:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        if len(word) > 4 and word.endswith("e"):  # share / shared / sharing -> shar
            word = word[:-1]
        out.append(word)
    return out


@dataclass
class Section:
    """A heading's block of one passage: its sentences and the terms of heading + body."""

    passage: int
    heading: str
    sentences: list[str]
    bag: Counter = field(default_factory=Counter)


def _close(section: Section, paragraph: list[str]) -> None:
    text = " ".join(paragraph).strip()
    paragraph.clear()
    section.sentences += [x.strip() for x in _SENTENCE.split(text) if len(x.split()) >= 3]


def sections(passages: tuple[str, ...]) -> list[Section]:
    """Split passages at markdown headings; join wrapped lines into paragraphs, then sentences."""
    out: list[Section] = []
    for n, passage in enumerate(passages, 1):
        current = Section(n, "", [])
        paragraph: list[str] = []

        for line in [*passage.splitlines(), ""]:
            stripped = line.strip()
            if stripped.startswith("#") or not stripped or _LIST_ITEM.match(stripped):
                _close(current, paragraph)
            if stripped.startswith("#"):
                out.append(current)
                current = Section(n, stripped.lstrip("#").strip(), [])
            elif stripped:
                paragraph.append(stripped)
        _close(current, paragraph)
        out.append(current)
    for section in out:
        section.bag = Counter(terms(section.heading)) + Counter(terms(" ".join(section.sentences)))
    return [s for s in out if s.sentences]


class ExtractiveResponder(LLMProvider):
    provider = "self-hosted"
    offline = True

    def __init__(self, model: str = EXTRACTIVE, max_words: int = 90, max_sections: int = 2, k1: float = 1.2):
        super().__init__(model)
        self.max_words, self.max_sections, self.k1 = max_words, max_sections, k1

    def _gain(self, bag: Counter, question: set[str], idf: dict[str, float], covered: set[str]) -> float:
        """BM25-saturated idf weight of the question terms in a section; covered terms count less."""
        return sum(
            idf[t] * (bag[t] * (self.k1 + 1) / (bag[t] + self.k1)) * (0.2 if t in covered else 1.0)
            for t in question
            if bag[t]
        )

    def _quote(self, section: Section, question: set[str]) -> str:
        """The section whole when short, else its sentences that mention the question, in order."""
        words = sum(len(x.split()) for x in section.sentences)
        picked = section.sentences
        if words > self.max_words:
            ranked = sorted(range(len(picked)), key=lambda i: -len(set(terms(picked[i])) & question))
            keep, total = set(), 0
            for i in ranked:
                if total and total + len(picked[i].split()) > self.max_words:
                    break
                keep.add(i)
                total += len(picked[i].split())
            picked = [x for i, x in enumerate(picked) if i in keep]
        return " ".join(picked)

    def answer(self, prompt: Prompt) -> tuple[str, float]:
        # a vague question ("what does this error mean?") is about what its screen shows
        question = set(terms(" ".join([prompt.question, *prompt.screen_lines])))
        found = sections(prompt.context)
        if not question or not found:
            return NOT_FOUND, 0.0
        df = Counter(t for sec in found for t in set(sec.bag))
        idf = {t: math.log(1 + (len(found) + 1) / (df.get(t, 0) + 0.5)) for t in question}
        chosen: list[Section] = []
        covered: set[str] = set()
        for _ in range(self.max_sections):
            gains = {
                i: self._gain(sec.bag, question, idf, covered) - 0.01 * sec.passage  # ties: better rank
                for i, sec in enumerate(found)
                if sec not in chosen
            }
            best = max(gains, key=gains.__getitem__, default=None)
            if best is None or gains[best] <= 0 or (chosen and not set(found[best].bag) & question - covered):
                break
            chosen.append(found[best])
            covered |= set(found[best].bag) & question
        if not chosen:
            return NOT_FOUND, 0.0
        confidence = sum(idf[t] for t in covered) / sum(idf.values())
        body = "\n\n".join(f"{self._quote(sec, question)} [{sec.passage}]" for sec in chosen)
        return body, round(confidence, 3)

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        body, confidence = self.answer(prompt)
        text = f"{body}\nConfidence: {confidence:.2f}"
        return completion(prompt, text, self.model, None, None, truncated=False, offline=True)
