"""Answer units: the sentences, list items and table rows of retrieved passages.

A passage reaches the answering tiers as `## heading` lines followed by its content, whose line breaks the
chunker has already joined (a Markdown list or table arrives as one line). This module splits it back
into the smallest pieces that can carry one fact, each quotable on its own: a sentence, a list item, or
a table row rendered with its column headers ("db.m5.large: MySQL 64; Oracle 64"), so a quoted row still
says what its numbers are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

Kind = Literal["sentence", "item", "row"]

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[*`])")
_ABBREVIATION = re.compile(r"\b(e\.g|i\.e|etc|vs|approx|Inc|No|Fig)\.$", re.I)
# a list item's marker inside flattened text: " + Item", " * Item", " - Item" (before a capital, bold,
# code or link), "1. Item"
_ITEM = re.compile(r"(?:^|\s)(?:[+*]|-(?=\s+[A-Z*`\[])|\d{1,2}\.(?=\s+[A-Z*`\[]))\s+(?=\S)")
_TABLE = re.compile(r"\|(?:[^|\n]*\|){2,}")
_SEPARATOR_CELL = re.compile(r"^:?-{3,}:?$")
_MARKUP = re.compile(r"\*\*+|`|<[^>]{1,40}>")
_WORDS = re.compile(r"\S+")
MIN_WORDS = 3
ITEM_WORDS = 60  # a longer list item is split into sentences


@dataclass(frozen=True)
class Unit:
    """One quotable piece of a passage: `passage` is its 1-based number (the citation [n])."""

    passage: int
    heading: str
    text: str
    kind: Kind
    position: int  # order within its passage

    @property
    def words(self) -> int:
        return len(self.text.split())


def clean(text: str) -> str:
    """Emphasis, code ticks and leftover tags removed; whitespace collapsed."""
    return " ".join(_MARKUP.sub("", text).split())


def _cells(row: str) -> list[str]:
    return [clean(c) for c in row.strip().strip("|").split("|")]


def table_rows(table: str) -> list[str]:
    """A flattened Markdown table as one line per data row, each cell named by its column header."""
    rows = [_cells(r) for r in re.split(r"\|\s\|", table)]
    rows = [r for r in rows if any(r)]
    if not rows:
        return []
    header: list[str] = []
    if len(rows) > 1 and all(_SEPARATOR_CELL.match(c) for c in rows[1] if c):
        header, rows = rows[0], rows[2:]
    out, group = [], ""
    for cells in rows:
        filled = [c for c in cells if c]
        if len(filled) == 1 and len(cells) <= 2 and len(header) > 2:
            group = filled[0]  # a row naming the group of rows below it
            continue
        if len(cells) == len(header) and len(cells) > 1:
            pairs = [f"{h} {c}" if h else c for h, c in zip(header[1:], cells[1:], strict=True) if c]
            key = f"{header[0]} {cells[0]}".strip() if header[0] else cells[0]
            line = f"{key}: {'; '.join(pairs)}"
        else:
            line = "; ".join(filled)
        out.append(f"{line} ({group})" if group else line)
    return out


_QUOTE = re.compile(r'(?<![0-9])"')  # not an inch mark (27" monitor)
QUOTE_CHARS = 200  # a quotation closes within this many characters, or it is no quotation


def _inside_quotes(before: str, after: str) -> bool:
    """A quotation opened in `before` closes in `after` (a quoted message's full stop ends no sentence);
    a stray or unclosed quote mark holds no sentence break."""
    if len(_QUOTE.findall(before)) % 2 == 1:
        return bool(_QUOTE.search(after[:QUOTE_CHARS]))
    if before.count("\u201c") > before.count("\u201d"):
        return "\u201d" in after[:QUOTE_CHARS]
    return False


def _sentences(text: str) -> list[str]:
    """Sentences of running text (abbreviations such as "e.g." and full stops inside a quoted message do
    not end one)."""
    out: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[start : match.start()].strip()
        if _ABBREVIATION.search(piece) or _inside_quotes(text[start : match.end()], text[match.end() :]):
            continue
        out.append(piece)
        start = match.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def _item_starts(text: str) -> list[int]:
    """Where list items start in flattened text. A bullet always starts one. A number with a full stop
    starts one when it continues the list (the last item's number plus one, or 1 again: Markdown lists
    are often numbered 1., 1., 1.), or when it opens one: 1 (or any n with n + 1 next) at the start of
    the text or after a sentence's end or a colon, or 1 with 2 next (a list numbered again). So a
    sentence that ends on a number keeps it ("Possible values are 1 through 50. The default ...", "the
    default is 1. If you")."""
    found = list(_ITEM.finditer(text))
    numbers = [_number(m.group()) for m in found]
    numbered = [i for i, n in enumerate(numbers) if n is not None]
    following = {a: numbers[b] for a, b in pairwise(numbered)}
    starts: list[int] = []
    last: int | None = None
    for i, m in enumerate(found):
        n = numbers[i]
        if n is not None:
            after = following.get(i)
            before = m.start() + 1 if text[m.start()].isspace() else m.start()  # up to the number
            opens = _OPENS.search(text, 0, before) is not None
            continues = last is not None and (n == last + 1 or n == last == 1)
            if not (continues or (opens and (n == 1 or after == n + 1)) or (n == 1 and after == 2)):
                continue
            last = n
        starts.append(m.start())
    return starts


# what may stand before a list's first number: nothing, or a sentence's end or a colon (and spaces)
_OPENS = re.compile(r"(?:^|[.:!?)*\"'])\s*$")


def _number(marker: str) -> int | None:
    digits = marker.strip().rstrip(".")
    return int(digits) if digits.isdigit() else None


def _split_text(text: str) -> list[tuple[str, Kind]]:
    pieces: list[tuple[str, Kind]] = []
    bounds = _item_starts(text)
    if not bounds:
        return [(s, "sentence") for s in _sentences(text)]
    head = text[: bounds[0]]
    pieces += [(s, "sentence") for s in _sentences(head)]
    for a, b in zip(bounds, [*bounds[1:], len(text)], strict=True):
        item = _ITEM.sub("", text[a:b], count=1).strip()
        if len(item.split()) <= ITEM_WORDS:  # an item is one step or point, quoted whole
            pieces.append((item, "item"))
            continue
        sentences = _sentences(item)
        if sentences:
            pieces.append((sentences[0], "item"))
            pieces += [(s, "sentence") for s in sentences[1:]]
    return pieces


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, text) blocks of a passage: "## heading" lines start a block; the block's other lines are
    joined (wrapped lines and list items become one line, as the chunker stores them)."""
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            name = stripped.lstrip("#").strip()
            if out[-1][1]:
                out.append((name, []))
            else:  # consecutive headings: one path
                out[-1] = (f"{out[-1][0]} > {name}" if out[-1][0] else name, [])
        elif stripped:
            out[-1][1].append(stripped)
    return [(h, " ".join(lines)) for h, lines in out if lines]


def units(passages: tuple[str, ...] | list[str]) -> list[Unit]:
    """Every passage's units, in passage order then reading order."""
    out: list[Unit] = []
    for n, passage in enumerate(passages, 1):
        position = 0
        for heading, line in sections(passage):
            pieces: list[tuple[str, Kind]] = []
            cursor = 0
            for table in _TABLE.finditer(line):
                pieces += _split_text(line[cursor : table.start()])
                pieces += [(r, "row") for r in table_rows(table.group())]
                cursor = table.end()
            pieces += _split_text(line[cursor:])
            for text, kind in pieces:
                text = clean(text)
                if len(_WORDS.findall(text)) >= MIN_WORDS or (kind == "row" and text):
                    out.append(Unit(n, heading, text, kind, position))
                    position += 1
    return out
