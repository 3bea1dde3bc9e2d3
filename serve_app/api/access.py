"""Who may call the API: API keys per tenant, rate limits, and the tenant a request may act for.

`authenticate` is the router-level dependency of every area but health. `authorize` and
`request_tenant` then check that a tenant the request names is the API key's own; `charge_tokens`
bills a routed answer's tokens to the key's tenant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from serve_app.auth import Caller, KeyVerifier, RateLimiter
from serve_app.routing.router import token_totals
from serve_app.tenancy import InvalidIdentifier, validate_tenant_id

# the documented 503 of a route whose backend sheds load (`Overloaded`) or loses a replica (`ReplicaLost`)
OVERLOADED: dict[int | str, dict[str, Any]] = {
    503: {"description": "overloaded, or its replica was lost (retry)"}
}


@dataclass
class Access:
    """Who may call: `verifier` None means no API keys (local use); `limiter` None means no limits."""

    verifier: KeyVerifier | None = None
    limiter: RateLimiter | None = None


def app_backend(request: Request, name: str, what: str) -> Any:
    """The backend the graph put on `app.state.<name>`; 503 naming `what` where this deployment has none."""
    backend = getattr(request.app.state, name, None)
    if backend is None:
        raise HTTPException(503, f"{what} not part of this deployment")
    return backend


def api_key(request: Request) -> str | None:
    """The key of `Authorization: Bearer <key>`, else of `X-API-Key`."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key")


async def authenticate(request: Request) -> None:
    """Every route but health: a live API key (Bearer or X-API-Key), then the tenant's rate limit."""
    access: Access = request.app.state.access
    request.state.tenant = None
    request.state.caller = Caller(None)  # no keys (local use): an admin
    if access.verifier is None:
        return
    key = api_key(request)
    if not key:
        raise HTTPException(401, "an API key is required", headers={"WWW-Authenticate": "Bearer"})
    caller = await access.verifier.caller(key)
    if caller is None:
        raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    tenant = caller.tenant
    request.state.tenant, request.state.caller = tenant, caller
    if access.limiter is not None:
        _admit(request, access.limiter, tenant)


def _admit(request: Request, limiter: RateLimiter, tenant: str) -> None:
    """429 with Retry-After when the tenant is over its limit (chat also needs tokens, frames their own)."""
    path = request.url.path
    wait = limiter.admit(
        tenant,
        needs_tokens=path.endswith("/chat/completions"),
        frame=path.endswith(("/frames", "/frames/batch")),
    )
    if wait is not None:
        raise HTTPException(
            429, f"rate limit of tenant {tenant!r} reached", headers={"Retry-After": str(math.ceil(wait))}
        )


def caller_of(request: Request) -> Caller:
    """Who calls (set by `authenticate`)."""
    return getattr(request.state, "caller", None) or Caller(None)


def allow(*roles: str) -> Any:
    """A dependency: 403 unless the API key's role is one of `roles` (no keys: allowed)."""

    async def check(request: Request) -> None:
        role = caller_of(request).role
        if role not in roles:
            raise HTTPException(
                403, f"a {role} key cannot use this route; it needs a {' or '.join(roles)} key"
            )

    return check


def charge_frames(request: Request, frames: int) -> None:
    """Charge the frames of a batch upload beyond the one its request was admitted for (the bucket may
    go below zero: later uploads wait it out)."""
    access: Access = request.app.state.access
    tenant = getattr(request.state, "tenant", None)
    if access.limiter is not None and tenant is not None and frames > 0:
        access.limiter.charge_frames(tenant, frames)


def authorize(request: Request, tenant: str) -> None:
    """403 unless the API key (if any) belongs to `tenant`."""
    caller = getattr(request.state, "tenant", None)
    if caller is not None and caller != tenant:
        raise HTTPException(403, "this API key belongs to another tenant")


def request_tenant(request: Request, *candidates: str | None) -> str:
    """The request's tenant: named explicitly, else the API key's; it must be the key's tenant."""
    tenant = next((c for c in candidates if c), None) or getattr(request.state, "tenant", None)
    if tenant is None:
        raise HTTPException(422, "say which tenant: the tenant_id field or the X-Tenant-Id header")
    try:
        validate_tenant_id(tenant)
    except InvalidIdentifier as exc:
        raise HTTPException(422, str(exc)) from None
    authorize(request, tenant)
    return tenant


def charge_tokens(request: Request, routing: dict[str, Any]) -> None:
    """Count a routed answer's tokens against the key's tenant (the token bucket of chat)."""
    access: Access = request.app.state.access
    if access.limiter is not None and request.state.tenant is not None:
        access.limiter.charge_tokens(request.state.tenant, sum(token_totals(routing)))
