"""The LiveKit side of a claim: the room a handoff is worked in and the tokens to join it.

A conversation that came from a LiveKit room is worked in that room (`tenant_<id>_<room>`); one that
came over HTTP gets a room of its own, `tenant_<id>_handoff-<short id>`, which the customer joins with
the link the handoff's status gives them (the meeting-link join flow). Tokens are minted with the
project's token code (`serve_app.agent.tokens`), for exactly that room; the person's token carries the
participant attributes the LiveKit agent recognises (`supportgraph.role=human`, the handoff id).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote

from serve_app.agent.tokens import mint_token
from serve_app.handoff.errors import HandoffUnavailable
from serve_app.settings import HandoffSettings
from serve_app.tenancy import parse_stream_id

HUMAN_ROLE = "human"  # the `supportgraph.role` attribute of a person who claimed a handoff


def handoff_room(tenant_id: str, handoff_short_id: str, stream_id: str | None, room: str | None) -> str:
    """The room's full name: the conversation's own room, else `tenant_<id>_handoff-<short id>`."""
    if room:
        return room
    if stream_id:
        return parse_stream_id(stream_id).room_name
    return f"tenant_{tenant_id}_handoff-{handoff_short_id}"


@dataclass(frozen=True)
class RoomTokens:
    api_key: str
    api_secret: str
    url: str | None
    join_url: str
    ttl_s: int

    @classmethod
    def from_env(cls, cfg: HandoffSettings) -> RoomTokens:
        """The credentials from the variables the settings name; 503 naming them when unset."""
        key, secret = os.environ.get(cfg.livekit_api_key_env), os.environ.get(cfg.livekit_api_secret_env)
        if not key or not secret:
            raise HandoffUnavailable(
                f"LiveKit credentials are not configured: set {cfg.livekit_api_key_env} and "
                f"{cfg.livekit_api_secret_env} (settings handoff.livekit_api_key_env and "
                "handoff.livekit_api_secret_env name these variables) where the Router runs"
            )
        return cls(key, secret, os.environ.get(cfg.livekit_url_env) or None, cfg.join_url, cfg.token_ttl_s)

    def token(self, room: str, identity: str, attributes: dict[str, str] | None = None) -> str:
        parsed = parse_stream_id(room)
        return mint_token(
            self.api_key, self.api_secret, parsed.tenant_id, parsed.room, identity, self.ttl_s, attributes
        )

    def link(self, token: str) -> str | None:
        """The meeting link for a token (None without a LiveKit URL)."""
        if not self.url:
            return None
        return self.join_url.format(url=quote(self.url, safe=""), token=quote(token, safe=""))
