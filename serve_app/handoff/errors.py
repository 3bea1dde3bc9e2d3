"""Handoff errors, each with the HTTP status the API answers it with: defined in `serve_app.errors`."""

from __future__ import annotations

from serve_app.errors import (
    HandoffConflict,
    HandoffError,
    HandoffForbidden,
    HandoffNotFound,
    HandoffUnavailable,
)

__all__ = ["HandoffConflict", "HandoffError", "HandoffForbidden", "HandoffNotFound", "HandoffUnavailable"]
