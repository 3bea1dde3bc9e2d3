"""Whether a turn hands the conversation to a person, and why: `asked`, `abstained`, `repeated`,
`frustrated` (checked in that order; each a per-tenant setting).

- asked: the router's intent is "human", or the last user message asks for a person. The phrasing
  check is a small grammar over the message's words, not one sentence: a *request* ("talk/speak/chat
  to|with", "connect/transfer/put/get me", "want/need/like/prefer", "is there", "could ... call me")
  followed, through a few filler words ("to", "a", "real", "your", ...), by a *person* (agent, human,
  person, representative, operator, someone, manager, support team, customer service, ...); or a
  message that is little more than a person ("agent!", "human please"). A negation just before the
  request ("I don't want to talk to a human") or a question about the assistant itself ("are you a
  human?") does not count; a message that only mentions people ("transfer ownership to another
  person", "the agent said...") does not either.
- abstained: the router abstained (no tier could answer reliably).
- repeated: the last user message says what an earlier user message of the conversation said, and that
  earlier one was answered (an assistant message followed it): overlap of content words, Jaccard, at
  least `repeat_similarity`.
- frustrated: a frustration word or phrase of the tenant's list, or a message shouted in capitals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from serve_app.settings import HandoffPolicy

_WORD = re.compile(r"[a-z0-9']+")
PERSON = (
    r"(?:(?:someone|somebody|anyone) from (?:your|the) (?:team|company|support|staff)|"
    r"agents?|humans?|person|people|representatives?|rep|operator|someone|somebody|anyone|anybody|"
    r"staff|employee|manager|supervisor|advis[eo]r|specialist|technician|support team|support staff|"
    r"customer (?:service|support|care)|help ?desk|team member|member of (?:your|the) team)"
)
_FILL = (
    r"(?:(?:to|a|an|the|some|any|real|live|actual|proper|human|your|one|of|me|us|talk|speak|chat|with|"
    r"please|now|right|away|just|directly|over|through|someone|from) ){0,5}"
)
_VERBS = (
    r"(?:talk|speak|chat|discuss|communicate) (?:to|with)",
    r"(?:connect|transfer|put|pass|hand|forward|send|escalate|switch|get|give|bring|redirect) "
    r"(?:me|us|this|it)",
    r"(?:escalate|transfer|forward|pass) (?:this |it )?to",
    r"(?:want|need|like|prefer|request|demand|wish|ask for|asking for|looking for|waiting for)",
    r"(?:is|are) there",
)
_HELPS = r"(?:please )?(?:help|call|contact|assist|reach|take over)"
REQUESTS = (
    re.compile(rf"\b(?:{'|'.join(_VERBS)}) {_FILL}{PERSON}\b"),
    re.compile(rf"\b(?:can|could|would|will|please|have|get|let) {_FILL}{PERSON} {_HELPS}"),
)
SHORT_FILL = frozenset(
    "please pls plz now a an the real live actual i want need give me get talk to speak".split()  # noqa: SIM905
)
SHORT_PERSON = re.compile(rf"^{PERSON}$")
NEGATIONS = frozenset(("no", "not", "don't", "dont", "never", "without", "nobody"))
SELF_QUESTIONS = re.compile(
    r"\b(?:are|r) (?:you|u) (?:really |even |actually )?(?:a |an )?(?:real |actual )?"
    r"(?:human|person|bot|robot|agent)"
)
STOP = frozenset(
    (  # noqa: SIM905
        "a an the i me my you your to of in on for and or is are was be it this that do does did can could "
        "how what why when where which please again still just so with at by from i'm it's"
    ).split()
)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def asks_for_person(text: str) -> bool:
    """The message asks for a person (see the module doc for what counts)."""
    tokens = words(text)
    if not tokens or SELF_QUESTIONS.search(" ".join(tokens)):
        return False
    rest = [w for w in tokens if w not in SHORT_FILL]
    if len(tokens) <= 4 and rest and SHORT_PERSON.match(" ".join(rest)):  # "agent!", "human please"
        return not NEGATIONS & set(tokens)
    joined = " ".join(tokens)
    for pattern in REQUESTS:
        for match in pattern.finditer(joined):
            before = joined[: match.start()].split()[-3:]
            if not NEGATIONS & set(before):
                return True
    return False


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in words(text) if w not in STOP and len(w) > 1}


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def similarity(a: str, b: str) -> float:
    """Jaccard overlap of content words (0 when either has none)."""
    wa, wb = content_words(a), content_words(b)
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0


def repeated(messages: Sequence[Any], threshold: float) -> bool:
    """The last user message repeats an earlier user message that got an answer."""
    last = messages[-1].content
    for i, message in enumerate(messages[:-1]):
        if message.role != "user":
            continue
        answered = any(m.role == "assistant" for m in messages[i + 1 : -1])
        if answered and similarity(message.content, last) >= threshold:
            return True
    return False


def frustrated(text: str, phrases: Sequence[str]) -> bool:
    lowered = " " + " ".join(words(text)) + " "
    if any(f" {' '.join(words(p))} " in lowered for p in phrases if words(p)):
        return True
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.8  # shouting


def trigger(policy: HandoffPolicy, messages: Sequence[Any], routed: Any) -> str | None:
    """The reason this turn hands off, or None. `routed`: the RoutedAnswer (its `intent`, `abstained`)."""
    if not policy.enabled:
        return None
    on, last = policy.triggers, messages[-1].content
    if on.asked and (getattr(routed, "intent", None) == "human" or asks_for_person(last)):
        return "asked"
    # declined chatter (out of scope) is not a question anyone needs a person for
    if on.abstained and getattr(routed, "abstained", False) and routed.abstain_reason != "out_of_scope":
        return "abstained"
    if on.repeated and repeated(messages, policy.repeat_similarity):
        return "repeated"
    if on.frustrated and frustrated(last, policy.frustration_words):
        return "frustrated"
    return None
