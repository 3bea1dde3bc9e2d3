"""API keys and per-tenant rate limits for the HTTP API.

A key is `sgk_<tenant>_<43 url-safe chars>` (256 random bits). Only its SHA-256 is stored, in the
tenant's `api_keys` rows (RLS applies: the key names its tenant, so it is verified inside that tenant's
transaction and can never match another tenant's row). Verified keys are cached for `cache_ttl_s`, so a
revoked key stops working within that time. Rate limits are token buckets per tenant and per ingress
replica: requests per minute, and LLM tokens per minute charged after each routed answer.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from serve_app.db.database import Database, ensure_tenant
from serve_app.tenancy import validate_tenant_id

KEY_RE = re.compile(r"sgk_(?P<tenant>[a-z0-9][a-z0-9-]{0,62})_(?P<secret>[A-Za-z0-9_-]{43})")
# (tenant, key hash) -> the live key's role (True: a live key of the default role), else None/False
Lookup = Callable[[str, bytes], Awaitable[str | bool | None]]
# admin: everything (every key made before roles existed); agent: a tenant's human agents (the handoff
# queue, knowledge search); client: a widget (chat, frames, feedback, its own handoffs)
ROLES = ("admin", "agent", "client")
DEFAULT_ROLE = "admin"


@dataclass(frozen=True)
class Caller:
    """Who calls: the key's tenant, role and prefix (no key: local use, an admin without a prefix)."""

    tenant: str | None
    role: str = DEFAULT_ROLE
    key: str | None = None  # the key's prefix (what `keys list` shows), never the key


def new_key(tenant_id: str) -> str:
    validate_tenant_id(tenant_id)
    return f"sgk_{tenant_id}_{secrets.token_urlsafe(32)}"


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_tenant(key: str) -> str | None:
    match = KEY_RE.fullmatch(key)
    return match["tenant"] if match else None


def key_prefix(key: str) -> str:
    return key[: len(key) - 43 + 6]  # sgk_<tenant>_ plus 6 characters of the secret


async def create_key(db: Database, tenant_id: str, name: str = "", role: str = DEFAULT_ROLE) -> str:
    """A new key for the tenant (creating the tenant row if needed); the key is shown once."""
    if role not in ROLES:
        raise ValueError(f"unknown key role {role!r}; one of {', '.join(ROLES)}")
    key = new_key(tenant_id)
    async with db.tenant(tenant_id) as conn:
        await ensure_tenant(conn, tenant_id)
        await conn.execute(
            "INSERT INTO api_keys (tenant_id, prefix, key_hash, name, role)"
            " VALUES (current_tenant(), $1, $2, $3, $4)",
            key_prefix(key),
            key_hash(key),
            name,
            role,
        )
    return key


async def revoke_key(db: Database, tenant_id: str, prefix: str) -> int:
    async with db.tenant(tenant_id) as conn:
        result = await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL", prefix
        )
    return int(result.split()[-1])


async def list_keys(db: Database, tenant_id: str) -> list[dict[str, object]]:
    async with db.tenant(tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT prefix, name, role, created_at, revoked_at FROM api_keys ORDER BY created_at, prefix"
        )
    return [dict(r) for r in rows]


def db_lookup(db: Database) -> Lookup:
    async def lookup(tenant_id: str, digest: bytes) -> str | None:
        async with db.tenant(tenant_id) as conn:
            return await conn.fetchval(
                "SELECT role FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", digest
            )

    return lookup


@dataclass
class KeyVerifier:
    lookup: Lookup
    cache_ttl_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _cache: dict[bytes, tuple[Caller, float]] = field(default_factory=dict)

    async def tenant_of(self, key: str) -> str | None:
        """The key's tenant if the key is live, else None."""
        caller = await self.caller(key)
        return caller.tenant if caller else None

    async def caller(self, key: str) -> Caller | None:
        """The live key's tenant, role and prefix, else None."""
        tenant = key_tenant(key)
        if tenant is None:
            return None
        digest = key_hash(key)
        cached = self._cache.get(digest)
        now = self.clock()
        if cached and cached[1] > now:
            return cached[0]
        role = await self.lookup(tenant, digest)
        if not role:
            self._cache.pop(digest, None)
            return None
        if len(self._cache) > 100_000:
            self._cache.clear()
        caller = Caller(tenant, DEFAULT_ROLE if role is True else str(role), key_prefix(key))
        self._cache[digest] = (caller, now + self.cache_ttl_s)
        return caller


@dataclass
class Bucket:
    capacity: float
    per_s: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.per_s)
        self.updated = now

    def wait_s(self, amount: float = 1.0) -> float:
        """Seconds until `amount` is available (0 when it is now)."""
        return 0.0 if self.level >= amount else (amount - self.level) / self.per_s


@dataclass
class RateLimiter:
    """Token buckets per tenant: API requests/min, frame uploads/min (a screen share sends up to 30 a
    second, so frames have their own budget) and LLM tokens/min; refilled continuously, burst = 1 min."""

    requests_per_min: float
    tokens_per_min: float
    overrides: dict[str, tuple[float, float]] = field(default_factory=dict)
    frames_per_min: float = 36_000.0
    clock: Callable[[], float] = time.monotonic
    _requests: dict[str, Bucket] = field(default_factory=dict)
    _frames: dict[str, Bucket] = field(default_factory=dict)
    _tokens: dict[str, Bucket] = field(default_factory=dict)

    def _bucket(self, table: dict[str, Bucket], tenant: str, per_min: float) -> Bucket:
        now = self.clock()
        bucket = table.get(tenant)
        if bucket is None:
            bucket = table[tenant] = Bucket(per_min, per_min / 60, per_min, now)
        bucket.refill(now)
        return bucket

    def _limits(self, tenant: str) -> tuple[float, float]:
        return self.overrides.get(tenant, (self.requests_per_min, self.tokens_per_min))

    def admit(self, tenant: str, needs_tokens: bool = False, frame: bool = False) -> float | None:
        """Take one request (or frame upload); None when admitted, else seconds to wait (Retry-After)."""
        requests, tokens = self._limits(tenant)
        if frame:
            bucket = self._bucket(self._frames, tenant, self.frames_per_min)
        else:
            bucket = self._bucket(self._requests, tenant, requests)
        if needs_tokens:
            token_bucket = self._bucket(self._tokens, tenant, tokens)
            if token_bucket.level <= 0:
                return max(token_bucket.wait_s(1.0), 1.0)
        if bucket.level < 1:
            return max(bucket.wait_s(1.0), 0.1)
        bucket.level -= 1
        return None

    def charge_frames(self, tenant: str, frames: int) -> None:
        """Charge frames beyond the one `admit` took (a batch upload; may go below zero)."""
        self._bucket(self._frames, tenant, self.frames_per_min).level -= frames

    def charge_tokens(self, tenant: str, tokens: int) -> None:
        """Charge an answer's tokens (the bucket may go below zero: later requests wait it out)."""
        bucket = self._bucket(self._tokens, tenant, self._limits(tenant)[1])
        bucket.level -= tokens
