"""The self-reported confidence line: every tier is asked to end its reply with 'Confidence: X'.

This module owns that line end to end: the instruction that asks for it, reading the value back
(`self_reported`, the self-reported scorer's input), removing it from an answer (`strip_confidence`)
and holding it back from a stream (`ConfidenceLineFilter`). The patterns share one value pattern; they
differ in what may surround it. Reading searches anywhere and accepts JSON-style quotes
({"confidence": "0.8"}); removing matches only a whole line, with Markdown emphasis allowed
("**Confidence:** 85%").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CONFIDENCE_INSTRUCTION = (
    "End your reply with one last line of the form 'Confidence: X' where X between 0 and 1 says how sure "
    "you are that the answer is correct and supported by the context."
)

# the stated value: a fraction (0.8, .8) or a percentage (85 or 85%)
VALUE = r"(\d*\.?\d+)\s*(%?)"
# the same value while it is still being typed (a stream may stop anywhere in it)
_PARTIAL_VALUE = r"\d*\.?\d*\s*%?"

_STATED = re.compile(rf"confidence[\"']?\s*[:=]\s*\"?{VALUE}", re.I)
_LINE = re.compile(rf"^\s*\**\s*confidence\s*\**\s*[:=]\s*\**\s*{VALUE}\s*\**\s*$", re.I)
_LINE_PREFIX = re.compile(rf"^confidence\s*\**\s*[:=]?\s*\**\s*{_PARTIAL_VALUE}\s*\**\s*$")


def self_reported(response: str) -> float | None:
    """The confidence the response states, in [0, 1] (values above 1 are percentages); None if none."""
    match = _STATED.search(response)
    if not match:
        return None
    value = float(match.group(1)) / (100 if match.group(2) or float(match.group(1)) > 1 else 1)
    return min(max(value, 0.0), 1.0)


def is_confidence_line(line: str) -> bool:
    return bool(_LINE.match(line))


def strip_confidence(text: str) -> str:
    """The text without its closing confidence line(s)."""
    lines = text.rstrip().split("\n")
    while lines and is_confidence_line(lines[-1]):
        lines.pop()
    return "\n".join(lines).rstrip()


def _may_become_confidence(line: str) -> bool:
    text = line.lstrip(" *").lower()
    return "confidence".startswith(text) or bool(_LINE_PREFIX.match(text))


@dataclass
class ConfidenceLineFilter:
    """Streams text through; only a line that may still turn out to be 'Confidence: X' is held back
    (and dropped if it is one)."""

    _held: str = field(default="")
    _passing: bool = field(default=False)  # the current line is known not to be a confidence line

    def feed(self, delta: str) -> str:
        out: list[str] = []
        text, self._held = self._held + delta, ""
        *lines, partial = text.split("\n")
        for line in lines:
            if self._passing or not is_confidence_line(line):
                out.append(line + "\n")
            self._passing = False
        if self._passing or not _may_become_confidence(partial):
            out.append(partial)
            self._passing = self._passing or bool(partial)
        else:
            self._held = partial
        return "".join(out)

    def finish(self) -> str:
        held, self._held = self._held, ""
        return "" if is_confidence_line(held) else held
