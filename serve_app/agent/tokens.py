"""LiveKit access tokens scoped to one tenant's room (`supportgraph token`).

Only `livekit.api` (JWT signing): importing this does not load the agent worker or its plugins.
"""

from __future__ import annotations

from datetime import timedelta

from livekit import api

from serve_app.tenancy import room_name


def mint_token(
    api_key: str,
    api_secret: str,
    tenant: str,
    room: str,
    identity: str,
    ttl_s: int,
    attributes: dict[str, str] | None = None,
) -> str:
    """A LiveKit JWT that may join exactly the tenant's room `tenant_<tenant>_<room>`; `attributes`:
    the participant's attributes (a person who claimed a handoff is marked so)."""
    if not identity.strip() or len(identity) > 128:
        raise ValueError("identity must be 1-128 characters")
    if not 60 <= ttl_s <= 86_400:
        raise ValueError("--ttl must be between 60 and 86400 seconds")
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_ttl(timedelta(seconds=ttl_s))
        .with_grants(api.VideoGrants(room_join=True, room=room_name(tenant, room)))
    )
    if attributes:
        token = token.with_attributes(attributes)
    return token.to_jwt()
