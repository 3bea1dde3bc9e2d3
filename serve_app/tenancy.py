"""Tenant and stream identifiers: one validated format, used by HTTP routes, deployments and the agent.

A tenant id is lowercase letters, digits and '-' (no '_', so names that embed it parse unambiguously).
LiveKit rooms are `tenant_{tenant}_{room}`; a frame stream id is a room name with an optional
`.{track}` suffix, e.g. `tenant_acme_support-42.screen`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from serve_app.errors import ForeignStream, InvalidIdentifier

TENANT_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_NAME = r"[A-Za-z0-9][A-Za-z0-9-]{0,127}"
STREAM_RE = re.compile(rf"tenant_(?P<tenant>{TENANT_RE.pattern})_(?P<room>{_NAME})(?:\.(?P<track>{_NAME}))?")


def validate_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not TENANT_RE.fullmatch(tenant_id):
        raise InvalidIdentifier(
            f"invalid tenant id {tenant_id!r}: use 1-63 lowercase letters, digits or '-', "
            "starting with a letter or digit"
        )
    return tenant_id


@dataclass(frozen=True)
class StreamId:
    tenant_id: str
    room: str
    track: str | None = None

    @property
    def room_name(self) -> str:
        return f"tenant_{self.tenant_id}_{self.room}"

    def __str__(self) -> str:
        return self.room_name + (f".{self.track}" if self.track else "")


def parse_stream_id(value: str) -> StreamId:
    """Parse `tenant_{tenant}_{room}[.{track}]`; raises InvalidIdentifier with the expected format."""
    match = STREAM_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidIdentifier(
            f"invalid stream id {value!r}: expected tenant_<tenant>_<room>[.<track>] "
            "(tenant: lowercase letters, digits, '-'; room/track: letters, digits, '-', at most 128)"
        )
    return StreamId(match["tenant"], match["room"], match["track"])


def tenant_stream(tenant_id: str, stream_id: str) -> StreamId:
    """The one tenant-owns-stream rule: `stream_id` parsed, when it is well-formed and one of
    `tenant_id`'s streams. InvalidIdentifier when it is malformed, ForeignStream when it names another
    tenant (the tenant is the parsed one, never a prefix of the raw string)."""
    stream = parse_stream_id(stream_id)
    if stream.tenant_id != tenant_id:
        raise ForeignStream("stream_id names a stream of another tenant")
    return stream


def room_name(tenant_id: str, room: str) -> str:
    """The LiveKit room name for a tenant's room (validated both ways)."""
    return parse_stream_id(f"tenant_{validate_tenant_id(tenant_id)}_{room}").room_name
