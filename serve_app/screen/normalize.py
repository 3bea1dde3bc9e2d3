"""OCR text normalization: spacing restored against a vocabulary, error codes kept intact.

The recognizer (a Chinese + English model) sometimes runs English words together ("Syncfailed",
"Error0x80070005:accessdenied"). Each token that is not a known word is split into the most probable
sequence of vocabulary words (Viterbi over unigram costs, unknown stretches penalized by length); codes
such as 0x80070005, E-1234, S-403, HTTP 503 or ticket #4821 are cut out first and never split or
re-cased; a letter run glued to a code gets its space back. The vocabulary is a small built-in word
list generated from the project's own texts (the sample help center, the synthetic screens' strings,
a hand-written list of function words) plus whatever the tenant's help center adds (`Vocabulary.add`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
# an error / reference code: hex, letters-dash-digits, digits with a letter prefix, #digits
CODE = re.compile(
    r"0[xX][0-9A-Fa-f]{4,}|[A-Z]{1,5}-\d{2,}(?:-\d+)*|[A-Z]{1,3}\d{3,}|#\d{2,}|\d+(?:[.:/-]\d+)*"
)
_FUNCTION_WORDS = (
    "a about above after again all also an and any are as at back be been before being below between "
    "both but by can cannot could did do does done down each few for from further had has have having "
    "he her here hers him his how i if in into is it its just me more most my new no nor not now of off "
    "on once only or other our out over own same she should so some such than that the their them then "
    "there these they this those through to too under until up very was we were what when where which "
    "while who whom why will with would you your yours please try again later now failed failure error "
    "errors denied access expired invalid unable could not connect connection server network offline "
    "online sign signed out session required permission permissions update updated retry retrying "
    "code message warning alert request timed timeout limit reached quota exceeded storage full device "
    "devices account password email address verify verified link file files upload uploaded download "
    "sync synced syncing payment card declined billing plan subscription renew renewal workspace admin "
    "administrator team member members note notes folder folders share shared sharing export import "
    "learn more details dismiss close cancel ok yes retry continue help contact support"
)


def words_of(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _project_texts() -> Iterable[str]:
    """The project's own texts: the sample help center and the synthetic screens' strings."""
    from serve_app.samples import HELP_CENTER
    from serve_app.screen import screen_text

    for path in sorted(Path(HELP_CENTER).iterdir()):
        if path.is_file():
            yield path.read_text(encoding="utf-8", errors="replace")
    for name in ("WORDS", "TOAST_TEXT", "BANNER_TEXT", "ERROR_TEXT", "TOOLTIP_TEXT", "DIALOG_TEXT"):
        yield repr(getattr(screen_text, name, ""))


@lru_cache(maxsize=1)
def base_counts() -> Counter:
    counts: Counter = Counter()
    for w in _FUNCTION_WORDS.split():
        counts[w] += 20
    for text in _project_texts():
        counts.update(words_of(text))
    return counts


class Vocabulary:
    """Unigram word costs (-log p) for segmentation; `add` merges a tenant's texts."""

    def __init__(self, counts: Counter | None = None):
        self.counts: Counter = Counter(base_counts() if counts is None else counts)
        self._refresh()

    def add(self, texts: Iterable[str], weight: int = 2) -> Vocabulary:
        for text in texts:
            for w in words_of(text):
                self.counts[w] += weight
        self._refresh()
        return self

    def _refresh(self) -> None:
        total = sum(self.counts.values()) or 1
        # single letters other than a / i are rare words on screens
        self.cost = {
            w: math.log(total / c) + (6.0 if len(w) == 1 and w not in ("a", "i") else 0.0)
            for w, c in self.counts.items()
        }
        self.max_len = max((len(w) for w in self.cost), default=1)
        self.unknown = math.log(total) + 4.0

    def __contains__(self, word: str) -> bool:
        return word.lower() in self.cost

    def segment(self, run: str) -> list[str]:
        """`run` (letters) split into vocabulary words, case kept; unchanged when nothing fits better."""
        low = run.lower()
        if low in self.cost or len(run) < 4:
            return [run]
        n = len(low)
        best = [0.0] + [math.inf] * n
        back = [0] * (n + 1)
        for end in range(1, n + 1):
            for start in range(max(0, end - self.max_len), end):
                piece = low[start:end]
                cost = self.cost.get(piece)
                if cost is None:
                    cost = self.unknown + 3.0 * len(piece)
                if best[start] + cost < best[end]:
                    best[end], back[end] = best[start] + cost, start
        cuts, end = [], n
        while end > 0:
            cuts.append((back[end], end))
            end = back[end]
        pieces = [run[a:b] for a, b in reversed(cuts)]
        if len(pieces) > 1 and all(p.lower() in self.cost for p in pieces):
            return pieces
        return [run]


