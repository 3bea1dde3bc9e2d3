"""The words and messages the generated screens show (`supportgraph_tools.frames.synthetic` draws them).

They live in the runtime package because the screen reader's base vocabulary (`screen.normalize`) is
built from the project's own texts, these among them; the clip generator imports them from here.
"""

from __future__ import annotations

WORDS = [
    "def",
    "handle",
    "ticket",
    "refund",
    "order",
    "status",
    "retry",
    "token",
    "config",
    "region",
    "timeout",
    "invoice",
    "user",
    "agent",
    "stream",
    "frame",
    "hash",
    "cache",
    "deploy",
    "replica",
    "error",
    "return",
    "await",
    "async",
    "import",
    "class",
    "self",
    "value",
]
TOAST_TEXT = [
    ("Payment failed", "Your card was declined. Try another card."),
    ("Saved", "Your changes were saved."),
    ("Sync error", "Could not reach the server, retrying."),
    ("New message", "Support replied to ticket #4821."),
    ("Upload complete", "invoice-2026-11.pdf is ready."),
    ("Session expiring", "You will be signed out in 2 minutes."),
]
BANNER_TEXT = [
    "Your subscription has expired. Renew now to keep access.",
    "Scheduled maintenance tonight 22:00-23:00 UTC.",
    "We could not verify your email address. Resend link",
    "You are offline. Changes will sync when you reconnect.",
    "Two-factor authentication is now required for admins.",
]
ERROR_TEXT = [
    "Please enter a valid email address.",
    "This field is required.",
    "Password must be at least 12 characters long.",
    "Card number is invalid.",
    "Passwords do not match, please try again.",
    "Enter a date in the format YYYY-MM-DD.",
]
TOOLTIP_TEXT = ["Copy link", "Open in new tab", "Settings", "Mark as read", "Download", "Share", "More"]
DIALOG_TEXT = [
    ("Delete this ticket?", "This cannot be undone. The customer will be notified."),
    ("Session timed out", "Sign in again to continue where you left off."),
    ("Unsaved changes", "Do you want to save the changes you made?"),
    ("Permission required", "Ask an administrator to grant you access to billing."),
]
