"""The transcript and the brief a person reads before taking a conversation over: the customer's problem
in their own words, why it was handed off, and what was tried (the AI's answers and attempts, the
help-center articles it consulted, the screen text it read). Built from what the turn already has: no
model call, nothing invented."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WHY = {
    "asked": "the customer asked for a person",
    "abstained": "the assistant could not answer reliably",
    "repeated": "the customer asked the same question again after an answer",
    "frustrated": "the customer sounds frustrated",
    "tool": "the assistant transferred the conversation",
}
QUOTE_CHARS = 300


def _clip(text: str, limit: int = QUOTE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def transcript(messages: Sequence[Any], told: str | None = None) -> list[dict[str, str]]:
    """The conversation (user and assistant turns), plus what the customer was told last."""
    turns = [{"role": m.role, "content": m.content} for m in messages if m.role in ("user", "assistant")]
    if told:
        turns.append({"role": "assistant", "content": told})
    return turns


def articles(passages: Sequence[str]) -> list[str]:
    """The headings of the help-center passages a prompt carried (`## heading` first lines)."""
    seen: list[str] = []
    for passage in passages:
        first = passage.strip().splitlines()[0] if passage.strip() else ""
        heading = first.lstrip("#").strip()
        if heading and heading not in seen:
            seen.append(heading)
    return seen


def tried(routed: Any = None, prompt: Any = None, messages: Sequence[Any] = ()) -> dict[str, Any]:
    """What the AI tried: its earlier answers, this turn's attempts, the articles, the screen text."""
    attempts = [
        {"tier": a.tier, "model": a.model, "outcome": a.outcome, "confidence": a.confidence}
        for a in getattr(routed, "attempts", [])
    ]
    return {
        "ai_answers": sum(m.role == "assistant" for m in messages),
        "attempts": attempts,
        "abstain_reason": getattr(routed, "abstain_reason", None),
        "articles": articles(getattr(prompt, "context", ()) or ()),
        "screen": _clip(getattr(prompt, "screen", "") or "", 600),
    }


def brief(reason: str, messages: Sequence[Any], tried_: dict[str, Any], note: str | None = None) -> str:
    """A few sentences for the person who claims the handoff."""
    users = [m.content for m in messages if m.role == "user"]
    lines = [f"Handed off because {WHY.get(reason, reason)}."]
    if note:
        lines.append(f"The customer's own words on handing off: {_clip(note)}")
    if users:
        lines.append(f'The customer\'s problem: "{_clip(users[0])}"')
        if len(users) > 1:
            lines.append(f'Latest message: "{_clip(users[-1])}" ({len(users)} messages from the customer)')
    answers = tried_.get("ai_answers", 0)
    attempts = tried_.get("attempts", [])
    if answers or attempts:
        steps = ", ".join(
            f"{a['tier']} ({a['outcome']}"
            + (f", confidence {a['confidence']:.2f})" if a.get("confidence") is not None else ")")
            for a in attempts
        )
        lines.append(
            f"Tried: {answers} AI answer(s) earlier in the conversation"
            + (f"; this turn: {steps}" if steps else "")
            + "."
        )
    if tried_.get("abstain_reason"):
        lines.append(f"The router abstained: {tried_['abstain_reason']}.")
    if tried_.get("articles"):
        lines.append("Help-center articles consulted: " + "; ".join(tried_["articles"]) + ".")
    if tried_.get("screen"):
        lines.append(f'Screen text read: "{_clip(tried_["screen"], 200)}"')
    return "\n".join(lines)
