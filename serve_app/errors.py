"""The project's error tree, in one module (a leaf: it imports nothing of the project).

Every error the project raises on purpose is a `SupportgraphError`; `retryable` says whether the same
call may succeed if tried again (a full queue, a lost replica, a provider's timeout) or not (bad input,
a bug). The branches:

- `InvalidInput` (also a `ValueError`, so callers that catch ValueError keep working): the caller's
  input cannot be used; the HTTP layer answers 4xx with a `detail`. Its subclasses keep the names the
  modules that raise them export (`FrameDecodeError` from `frames.decode`, `QueryError` from
  `knowledge.query`, ...).
- `Overloaded` / `ReplicaLost`: a backend refused or lost the work; HTTP 503 with Retry-After.
- `ProviderError`: one LLM call failed, with a `FailureKind`; SDK and Serve failures are mapped to it by
  type (`serve_app.routing.providers.errors`, `serve_app.handles`).
- `NoTierAvailable`: every tier of the escalation ladder failed or is switched off (HTTP 503).
- `HandoffError` and its subclasses: a handoff action that cannot be done, each with its HTTP status.
- `MigrationError`: the database schema cannot be brought up to date (also a `RuntimeError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

# internal: the backend raised something that is no API or transport failure (a bug); not retried
FailureKind = Literal["timeout", "rate_limit", "server", "connection", "client", "internal"]


class SupportgraphError(Exception):
    """The base of every error the project raises on purpose."""

    retryable: ClassVar[bool] = False


# -- bad input: 4xx --------------------------------------------------------------------------------


class InvalidInput(SupportgraphError, ValueError):
    """Input the caller must change before trying again (HTTP 4xx with a `detail`)."""


class FrameShapeError(InvalidInput):
    """Frames are not uint8 RGB `[B, H, W, 3]`."""


class FrameDecodeError(InvalidInput):
    """The upload is not a usable frame; `status` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class ChatRequestError(InvalidInput):
    """A chat request this router cannot take (unknown tier, bad messages): HTTP 422."""


class ChatFormatError(InvalidInput):
    """The request is well-formed JSON but not a chat we can answer (HTTP 422)."""


class InvalidIdentifier(InvalidInput):
    """A tenant, room or stream id that does not match its format."""


class ForeignStream(InvalidInput):
    """A stream id of another tenant than the caller's (HTTP 403)."""


class InvalidText(InvalidInput):
    """Input text that is not valid Unicode."""


class QueryError(InvalidInput):
    """A query that cannot be searched (empty, too long, an unknown mode); maps to HTTP 422."""


class UnsupportedDocument(InvalidInput):
    """A document the ingester cannot read (its format or content)."""


# -- capacity: 503 with Retry-After ------------------------------------------------------------------


class Overloaded(SupportgraphError):
    """The backend refused work (queue full): HTTP 503 with Retry-After."""

    retryable = True


class ReplicaLost(Overloaded):
    """The replica serving the request died (its process or node lost): HTTP 503 with Retry-After;
    Serve starts a replacement, so a retry is answered."""


# -- LLM providers and the escalation ladder ---------------------------------------------------------


@dataclass
class ProviderError(SupportgraphError):
    """One LLM call failed: `kind` sorts the failure, `status` is the HTTP status where there was one."""

    provider: str
    kind: FailureKind
    message: str
    status: int | None = None
    retry_after_s: float | None = None

    def __str__(self) -> str:
        code = f" {self.status}" if self.status else ""
        return f"{self.provider}: {self.kind}{code}: {self.message}"

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.kind not in ("client", "internal")


def failure_kind(status: int | None) -> FailureKind:
    """The FailureKind of an HTTP status (None: no answer at all, a connection failure)."""
    if status is None:
        return "connection"
    if status in (408, 504):
        return "timeout"
    if status == 429:
        return "rate_limit"
    return "server" if status >= 500 else "client"


class NoTierAvailable(SupportgraphError):
    """Every tier of the ladder failed or is switched off by its breaker (HTTP 503)."""


# -- handoffs to people --------------------------------------------------------------------------------


class HandoffError(SupportgraphError):
    """A handoff request that cannot be done; `status` is its HTTP status."""

    status = 422


class HandoffNotFound(HandoffError):
    """No such handoff for this tenant (another tenant's is not found either)."""

    status = 404


class HandoffConflict(HandoffError):
    """The handoff is not in the state the action needs (claimed twice, resolving an unclaimed one)."""

    status = 409


class HandoffForbidden(HandoffError):
    """The caller's key may not see or act on this handoff."""

    status = 403


class HandoffUnavailable(HandoffError):
    """Something the action needs is not configured (LiveKit credentials)."""

    status = 503


# -- the database ------------------------------------------------------------------------------------


class MigrationError(SupportgraphError, RuntimeError):
    """The schema cannot be migrated (a failed or unknown migration, a missing role)."""
