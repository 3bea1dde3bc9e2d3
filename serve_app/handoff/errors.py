"""Handoff errors, each with the HTTP status the API answers it with (a leaf: no database, no web)."""

from __future__ import annotations


class HandoffError(Exception):
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
