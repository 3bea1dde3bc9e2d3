"""Service hours: whether people answer now, and when they are back (weekly spans in the team's time
zone, holidays closed all day; daylight-saving changes follow `zoneinfo`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from serve_app.settings import WEEKDAYS, ServiceHoursSettings


@dataclass(frozen=True)
class ServiceHours:
    cfg: ServiceHoursSettings

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.cfg.timezone)

    def _spans(self, day: date) -> list[tuple[datetime, datetime]]:
        """The open spans of a local date, as aware datetimes (none on a holiday)."""
        if day in self.cfg.holidays:
            return []
        spans = []
        for span in self.cfg.weekly.get(WEEKDAYS[day.weekday()], []):  # type: ignore[call-overload]
            start, end = span.split("-")
            opens = datetime.combine(day, time.fromisoformat(start), self.zone)
            closes = (
                datetime.combine(day + timedelta(days=1), time(0), self.zone)
                if end == "24:00"
                else datetime.combine(day, time.fromisoformat(end), self.zone)
            )
            spans.append((opens, closes))
        return sorted(spans)

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        return any(opens <= local < closes for opens, closes in self._spans(local.date()))

    def next_open(self, now: datetime) -> datetime | None:
        """`now` when open, else the start of the next open span (within 366 days; None: never)."""
        local = now.astimezone(self.zone)
        for offset in range(367):
            for opens, closes in self._spans(local.date() + timedelta(days=offset)):
                if closes > local:
                    return max(opens, local).astimezone(UTC)
        return None


def describe(at: datetime, now: datetime, zone: ZoneInfo) -> str:
    """'today at 09:00 (Europe/Berlin)', 'tomorrow at 09:00 (...)' or 'Monday 4 January at 09:00 (...)'."""
    local, today = at.astimezone(zone), now.astimezone(zone).date()
    if local.date() == today:
        day = "today"
    elif local.date() == today + timedelta(days=1):
        day = "tomorrow"
    else:
        day = f"{local:%A} {local.day} {local:%B}"
    return f"{day} at {local:%H:%M} ({zone.key})"