_SPLIT = re.compile(r"(\s+)")


def _token(token: str, vocab: Vocabulary) -> str:
    """One whitespace-free token: codes kept, letter runs segmented, spaces after `:` / `,` restored."""
    out: list[str] = []
    pos = 0
    while m := CODE.search(token, pos):
        end = _code_end(token, m, vocab)
        out.extend(_plain(token[pos : m.start()], vocab))
        out.append(token[m.start() : end])
        pos = end
    out.extend(_plain(token[pos:], vocab))
    text, last = "", ""
    for piece in out:
        if not piece:
            continue
        if text and (
            (re.search(r"[A-Za-z]{2,}$", text) and (piece[0].isalnum() or piece[0] == "#"))
            or (piece[0].isalpha() and CODE.fullmatch(last) is not None)
            or (text[-1] in ":,;" and (piece[0].isalpha() or not text[-2:-1].isdigit()))
            or (text[-1] in ".!?" and piece[0].isupper() and text[-2:-1].isalpha())
            or (text[-1].isalnum() and piece[0] == "(")
            or (text[-1].isdigit() and piece[0].isalpha() and not CODE.fullmatch(piece))
        ):
            text += " "
        text += piece
        last = piece
    return text


def _code_end(token: str, m: re.Match[str], vocab: Vocabulary) -> int:
    """Where a code found at `m` ends. A hex code with letters glued after it may have taken the first
    letters of a word as hex digits ("0x80070005accessdenied"): the longest code whose leftover letters
    are all vocabulary words wins; with none, the whole match."""
    if not m.group().lower().startswith("0x"):
        return m.end()
    glued = re.match(r"[A-Za-z]*", token[m.end() :])
    rest = glued.group() if glued else ""
    for end in range(m.end(), m.start() + 6 - 1, -1):  # keep at least 4 hex digits
        tail = token[end : m.end()] + rest
        if not tail:
            return end
        if tail.isalpha() and all(p.lower() in vocab for p in vocab.segment(tail)):
            return end
        if not token[end - 1].isalpha():
            break  # only hex letters can be given back
    return m.end()


def _plain(part: str, vocab: Vocabulary) -> list[str]:
    """A stretch without codes: letter runs segmented, other characters kept as they are."""
    out: list[str] = []
    for chunk in re.split(r"([A-Za-z]+)", part):
        if not chunk:
            continue
        if chunk.isalpha():
            out.extend(_case_split(chunk, vocab))
        else:
            out.append(chunk)
    return out


def _case_split(run: str, vocab: Vocabulary) -> list[str]:
    """camel-glued words ("SyncFailed") split at case changes first, then each piece segmented."""
    parts = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", run) or [run]
    if "".join(parts) != run or len(parts) == 1 or not all(p.lower() in vocab for p in parts):
        parts = [run]
    return [w for p in parts for w in vocab.segment(p)]


def normalize_line(text: str, vocab: Vocabulary) -> str:
    """One OCR line with its spacing restored; whitespace collapsed; codes and case untouched."""
    tokens = [t for t in _SPLIT.split(text.strip()) if t and not t.isspace()]
    return " ".join(_token(t, vocab) for t in tokens)
