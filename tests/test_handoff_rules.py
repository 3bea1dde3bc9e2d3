"""Handoff rules without a database: which turns hand off (asked, abstained, repeated, frustrated, each a
per-tenant setting), service hours (time zone, weekly spans, holidays), the brief a person reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest

from serve_app.handoff import summary
from serve_app.handoff.hours import ServiceHours, describe
from serve_app.handoff.triggers import asks_for_person, frustrated, repeated, similarity, trigger
from serve_app.routing.providers.base import Message
from serve_app.settings import HandoffSettings, ServiceHoursSettings

ASKS = [
    "Can I talk to a person?",
    "I want to speak with a human",
    "agent",
    "Human please!!",
    "REPRESENTATIVE",
    "Is there a real person I can talk to?",
    "Please connect me with your support team",
    "I'd like to speak to customer service",
    "Transfer me to an agent, please",
    "get me a human",
    "let me talk to someone",
    "I need a live agent",
    "Could someone from your team call me?",
    "put me through to a manager",
    "is there anyone I can chat with",
    "I’d rather talk with an actual person than a bot",
]
NOT_ASKS = [
    "How do I export my notes?",
    "How do I transfer ownership to another person?",
    "How do I add a team member as an agent in my workspace?",
    "Are you a human?",
    "are you a real person or a bot",
    "I don't want to talk to a human, just tell me the price",
    "The agent said my refund was approved, when does it arrive?",
    "Share a note with someone outside the team",
    "agent settings",
    "I need support for exports",
    "What does error 0x80070005 mean?",
]


@pytest.mark.parametrize("text", ASKS)
def test_plain_phrasings_that_ask_for_a_person_are_recognised(text: str) -> None:
    assert asks_for_person(text)


@pytest.mark.parametrize("text", NOT_ASKS)
def test_questions_that_only_mention_people_are_not(text: str) -> None:
    assert not asks_for_person(text)


@dataclass
class Routed:
    intent: str | None = None
    abstained: bool = False
    abstain_reason: str | None = None


def convo(*turns: str) -> list[Message]:
    return [Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]


def test_each_trigger_fires_for_its_reason_and_is_a_setting_per_tenant() -> None:
    cfg = HandoffSettings(tenants={"quiet": {"triggers": {"asked": False, "frustrated": False}}})
    policy, quiet = cfg.policy("acme"), cfg.policy("quiet")
    assert trigger(policy, convo("Can I talk to a person?"), Routed()) == "asked"
    assert trigger(policy, convo("hello there"), Routed(intent="human")) == "asked"  # the router's intent
    assert trigger(policy, convo("what is the SLA for plan Z?"), Routed(abstained=True)) == "abstained"
    again = convo("How do I reset my password?", "Go to Settings > Account.", "how can I reset my password")
    assert trigger(policy, again, Routed()) == "repeated"
    assert trigger(policy, convo("This is useless, nothing works"), Routed()) == "frustrated"
    assert trigger(policy, convo("How do I export my notes?"), Routed()) is None
    # the tenant's override: only the fields it sets change
    assert trigger(quiet, convo("Can I talk to a person?"), Routed()) is None
    assert trigger(quiet, convo("This is useless"), Routed()) is None
    assert quiet.triggers.abstained and quiet.hours == policy.hours
    assert trigger(cfg.policy("acme").model_copy(update={"enabled": False}), again, Routed()) is None


def test_repeated_needs_an_answer_in_between_and_similar_words() -> None:
    assert not repeated(convo("How do I reset my password?"), 0.6)
    unanswered = [Message("user", "How do I reset my password?"), Message("user", "reset my password how?")]
    assert not repeated(unanswered, 0.6)  # never answered: not a repeat
    other = convo("How do I reset my password?", "Settings > Account.", "How do I export my notes?")
    assert not repeated(other, 0.6)
    assert similarity("How do I reset my password?", "password reset, how?") >= 0.6


def test_frustration_words_and_shouting() -> None:
    words = HandoffSettings().frustration_words
    assert frustrated("this is a waste of time", words) and frustrated("WHY DOES THIS NEVER WORK", words)
    assert not frustrated("How do I export?", words) and not frustrated("Thanks, that helped!", words)
    assert not frustrated("My sync is not working since the update", words)  # a problem, not frustration


def test_service_hours_in_the_teams_time_zone_with_holidays() -> None:
    hours = ServiceHours(
        ServiceHoursSettings(
            timezone="Europe/Berlin",
            weekly={d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
            holidays=[date(2026, 12, 25)],
        )
    )
    monday_10_berlin = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)  # 10:00 in Berlin (UTC+1)
    assert hours.is_open(monday_10_berlin)
    evening = datetime(2026, 12, 7, 17, 30, tzinfo=UTC)  # 18:30 Berlin
    assert not hours.is_open(evening)
    assert hours.next_open(evening) == datetime(2026, 12, 8, 8, 0, tzinfo=UTC)  # Tuesday 09:00 Berlin
    friday_night = datetime(2026, 12, 11, 20, 0, tzinfo=UTC)
    assert hours.next_open(friday_night) == datetime(2026, 12, 14, 8, 0, tzinfo=UTC)  # after the weekend
    christmas_eve = datetime(2026, 12, 24, 18, 0, tzinfo=UTC)
    assert hours.next_open(christmas_eve) == datetime(2026, 12, 28, 8, 0, tzinfo=UTC)  # 25th closed, weekend
    summer = datetime(2026, 7, 6, 7, 30, tzinfo=UTC)  # 09:30 in Berlin (UTC+2)
    assert hours.is_open(summer)
    said = describe(hours.next_open(evening), evening, hours.zone)
    assert said == "tomorrow at 09:00 (Europe/Berlin)"


def test_bad_hours_are_refused_with_the_field() -> None:
    with pytest.raises(ValueError, match=r"handoff\.hours\.timezone"):
        ServiceHoursSettings(timezone="Mars/Olympus")
    with pytest.raises(ValueError, match=r"handoff\.hours\.weekly\.mon"):
        ServiceHoursSettings(weekly={"mon": ["17:00-09:00"]})


def test_the_brief_says_why_and_what_was_tried_without_inventing() -> None:
    messages = convo("My export fails with error 0x80070005", "Try exporting again.", "It still fails!")
    tried = summary.tried(messages=messages)
    tried["articles"] = summary.articles(["## Export your notes\nChoose Settings > Data > Export."])
    text = summary.brief("repeated", messages, tried)
    assert "asked the same question again" in text and "0x80070005" in text
    assert "1 AI answer(s)" in text and "Export your notes" in text
    assert summary.transcript(messages)[-1] == {"role": "user", "content": "It still fails!"}
