"""Generated screens that show an error message: the demo's clip and `supportgraph eval-screen`.

Each screen is one of the synthetic desktops of `supportgraph_tools.frames.synthetic` (themes, fonts,
pages drawn from a seed) with an error surface on top: a toast, a banner or a dialog carrying an error
message of a help center. `ERRORS` are the messages the sample help center documents (one article each);
`load_errors` reads another help center's from a JSONL file (`doc`, `title`, `text`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from supportgraph_tools.frames import synthetic as syn

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ErrorMessage:
    doc: str  # the help-center document (file name without suffix) that explains it
    title: str
    text: str

    @property
    def rendered(self) -> str:
        return f"{self.title}\n{self.text}"


ERRORS = (
    ErrorMessage("error-sync-access-denied", "Sync failed", "Error 0x80070005: access denied"),
    ErrorMessage("error-session-expired", "Session expired", "Sign in again to continue (AUTH-440)"),
    ErrorMessage("error-payment-declined", "Payment declined", "Card issuer refused the charge (P-402)"),
    ErrorMessage("error-storage-full", "Upload failed", "Storage quota exceeded (E-2207)"),
    ErrorMessage("error-export-too-large", "Export failed", "Workspace archive is over 2 GB (EXP-413)"),
    ErrorMessage(
        "error-verification-code", "Invalid verification code", "Code expired or mistyped (MFA-301)"
    ),
    ErrorMessage("error-integration-token", "Slack disconnected", "Integration token revoked (INT-4011)"),
    ErrorMessage("error-seat-limit", "Cannot invite member", "Seat limit reached for your plan (SEAT-409)"),
    ErrorMessage("error-rate-limit", "Too many requests", "Please wait 60 seconds and retry (LIM-429)"),
    ErrorMessage("sync-troubleshooting", "Sync failed", "Server refused the connection (S-403)"),
)

QUESTIONS = (
    "what does this error mean?",
    "how do I fix this?",
    "why am I seeing this?",
    "what should I do now?",
)


def load_errors(path: Path) -> list[ErrorMessage]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if not {"doc", "title", "text"} <= set(row):
                raise ValueError(f"{path}:{n}: each line needs doc, title and text")
            out.append(ErrorMessage(str(row["doc"]), str(row["title"]), str(row["text"])))
    return out


@dataclass
class ErrorScreen:
    before: np.ndarray  # the desktop without the error
    after: np.ndarray  # with it
    box: Box  # where the error surface is, frame pixels
    surface: str  # toast | banner | dialog
    error: ErrorMessage


def error_screen(
    error: ErrorMessage,
    seed: int,
    width: int = 1280,
    height: int = 720,
    surface: str | None = None,
    busy: bool = False,
) -> ErrorScreen:
    """A generated desktop (from `seed`) before and after `error` shows on a toast, banner or dialog.
    `busy`: a busy desktop (`frames/busy.py`: a chat sidebar, a terminal's log, typed text, a clock, in
    an app drawn from the seed) where a chat message and a log line also arrive with the error."""
    rng = np.random.default_rng(seed)
    screen = syn._Screen(width, height, rng, busy=busy)
    state = syn._State()
    if busy:
        _busy_state(screen, state, rng)
    before = screen.render(state, 0.0)
    if busy:
        state.chat, state.log = state.chat + 1, state.log + 1
        state.clock = f"{state.clock[:3]}{(int(state.clock[3:]) + 1) % 60:02d}"
    surface = surface or str(rng.choice(["toast", "toast", "banner", "dialog"]))
    fill_key = "banner" if surface == "banner" else "toast"
    fill = syn.PALETTE[fill_key][int(rng.integers(0, len(syn.PALETTE[fill_key])))]
    ink = (20, 20, 20) if sum(fill) > 450 else (250, 250, 250)
    if surface == "banner":
        top = screen.top(0)
        h = int(rng.integers(34, 50))
        box = (0, top, width, h)
        text = f"{error.title}: {error.text}"
        state.banner = syn._Overlay(box, fill, ink, text)
    else:
        pad = 24
        need = int(max(screen.font.getlength(error.title), screen.small_font.getlength(error.text))) + pad
        if surface == "dialog":
            w, h = max(need, int(rng.integers(340, 460))), int(rng.integers(150, 200))
            box = ((width - w) // 2, (screen.window_h - h) // 2, w, h)
        else:
            w, h = max(need, int(rng.integers(260, 340))), int(rng.integers(56, 80))
            margin = int(rng.integers(12, 29))
            box = (width - margin - w, screen.window_h - margin - h, w, h)
        overlay = syn._Overlay(box, fill, ink, error.title, error.text)
        if surface == "dialog":
            state.dialog = overlay
        else:
            state.toast = overlay
    after = screen.render(state, 0.0)
    return ErrorScreen(_rgb(before), _rgb(after), box, surface, error)


def _busy_state(screen: syn._Screen, state: syn._State, rng: np.random.Generator) -> None:
    """What a busy desktop shows before the error: an app and tab, chat and log so far, typed text."""
    desk = screen.busy
    assert desk is not None
    state.app = int(rng.integers(0, len(screen.apps)))
    state.tab = int(rng.integers(0, screen.tabs(state.app)))
    state.chat = int(rng.integers(1, max(2, desk.chat_capacity(screen))))
    terminal = screen.apps.index("terminal")
    state.log = int(rng.integers(1, max(2, desk.log_capacity(screen, terminal))))
    state.clock = f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 59)):02d}"
    words = " ".join(str(w) for w in rng.choice(syn.WORDS + syn.TEXT_WORDS, size=int(rng.integers(3, 9))))
    state.typed = {(*state.view, 0): words}


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
