"""The rules every piece of outside input follows, whatever route or command it arrives by.

- Text is valid Unicode: a lone UTF-16 surrogate (JSON allows the escape `"\\ud800"`, and Python's JSON
  decoder lets raw UTF-8-encoded surrogates through) cannot be encoded, so it could reach no database,
  model or log; such input is refused with the place it was found.
- Datetimes are compared and stored in UTC: a naive one means UTC, an aware one is converted. Values
  that fall outside the representable range after conversion are refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator

from serve_app.errors import InvalidText

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(value: Any, where: str = "body") -> None:
    """Raise InvalidText naming the first string (key or value) in `value` that holds a lone surrogate."""
    if isinstance(value, str):
        if match := _SURROGATE.search(value):
            code = f"U+{ord(match.group()):04X}"
            raise InvalidText(
                f"{where} is not valid Unicode: a lone surrogate {code} at character {match.start()}"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"{where} (a key)")
            check_text(item, f"{where}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            check_text(item, f"{where}.{n}")


def as_utc(value: datetime) -> datetime:
    """The one datetime rule: naive means UTC, aware is converted to UTC."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is out of range once converted to UTC") from None


UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]
