"""Busy desktops for the labelled-event clips (`EventClipSpec(busy=True)`): text that grows on its own.

A busy share keeps changing where nothing significant happens, and what changes is text: a chat sidebar
docked on the right gets messages (each a name line and a message line), a terminal gets log output one
to three lines at a time below what it already shows, and the editor and the pages are typed into (the
clip's typing bursts) and get whole phrases pasted at once. These are distractors (`GROWTH`:
`chat_line`, `log_line`, `paste_line`), labelled with their boxes like the
others; the dedup must not send a frame for them, while every significant event (a toast, a banner, an
inline error, a dialog, a tab or app switch, a scroll of a screenful) still goes out.

Everything is drawn from the clip's seed: the sidebar's width, theme and messages, the log's text and
the times and sizes of every append. Neither the sidebar nor the log scrolls within a clip: each holds
what a clip appends (the planner stops appending when one is full).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import ImageDraw

if TYPE_CHECKING:
    from supportgraph_tools.frames.synthetic import _Planner, _Screen, _State

GROWTH = ("chat_line", "log_line", "paste_line")
NAMES = ["Ana", "Bo", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivo", "Jun"]
CHAT = [
    "can you check the staging deploy",
    "looks good on my side",
    "pushed a fix for the retry loop",
    "who owns the billing export",
    "standup in five minutes",
    "the invoice job finished",
    "I will review the PR after lunch",
    "ticket 4821 is waiting on the customer",
    "lgtm, merging now",
    "is the dashboard slow for anyone else",
]
LOG = ["GET /api/tickets 200", "worker heartbeat ok", "cache hit ratio 0.93", "POST /api/orders 201",
       "queue depth 12", "sync batch 418 committed", "GET /health 200", "job export-7 finished in 2.1s",
       "replica 2 ready", "retrying in 500ms"]  # fmt: skip
Box = tuple[int, int, int, int]


@dataclass
class BusyDesk:
    """The busy parts of one clip's desktop: geometry, theme and the text that will be appended."""

    sidebar_w: int
    sidebar_bg: tuple[int, int, int]
    sidebar_ink: tuple[int, int, int]
    chat: list[tuple[str, str]]
    log: list[str]
    log_start: int  # terminal lines pre-drawn on its page (appended lines go below)

    @classmethod
    def draw_from(cls, rng: np.random.Generator, width: int, log_rows: int) -> BusyDesk:
        dark = rng.random() < 0.5
        base = int(rng.integers(24, 48)) if dark else int(rng.integers(232, 250))
        ink = (int(rng.integers(200, 236)),) * 3 if dark else (int(rng.integers(30, 70)),) * 3
        chat = [(str(rng.choice(NAMES)), str(rng.choice(CHAT))) for _ in range(40)]
        stamps = rng.integers(0, 3600, 120)
        log = [
            f"12:{s // 60:02d}:{s % 60:02d} {rng.choice(LOG)}" + (f" ({rng.choice(CHAT)})" if k % 2 else "")
            for k, s in enumerate(sorted(stamps))
        ]
        return cls(
            int(rng.integers(220, 300)) if width >= 1000 else int(rng.integers(150, 190)),
            (base, base + 2, base + 6),
            ink,
            chat,
            log,
            max(2, log_rows // int(rng.integers(3, 6))),
        )

    # drawing --------------------------------------------------------------------------------------

    def sidebar_box(self, screen: _Screen, app: int) -> Box:
        top = screen.top(app)
        return (screen.width - self.sidebar_w, top, self.sidebar_w, screen.window_h - top)

    def message_h(self, screen: _Screen) -> int:
        return 2 * screen.line_h + 8

    def chat_capacity(self, screen: _Screen) -> int:
        """Messages the sidebar holds in the shortest view's window, the header's row aside."""
        shortest = min(screen.viewport_h(a) for a in range(len(screen.apps)))
        return max(0, (shortest - 36) // self.message_h(screen) - 1)

    def log_capacity(self, screen: _Screen, app: int) -> int:
        return max(0, screen.viewport_h(app) // screen.line_h - self.log_start - 1)

    def draw(self, draw: ImageDraw.ImageDraw, screen: _Screen, state: _State, top: int) -> None:
        """The appended log lines (terminal in front) and the chat sidebar, under any overlay."""
        if screen.apps[state.app] == "terminal":
            font, ink = screen.font, screen.pages[state.view].ink
            for n in range(state.log):
                y = top + 4 + (self.log_start + n) * screen.line_h
                draw.text((8, y), self.log[n % len(self.log)], fill=ink, font=font)
        x, y, w, h = self.sidebar_box(screen, state.app)
        draw.rectangle((x, y, x + w, y + h), fill=self.sidebar_bg)
        draw.line((x, y, x, y + h), fill=_mix(self.sidebar_bg, self.sidebar_ink, 0.3), width=1)
        draw.text((x + 10, y + 8), "# support-team", fill=self.sidebar_ink, font=screen.small_font)
        for n in range(state.chat):
            my = y + 36 + n * self.message_h(screen)
            name, text = self.chat[n % len(self.chat)]
            draw.text((x + 10, my), name, fill=self.sidebar_ink, font=screen.small_font)
            line = screen._fit(text, w - 20)
            draw.text((x + 10, my + screen.line_h), line, fill=self.sidebar_ink, font=screen.small_font)


def plan_growth(planner: _Planner) -> None:
    """Chat messages and log appends through the clip, each labelled with where it draws."""
    rng, screen, plan = planner.rng, planner.screen, planner.plan
    desk = screen.busy
    assert desk is not None
    duration = planner.spec.duration_s
    t, count = float(rng.uniform(0.5, 3.0)), 0
    while t < duration and count < desk.chat_capacity(screen):
        count += 1
        plan.add(t, lambda s, n=count: setattr(s, "chat", n))
        state = plan.discrete_at(t)
        x, y, w, _ = desk.sidebar_box(screen, state.app)
        box = (x, y + 36 + (count - 1) * desk.message_h(screen), w, desk.message_h(screen))
        planner._event(t, "chat_line", desk.chat[(count - 1) % len(desk.chat)][1], box)
        t += float(rng.uniform(1.5, 6.0))
    terminal = screen.apps.index("terminal")
    t, lines = float(rng.uniform(0.3, 1.5)), 0
    while t < duration:
        more = int(rng.choice([1, 1, 1, 2, 3]))
        if lines + more > desk.log_capacity(screen, terminal):
            break
        lines += more
        plan.add(t, lambda s, n=lines: setattr(s, "log", n))
        top = screen.top(terminal) + 4 + (desk.log_start + lines - more) * screen.line_h
        planner._event(t, "log_line", f"+{more}", (0, top, screen.width, more * screen.line_h))
        t += float(rng.uniform(0.4, 2.5))
    _pastes(planner)


def _pastes(planner: _Planner) -> None:
    """Whole phrases that appear at once where the user types (a paste, an accepted completion)."""
    rng, screen, plan = planner.rng, planner.screen, planner.plan
    t = float(rng.uniform(1.0, 4.0))
    while t < planner.spec.duration_s:
        state = plan.discrete_at(t)
        page = screen.pages[state.view]
        if state.dialog is None and not page.fields:
            text = " " + " ".join(str(w) for w in rng.choice(CHAT, size=int(rng.integers(1, 4))))
            text = screen._fit(text, max(60, screen.width - page.target[0] - 40))
            plan.bursts.append((t, (*state.view, 0), text, 1000.0))
            x, y = screen.typing_origin(page, 0)
            width = int(screen.font.getlength(text)) + 4
            planner._event(t, "paste_line", text.strip(), (x, y, width, screen.line_h))
        t += float(rng.uniform(2.0, 7.0))


def _mix(a: tuple, b: tuple, share: float) -> tuple[int, int, int]:
    return tuple(int(x * (1 - share) + y * share) for x, y in zip(a, b, strict=True))
