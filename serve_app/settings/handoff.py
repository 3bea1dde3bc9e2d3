"""Settings of the human handoff: service hours, triggers and the queue policy."""

from __future__ import annotations

import re
from datetime import date
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, model_validator

from serve_app.settings.base import _Section

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_SPAN_RE = r"^([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"


class ServiceHoursSettings(_Section):
    """When people answer handoffs: weekly hours in the team's time zone, and holidays (closed all day)."""

    timezone: str = Field("UTC", description="IANA time zone of the hours, e.g. Europe/Berlin")
    weekly: dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], list[str]] = Field(
        default_factory=lambda: {d: ["00:00-24:00"] for d in WEEKDAYS},
        description="weekday -> open spans 'HH:MM-HH:MM' (end after start; '24:00' ends the day); "
        "a weekday not listed is closed. Default: always open",
    )
    holidays: list[date] = Field(default_factory=list, description="dates (in `timezone`) closed all day")

    @model_validator(mode="after")
    def _valid(self) -> ServiceHoursSettings:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"handoff.hours.timezone: unknown time zone {self.timezone!r}") from None
        for day, spans in self.weekly.items():
            for span in spans:
                if not re.match(_SPAN_RE, span) or span[:5] >= span[6:]:
                    raise ValueError(
                        f"handoff.hours.weekly.{day}: {span!r} is not 'HH:MM-HH:MM' with start < end"
                    )
        return self


class HandoffTriggers(_Section):
    """Which turns hand the conversation to a person (each on or off)."""

    asked: bool = Field(True, description="the customer asks for a person (agent, human, representative...)")
    abstained: bool = Field(True, description="the router abstained: no tier could answer reliably")
    repeated: bool = Field(True, description="the customer asks again what was already answered")
    frustrated: bool = Field(True, description="the customer's message carries frustration words")


def _frustration_words() -> list[str]:
    return [
        "useless", "ridiculous", "frustrated", "frustrating", "annoying", "annoyed", "terrible",
        "awful", "horrible", "angry", "furious", "fed up", "waste of time", "not helpful",
        "doesn't help", "does not help", "didn't help", "still broken", "stupid",
        "pointless", "unacceptable", "wtf", "sick of", "give up",
    ]  # fmt: skip


class HandoffPolicy(_Section):
    """What a tenant's handoffs follow; `handoff.tenants.<id>` overrides the fields it sets."""

    enabled: bool = Field(True, description="hand conversations to people at all")
    triggers: HandoffTriggers = HandoffTriggers()
    repeat_similarity: float = Field(
        0.6, gt=0, le=1, description="repeated: overlap of content words (Jaccard) that counts as the same"
    )
    frustration_words: list[str] = Field(
        default_factory=_frustration_words, description="frustrated: words or phrases (case-insensitive)"
    )
    hours: ServiceHoursSettings = ServiceHoursSettings()
    human_cost_per_min: float = Field(
        0.75, ge=0, le=1000, description="USD per minute of a person, claim to resolve (cost event 'human')"
    )
    default_wait_s: float = Field(
        300.0, gt=0, description="wait estimate per place in the queue before there are recent claims"
    )


class HandoffSettings(HandoffPolicy):
    """Human handoff (serve_app/handoff): triggers, service hours, costs, and the LiveKit room a
    human agent joins; LiveKit credentials come from the variables named here."""

    tenants: dict[str, HandoffPolicy] = Field(
        default_factory=dict, description="tenant -> overrides (only the fields given replace the defaults)"
    )
    livekit_url_env: str = Field("LIVEKIT_URL", description="variable holding the LiveKit server URL")
    livekit_api_key_env: str = Field("LIVEKIT_API_KEY", description="variable holding the LiveKit API key")
    livekit_api_secret_env: str = Field(
        "LIVEKIT_API_SECRET", description="variable holding the LiveKit API secret"
    )
    join_url: str = Field(
        "https://meet.livekit.io/custom?liveKitUrl={url}&token={token}",
        description="meeting link for a room token ({url}, {token}: URL-encoded)",
    )
    token_ttl_s: int = Field(3600, ge=60, le=86_400, description="lifetime of a claim's room tokens")
    expire_after_s: float = Field(
        7 * 86_400.0, gt=0, description="a handoff still queued after this long is expired"
    )
    recent_claims: int = Field(20, ge=1, le=1000, description="claims the wait estimate looks at")

    def policy(self, tenant_id: str) -> HandoffPolicy:
        """The tenant's policy: the defaults, with the fields its override sets replaced."""
        base = HandoffPolicy(**self.model_dump(include=set(HandoffPolicy.model_fields)))
        override = self.tenants.get(tenant_id)
        if override is None:
            return base
        return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})
