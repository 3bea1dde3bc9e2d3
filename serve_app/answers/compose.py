"""The extractive answer: the unit that carries the asked-for fact, quoted with what it needs to be read.

The selector's best unit is quoted whole, cited [n]. A unit that leans on the one before it (it starts
with "This", "These", "It"...; or it is a list item or table row after an introducing sentence ending in
a colon) is quoted with that one; a unit that announces what follows ("Use the following command to
...") is quoted with the command, example or list after it. Nothing is paraphrased: every word comes
from the passage.
"""

from __future__ import annotations

import re

from serve_app.answers.model import Evidence
from serve_app.answers.units import Unit

_LEANS = ("this ", "that ", "these ", "those ", "it ", "they ", "such ", "here ", "the following ")
MAX_WORDS = 90


def _leans_on_previous(unit: Unit, previous: Unit | None) -> bool:
    if previous is None or previous.passage != unit.passage or previous.position != unit.position - 1:
        return False
    if unit.text.lower().startswith(_LEANS):
        return True
    return unit.kind in ("item", "row") and previous.kind == "sentence" and previous.text.endswith(":")


def _steps(ev: Evidence, best: int, max_words: int) -> list[int]:
    """The list the best unit belongs to, when the question asks how to do something: its consecutive
    items under the same heading, within `max_words` (the steps, not one of them)."""
    found = ev.units
    run = [best]
    for step in (-1, 1):
        i = best + step
        while 0 <= i < len(found):
            u = found[i]
            if u.kind != "item" or u.passage != found[best].passage or u.heading != found[best].heading:
                break
            run.append(i)
            i += step
    run.sort()
    out, words = [], 0
    for i in run:
        if words + found[i].words > max_words and out:
            break
        out.append(i)
        words += found[i].words
    return out if best in out else [best]


# a unit that announces what comes next ("Use the following command to ...", "as follows:", "shown below")
_ANNOUNCES = re.compile(
    r"\bthe following\b(?! (?:day|week|month|year|morning|time))|\bas follows\b|"
    r"\b(?:shown|listed|described|given) below\b|\bbelow\s*:?\s*$|:\s*$",
    re.I,
)
# what such a unit announces: a command line, code or a structured example (not a sentence of prose)
_COMMAND = re.compile(r"\$ |\s--?\w|://|[{}<>=|]|\w\(|^[a-z][\w.-]* [\w./-]+(?: |$)(?!.*\.$)")


def _announced(ev: Evidence, best: int, room: int) -> list[int]:
    """What the best unit announces, right after it under the same heading of the same passage: a list's
    consecutive items, a table's rows, or one command or example, within `room` more words."""
    found, unit = ev.units, ev.units[best]
    if not _ANNOUNCES.search(unit.text):
        return []
    out: list[int] = []
    words = 0
    for i in range(best + 1, len(found)):
        nxt = found[i]
        if (
            nxt.passage != unit.passage
            or nxt.heading != unit.heading
            or nxt.position != unit.position + len(out) + 1
            or words + nxt.words > room
        ):
            break
        listed = nxt.kind in ("item", "row")
        if not listed and (out or not _COMMAND.search(nxt.text)):
            break
        out.append(i)
        words += nxt.words
        if not listed:  # a command or an example: the one unit
            break
    return out


def compose(ev: Evidence, max_words: int = MAX_WORDS) -> tuple[str, int | None]:
    """(answer text with its citation, the index of the quoted unit); ("", None) without units."""
    if not ev.units:
        return "", None
    best = ev.ranked()[0]
    unit = ev.units[best]
    if unit.kind == "item" and ev.question.procedure:
        steps = _steps(ev, best, max_words)
        if len(steps) > 1:
            body = " ".join(f"{n}. {ev.units[i].text}" for n, i in enumerate(steps, 1))
            return f"{body} [{unit.passage}]", best
    previous = ev.units[best - 1] if best > 0 else None
    parts = [unit.text]
    leans = previous is not None and _leans_on_previous(unit, previous)
    if leans and previous is not None and previous.words + unit.words <= max_words:
        parts.insert(0, previous.text)
    parts += [ev.units[i].text for i in _announced(ev, best, max_words - len(" ".join(parts).split()))]
    return f"{' '.join(parts)} [{unit.passage}]", best
