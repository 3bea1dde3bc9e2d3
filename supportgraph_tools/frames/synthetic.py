"""Generated screen-share clips, deterministic for a seed; never real user content.

- `ScreenShareClip`: an editor and a browser tab with typing, a blinking and moving cursor, scrolling,
  tab switches and JPEG noise, with the user speaking in some stretches (the demo, the tests).
- `EventClip`: a desktop (browser tabs with articles, forms and dashboards, a code editor, a terminal,
  a taskbar clock) with a labelled timeline (`events`): significant events the dedup must send (toast
  open/close, banner on/off, inline form error, modal dialog, tab and app switch, page and code scroll
  of a screenful) and distractors it must not (cursor, caret, typing, clock, spinner, tooltip, smooth
  scroll of a few pixels), with their times and screen boxes; what `supportgraph eval-dedup` scores.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from serve_app.screen.screen_text import (
    BANNER_TEXT,
    DIALOG_TEXT,
    ERROR_TEXT,
    TOAST_TEXT,
    TOOLTIP_TEXT,
    WORDS,
)
from supportgraph_tools.frames.busy import GROWTH, BusyDesk, plan_growth


@dataclass(frozen=True)
class ClipFrame:
    index: int
    ts: float  # seconds from the start of the clip
    is_speaking: bool
    jpeg: bytes  # the frame as sent over HTTP (JPEG noise included)
    scene: str  # what happens on screen: typing, idle, scrolling, tab_switch

    @property
    def rgb(self) -> np.ndarray:
        """uint8 [H, W, 3]: the decoded JPEG, i.e. what a receiver sees."""
        return np.asarray(Image.open(io.BytesIO(self.jpeg)).convert("RGB"))


@dataclass(frozen=True)
class FrameSpec:
    """What every generated clip is drawn from: its seed, frame size and frame rate."""

    seed: int = 0
    width: int = 1280
    height: int = 720
    fps: float = 30.0


@dataclass(frozen=True)
class ClipSpec(FrameSpec):
    duration_s: float = 40.0
    jpeg_quality: int = 80


class ScreenShareClip:
    """Iterate `frames()`; the timeline of scenes and speech is drawn from the seed."""

    LINE_H = 18

    def __init__(self, spec: ClipSpec = ClipSpec()):
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        self._lines = [" ".join(rng.choice(WORDS, size=rng.integers(3, 10))) for _ in range(400)]
        self._page = [" ".join(rng.choice(WORDS, size=rng.integers(4, 12))) for _ in range(200)]
        self._timeline = self._plan(rng)
        self._rows = (spec.height - 40) // self.LINE_H
        self._bases: dict[tuple[int, int], Image.Image] = {}
        self._speech = self._plan_speech(rng)

    @property
    def n_frames(self) -> int:
        return int(self.spec.duration_s * self.spec.fps)

    def _plan(self, rng: np.random.Generator) -> list[tuple[float, str]]:
        """(start second, scene) list: mostly typing and idle reading, some scrolls and tab switches."""
        t, plan = 0.0, []
        scenes, weights = ["typing", "idle", "scrolling", "tab_switch"], [0.45, 0.35, 0.12, 0.08]
        while t < self.spec.duration_s:
            scene = str(rng.choice(scenes, p=weights))
            plan.append((t, scene))
            t += {"typing": 4.0, "idle": 3.0, "scrolling": 1.5, "tab_switch": 0.5}[scene] * rng.uniform(
                0.6, 1.6
            )
        return plan

    def _plan_speech(self, rng: np.random.Generator) -> list[tuple[float, float]]:
        t, spans = 0.0, []
        while t < self.spec.duration_s:
            t += rng.uniform(1.0, 4.0)
            length = rng.uniform(1.5, 5.0)
            spans.append((t, t + length))
            t += length
        return spans

    def _scene_at(self, ts: float) -> tuple[str, float, int]:
        """(scene, seconds into it, how many tab switches happened before)."""
        current, start, switches = self._timeline[0][1], 0.0, 0
        for begin, scene in self._timeline:
            if begin > ts:
                break
            if scene == "tab_switch":
                switches += 1
            current, start = scene, begin
        return current, ts - start, switches

    def _speaking(self, ts: float) -> bool:
        return any(a <= ts < b for a, b in self._speech)

    TABS = ("editor.py", "help center", "logs")
    THEMES = (
        ((30, 32, 40), (200, 210, 190)),
        ((246, 246, 246), (40, 40, 40)),
        ((12, 12, 12), (120, 230, 120)),
    )

    def _base(self, tab: int, scroll: int) -> Image.Image:
        """The window without the typed line, caret and pointer (cached: it changes only on scroll/switch)."""
        key = (tab, scroll)
        if key not in self._bases:
            if len(self._bases) > 64:
                self._bases.clear()
            w, h = self.spec.width, self.spec.height
            background, color = self.THEMES[tab]
            image = Image.new("RGB", (w, h), background)
            draw = ImageDraw.Draw(image)
            draw.rectangle((0, 0, w, 28), fill=(60, 63, 75))  # title bar with tabs
            for i, name in enumerate(self.TABS):
                fill = (90, 95, 110) if i == tab else (70, 72, 84)
                draw.rectangle((8 + i * 160, 4, 160 + i * 160, 28), fill=fill)
                draw.text((16 + i * 160, 10), name, fill=(220, 220, 220))
            if tab == 2:  # log view: a sidebar and narrower text
                draw.rectangle((w - 300, 28, w, h), fill=(40, 40, 60))
            text = self._page if tab == 1 else self._lines
            for r in range(self._rows):
                if tab == 0 and r == self._rows // 2:
                    continue  # the line being typed is drawn per frame
                line = text[(scroll * (r + 3) if tab == 2 else scroll + r) % len(text)]
                draw.text((12, 36 + r * self.LINE_H), line, fill=color)
            self._bases[key] = image
        return self._bases[key]

    def _render(self, ts: float) -> tuple[Image.Image, str]:
        w, h = self.spec.width, self.spec.height
        scene, into, switches = self._scene_at(ts)
        tab = switches % len(self.TABS)
        rows = self._rows
        typed_chars = int(ts * 7)  # steady typing progress across the clip
        scroll = int(ts * 0.4) + (int(into * 6) if scene == "scrolling" else 0)
        image = self._base(tab, scroll).copy()
        draw = ImageDraw.Draw(image)
        if tab == 0:  # the line being typed and a blinking caret that drifts with it
            line = self._lines[(scroll + rows // 2) % len(self._lines)]
            draw.text(
                (12, 36 + (rows // 2) * self.LINE_H),
                line[: typed_chars % (len(line) + 1)],
                fill=self.THEMES[0][1],
            )
            if int(ts * 2) % 2 == 0:
                x = 12 + 6 * (typed_chars % 60)
                y = 36 + (rows // 2) * self.LINE_H
                draw.rectangle((x, y, x + 2, y + 14), fill=(255, 255, 255))
        mx, my = int(w * (0.5 + 0.3 * np.sin(ts * 0.7))), int(h * (0.5 + 0.3 * np.cos(ts * 0.5)))
        draw.polygon(
            [(mx, my), (mx + 10, my + 14), (mx + 4, my + 14)], fill=(255, 255, 255), outline=(0, 0, 0)
        )
        return image, scene

    def frames(self) -> Iterator[ClipFrame]:
        for i in range(self.n_frames):
            ts = i / self.spec.fps
            image, scene = self._render(ts)
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=self.spec.jpeg_quality)
            yield ClipFrame(i, ts, self._speaking(ts), buf.getvalue(), scene)


# --- labelled events: what the dedup must send, and what it must not -------------------------------

SIGNIFICANT = (
    "toast",
    "banner",
    "inline_error",
    "dialog",
    "tab_switch",
    "app_switch",
    "page_scroll",
    "code_scroll",
)
DISTRACTORS = ("cursor", "caret", "typing", "clock", "spinner", "tooltip", "smooth_scroll")
BUSY_DISTRACTORS = (*DISTRACTORS, *GROWTH)  # what a busy clip adds: text growing line by line
Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels


@dataclass(frozen=True)
class ClipEvent:
    """Something that happens on screen at `ts`: significant (the model should see it) or a distractor."""

    ts: float
    kind: str  # one of SIGNIFICANT or DISTRACTORS
    detail: str = ""  # open / close, on / off, the target of a switch, ...
    box: Box | None = None  # where on screen it changes things, when it is local

    @property
    def significant(self) -> bool:
        return self.kind in SIGNIFICANT


@dataclass(frozen=True)
class EventClipSpec(FrameSpec):
    duration_s: float = 30.0
    jpeg_quality: int | None = None  # None: drawn from the seed in [50, 80]
    kinds: tuple[str, ...] = SIGNIFICANT  # significant events to plan
    distractors: tuple[str, ...] = DISTRACTORS  # background activity to draw
    min_gap_s: float = 0.6  # between two significant events
    busy: bool = False  # a chat sidebar and a terminal that grow line by line (`busy.py`)


class EventClip:
    """A generated screen share (browser, editor, terminal; a taskbar with a clock) with a labelled
    timeline: `events` lists every significant event and distractor with its time and screen box.

    Everything visible is drawn from the seed: themes, fonts, page layouts, and each event's position,
    size, colours, text and timing. UI sizes are in frame pixels, as a native-resolution share shows
    them; at 640x480 the same toasts and dialogs take a larger share of the screen. `frame(i)` renders
    frame i through JPEG (what a receiver decodes); `times()` gives every frame's (ts, is_speaking)
    without rendering, so a caller can render only the frames its sampler keeps.
    """

    def __init__(self, spec: EventClipSpec = EventClipSpec()):
        self.spec = spec
        rng = np.random.default_rng([spec.seed, spec.width, spec.height])
        self.quality = spec.jpeg_quality or int(rng.integers(50, 81))
        self.screen = _Screen(spec.width, spec.height, rng, busy=spec.busy)
        self._speech = _speech_spans(rng, spec.duration_s)
        self.plan = _Planner(self.screen, spec, rng).run()
        self.events = sorted(self.plan.events, key=lambda e: e.ts)

    @property
    def n_frames(self) -> int:
        return int(self.spec.duration_s * self.spec.fps)

    def times(self) -> list[tuple[float, bool]]:
        return [(ts, any(a <= ts < b for a, b in self._speech)) for ts in self._frame_ts()]

    def _frame_ts(self) -> list[float]:
        return [i / self.spec.fps for i in range(self.n_frames)]

    def image(self, ts: float) -> Image.Image:
        """The screen at `ts`, before JPEG."""
        return self.screen.render(self.plan.state_at(ts), ts)

    def rgb(self, ts: float) -> np.ndarray:
        """The screen at `ts` as a receiver decodes it (through JPEG at the clip's quality)."""
        return jpeg_rgb(self.image(ts), self.quality)

    def frame(self, index: int) -> ClipFrame:
        ts = index / self.spec.fps
        buf = io.BytesIO()
        self.image(ts).save(buf, format="JPEG", quality=self.quality)
        speaking = any(a <= ts < b for a, b in self._speech)
        return ClipFrame(index, ts, speaking, buf.getvalue(), self.plan.state_at(ts).view_name)

    def frames(self) -> Iterator[ClipFrame]:
        for i in range(self.n_frames):
            yield self.frame(i)


def _speech_spans(rng: np.random.Generator, duration_s: float) -> list[tuple[float, float]]:
    """Speaking about half the time: silences of 1-4 s, then turns of 1.5-5 s."""
    t, spans = 0.0, []
    while t < duration_s:
        t += rng.uniform(1.0, 4.0)
        length = rng.uniform(1.5, 5.0)
        spans.append((t, t + length))
        t += length
    return spans


def jpeg_rgb(image: Image.Image, quality: int) -> np.ndarray:
    """What a receiver decodes from `image` sent as JPEG at `quality`."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


PALETTE = {
    "toast": [(45, 52, 64), (34, 139, 84), (200, 52, 52), (37, 99, 235), (217, 140, 20), (250, 250, 250)],
    "banner": [(220, 38, 38), (234, 179, 8), (37, 99, 235), (22, 163, 74), (124, 58, 237)],
    "error": [(220, 38, 38), (200, 30, 30), (185, 28, 28), (211, 47, 47)],  # on light pages
    "error_dark": [(248, 113, 113), (255, 99, 99), (239, 83, 80), (252, 129, 129)],  # on dark pages
    "tooltip": [(40, 40, 44), (60, 64, 72), (255, 255, 225), (250, 250, 250), (30, 41, 59)],
}


@dataclass
class _Field:
    label: str
    box: Box  # input box in page coordinates
    error: str


@dataclass
class _Page:
    """A document rendered once, taller than the viewport when it scrolls; typing goes to `target`."""

    kind: str  # article, form, dashboard, code, terminal
    image: Image.Image
    target: tuple[int, int]  # where typed text starts, page coordinates
    ink: tuple[int, int, int]
    fields: list[_Field] = field(default_factory=list)
    error_color: tuple[int, int, int] = (220, 38, 38)

    @property
    def height(self) -> int:
        return self.image.height


@dataclass(frozen=True)
class _Overlay:
    """A toast, banner, dialog or tooltip: a box, colours, text."""

    box: Box
    fill: tuple[int, int, int]
    ink: tuple[int, int, int]
    title: str
    text: str = ""
    dim: float = 0.0  # dialogs: darken the window behind by this share
    push: bool = False  # banners: push the page down instead of covering it


@dataclass
class _State:
    """What the screen shows at one time (the planner keeps one per change)."""

    app: int = 0
    tab: int = 0
    scroll: dict[tuple[int, int], int] = field(default_factory=dict)
    toast: _Overlay | None = None
    banner: _Overlay | None = None
    dialog: _Overlay | None = None
    tooltip: _Overlay | None = None
    spinner: tuple[int, int] | None = None
    errors: frozenset[tuple[int, int]] = frozenset()  # (tab, field)
    focus: dict[tuple[int, int], int] = field(default_factory=dict)  # form view -> focused field
    # filled in per frame from the planner's continuous processes
    cursor: tuple[int, int] | None = None
    typed: dict[tuple[int, int, int], str] = field(default_factory=dict)  # (app, tab, field) -> text
    caret: bool = False
    clock: str = ""
    chat: int = 0  # busy desktops: chat messages shown, log lines appended
    log: int = 0

    @property
    def view(self) -> tuple[int, int]:
        """(app, tab): the browser (app 0) keeps its tab while another app is in front."""
        return (self.app, self.tab if self.app == 0 else 0)

    @property
    def view_name(self) -> str:
        return f"app{self.app}.tab{self.tab}"


class _Screen:
    """Geometry, themes, fonts and rendered pages of one clip's desktop; `render` draws a state."""

    TASKBAR = 30

    def __init__(self, width: int, height: int, rng: np.random.Generator, busy: bool = False):
        self.width, self.height = width, height
        self.rng = rng
        size = int(rng.integers(12, 15))
        self.font = ImageFont.load_default(size=size)
        self.title_font = ImageFont.load_default(size=size + 5)
        self.small_font = ImageFont.load_default(size=max(11, size - 1))
        self.line_h = size + int(rng.integers(5, 9))
        self.apps = ["browser", "editor"] + (["terminal"] if rng.random() < 0.6 else [])
        self.tops = {"browser": 62, "editor": 28, "terminal": 24}
        self.busy: BusyDesk | None = None
        if busy:
            self.apps = ["browser", "editor", "terminal"]
            rows = (height - self.TASKBAR - self.tops["terminal"]) // self.line_h
            self.busy = BusyDesk.draw_from(rng, width, rows)
        kinds = ["form", "article", str(rng.choice(["article", "dashboard"]))]
        if rng.random() < 0.6:
            kinds.append(str(rng.choice(["dashboard", "article"])))
        rng.shuffle(kinds)
        self.tab_kinds = kinds
        self.pages: dict[tuple[int, int], _Page] = {}
        for tab, kind in enumerate(kinds):
            self.pages[(0, tab)] = self._page(kind)
        for app, name in enumerate(self.apps[1:], start=1):
            self.pages[(app, 0)] = self._page("code" if name == "editor" else "terminal")
        self._chrome: dict[tuple[int, int], Image.Image] = {}

    # geometry -------------------------------------------------------------------------------------

    def top(self, app: int) -> int:
        return self.tops[self.apps[app]]

    @property
    def window_h(self) -> int:
        return self.height - self.TASKBAR

    def viewport_h(self, app: int) -> int:
        return self.window_h - self.top(app)

    def tabs(self, app: int) -> int:
        return len(self.tab_kinds) if self.apps[app] == "browser" else 1

    def max_scroll(self, view: tuple[int, int]) -> int:
        return max(0, self.pages[view].height - self.viewport_h(view[0]))

    # pages ----------------------------------------------------------------------------------------

    def _theme(self, dark: bool) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        rng = self.rng
        if dark:
            base = int(rng.integers(18, 40))
            return (base, base + 2, base + 8), (int(rng.integers(190, 235)),) * 3
        base = int(rng.integers(240, 256))
        return (base, base, min(255, base + 3)), (int(rng.integers(20, 60)),) * 3

    def _words(self, n: int) -> str:
        return " ".join(self.rng.choice(WORDS + TEXT_WORDS, size=n))

    def _page(self, kind: str) -> _Page:
        return {
            "article": self._article,
            "form": self._form,
            "dashboard": self._dashboard,
            "code": self._code,
            "terminal": self._terminal,
        }[kind]()

    def _article(self) -> _Page:
        rng, w = self.rng, self.width
        bg, ink = self._theme(dark=rng.random() < 0.2)
        h = 3 * self.viewport_h(0) + int(rng.integers(0, 200))
        image = Image.new("RGB", (w, h), bg)
        draw = ImageDraw.Draw(image)
        margin = int(rng.integers(24, max(30, w // 10)))
        draw.rectangle((margin, 12, margin + 260, 40), outline=ink, width=1)  # search box
        y = 60
        while y < h - 60:
            roll = rng.random()
            if roll < 0.12:
                draw.text((margin, y), self._words(4).title(), fill=ink, font=self.title_font)
                y += self.line_h * 2
            elif roll < 0.2:
                box_w, box_h = int(rng.integers(160, min(420, w - 2 * margin))), int(rng.integers(80, 160))
                color = tuple(int(c) for c in rng.integers(60, 220, 3))
                draw.rectangle((margin, y, margin + box_w, y + box_h), fill=color)
                y += box_h + self.line_h
            else:
                for _ in range(int(rng.integers(2, 6))):
                    line = self._fit(self._words(int(rng.integers(6, 24))), w - 2 * margin)
                    draw.text((margin, y), line, fill=ink, font=self.font)
                    y += self.line_h
                y += self.line_h // 2
        return _Page("article", image, (margin + 8, 18), ink)

    def _fit(self, text: str, width: int) -> str:
        while text and self.font.getlength(text) > width:
            text = text.rsplit(" ", 1)[0] if " " in text else text[:-1]
        return text

    def _form(self) -> _Page:
        rng, w = self.rng, self.width
        bg, ink = self._theme(dark=rng.random() < 0.25)
        vh = self.viewport_h(0)
        image = Image.new("RGB", (w, vh), bg)
        draw = ImageDraw.Draw(image)
        x = int(rng.integers(30, max(40, w // 5)))
        draw.text(
            (x, 20),
            "Update your " + str(rng.choice(["billing details", "account", "profile"])),
            fill=ink,
            font=self.title_font,
        )
        spacing = int(rng.integers(74, 92))
        n = int(min(rng.integers(3, 5), max(1, (vh - 130) // spacing)))
        fields, border = [], tuple(int(c * 0.6 + b * 0.4) for c, b in zip(ink, bg, strict=True))
        for i in range(n):
            y = 80 + i * spacing
            fw, fh = int(min(rng.integers(240, 381), w - x - 30)), int(rng.integers(28, 37))
            label = str(rng.choice(["Email", "Name", "Card number", "Password", "Date", "Company"]))
            draw.text((x, y - 20), label, fill=ink, font=self.small_font)
            draw.rectangle((x, y, x + fw, y + fh), outline=border, width=1)
            fields.append(_Field(label, (x, y, fw, fh), str(rng.choice(ERROR_TEXT))))
        by = 80 + n * spacing
        draw.rectangle((x, by, x + 110, by + 32), fill=(37, 99, 235))
        draw.text((x + 30, by + 8), "Submit", fill=(255, 255, 255), font=self.font)
        reds = PALETTE["error_dark" if sum(bg) < 300 else "error"]
        color = reds[int(rng.integers(0, len(reds)))]
        return _Page("form", image, (fields[0].box[0] + 8, fields[0].box[1] + 8), ink, fields, color)

    def _dashboard(self) -> _Page:
        rng, w = self.rng, self.width
        bg, ink = self._theme(dark=rng.random() < 0.3)
        h = 2 * self.viewport_h(0) + int(rng.integers(0, 300))
        image = Image.new("RGB", (w, h), bg)
        draw = ImageDraw.Draw(image)
        margin, cards = 24, int(rng.integers(2, 5))
        card_w = (w - 2 * margin - (cards - 1) * 16) // cards
        card = tuple(int(min(255, max(0, c + (14 if sum(bg) < 300 else -10)))) for c in bg)
        draw.rectangle((margin, 12, margin + 220, 38), outline=ink, width=1)  # filter box
        for i in range(cards):
            x0 = margin + i * (card_w + 16)
            draw.rectangle((x0, 52, x0 + card_w, 142), fill=card)
            draw.text((x0 + 12, 60), self._words(2), fill=ink, font=self.small_font)
            draw.text((x0 + 12, 92), f"{rng.integers(10, 99999):,}", fill=ink, font=self.title_font)
        y = 170
        while y < h - 30:
            cells = [self._words(1), f"#{rng.integers(1000, 9999)}", self._words(3), f"{rng.random():.2f}"]
            for j, text in enumerate(cells):
                draw.text((margin + j * (w - 2 * margin) // 4, y), text, fill=ink, font=self.font)
            y += self.line_h + 4
            draw.line((margin, y - 3, w - margin, y - 3), fill=card, width=1)
        return _Page("dashboard", image, (margin + 8, 18), ink)

    def _code(self) -> _Page:
        rng, w = self.rng, self.width
        bg, ink = self._theme(dark=rng.random() < 0.7)
        lines = int(rng.integers(180, 320))
        image = Image.new("RGB", (w, lines * self.line_h + 20), bg)
        draw = ImageDraw.Draw(image)
        tokens = [ink, (86, 156, 214), (206, 145, 120), (106, 153, 85), (197, 134, 192)]
        gutter = (int(ink[0] * 0.45 + bg[0] * 0.55),) * 3
        target_line = int(rng.integers(8, 16))
        for n in range(lines):
            y = 6 + n * self.line_h
            draw.text((8, y), f"{n + 1:4d}", fill=gutter, font=self.small_font)
            if n == target_line:
                continue  # the line being written
            x = 60 + 24 * int(rng.integers(0, 4))
            for word in self._words(int(rng.integers(0, 9))).split():
                color = tokens[int(rng.integers(0, len(tokens)))]
                draw.text((x, y), word, fill=color, font=self.font)
                x += int(self.font.getlength(word + " "))
                if x > w - 80:
                    break
        return _Page("code", image, (60 + 24 * 3, 6 + target_line * self.line_h), ink)

    def _terminal(self) -> _Page:
        rng, w = self.rng, self.width
        bg, ink = (12, 12, 14), (int(rng.integers(150, 230)), int(rng.integers(200, 240)), 150)
        lines = self.viewport_h(len(self.apps) - 1) // self.line_h
        image = Image.new("RGB", (w, lines * self.line_h + 8), bg)
        draw = ImageDraw.Draw(image)
        shown = self.busy.log_start if self.busy else lines - 1  # busy: the log grows below
        for n in range(shown):
            stamp = f"12:{n // 60:02d}:{n % 60:02d} "
            draw.text(
                (8, 4 + n * self.line_h), self._fit(stamp + self._words(9), w - 16), fill=ink, font=self.font
            )
        y = 4 + (lines - 1) * self.line_h
        if self.busy is None:
            draw.text((8, y), "$", fill=ink, font=self.font)
        return _Page("terminal", image, (24, y), ink)

    # drawing --------------------------------------------------------------------------------------

    def chrome(self, app: int, tab: int) -> Image.Image:
        """The window frame, tab strip and taskbar of a view, viewport and clock left empty (cached)."""
        key = (app, tab)
        if key not in self._chrome:
            self._chrome[key] = self._draw_chrome(app, tab)
        return self._chrome[key]

    def _draw_chrome(self, app: int, tab: int) -> Image.Image:
        w, h = self.width, self.height
        image = Image.new("RGB", (w, h), (32, 34, 40))
        draw = ImageDraw.Draw(image)
        name = self.apps[app]
        bar = {"browser": (222, 225, 230), "editor": (37, 37, 38), "terminal": (48, 48, 52)}[name]
        text = (40, 40, 40) if name == "browser" else (200, 200, 200)
        draw.rectangle((0, 0, w, self.top(app)), fill=bar)
        if name == "browser":
            tab_w = min(200, (w - 40) // len(self.tab_kinds))
            for i, kind in enumerate(self.tab_kinds):
                fill = (255, 255, 255) if i == tab else (205, 208, 214)
                draw.rectangle((8 + i * tab_w, 4, 4 + (i + 1) * tab_w, 30), fill=fill)
                draw.text((16 + i * tab_w, 9), f"{kind.title()} - Help", fill=text, font=self.small_font)
            draw.rectangle((8, 34, w - 8, 58), fill=(255, 255, 255))
            draw.text(
                (20, 38),
                f"https://support.example.com/{self.tab_kinds[tab]}/{tab + 1}",
                fill=text,
                font=self.small_font,
            )
        else:
            draw.text(
                (12, 6),
                "billing_service.py" if name == "editor" else "bash - logs",
                fill=text,
                font=self.small_font,
            )
        y = h - self.TASKBAR
        draw.rectangle((0, y, w, h), fill=(24, 26, 32))
        for i in range(len(self.apps)):
            color = [(66, 133, 244), (0, 122, 204), (90, 90, 90)][i]
            draw.rectangle((10 + i * 40, y + 5, 30 + i * 40, y + 25), fill=color)
            if i == app:
                draw.rectangle((10 + i * 40, y + 27, 30 + i * 40, y + 29), fill=(230, 230, 230))
        return image

    def render(self, state: _State, ts: float) -> Image.Image:
        view = state.view
        image = self.chrome(*view).copy()
        draw = ImageDraw.Draw(image)
        push = state.banner.box[3] if state.banner and state.banner.push else 0
        top = self.top(state.app) + push
        page, scroll = self.pages[view], state.scroll.get(view, 0)
        image.paste(page.image.crop((0, scroll, self.width, scroll + self.window_h - top)), (0, top))
        offset = (0, top - scroll)
        self._draw_errors(draw, state, page, offset)
        self._draw_typing(draw, state, page, offset)
        if state.spinner is not None:
            self._draw_spinner(draw, state.spinner, ts, page.ink)
        if self.busy is not None:
            self.busy.draw(draw, self, state, top)
        if state.banner is not None:
            banner = state.banner
            box = (0, self.top(state.app), self.width, banner.box[3])
            self._draw_box(draw, _Overlay(box, banner.fill, banner.ink, banner.title), title_font=self.font)
        if state.dialog is not None:
            image = self._dim(image, state.dialog.dim) if state.dialog.dim else image
            draw = ImageDraw.Draw(image)
            self._draw_box(draw, state.dialog, buttons=True, shadow=True)
        if state.toast is not None:
            self._draw_box(draw, state.toast, shadow=True)
        draw.text(
            (self.width - 70, self.height - 22), state.clock, fill=(220, 220, 220), font=self.small_font
        )
        if state.tooltip is not None:
            self._draw_box(draw, state.tooltip, title_font=self.small_font)
        if state.cursor is not None:
            self._draw_cursor(draw, state.cursor)
        return image

    def _dim(self, image: Image.Image, share: float) -> Image.Image:
        window = image.crop((0, 0, self.width, self.window_h))
        dark = Image.new("RGB", window.size, (0, 0, 0))
        image.paste(Image.blend(window, dark, share), (0, 0))
        return image

    def _draw_errors(self, draw: ImageDraw.ImageDraw, state: _State, page: _Page, offset: tuple) -> None:
        for tab, index in state.errors:
            if self.apps[state.app] != "browser" or tab != state.tab:
                continue
            f = page.fields[index]
            x, y, w, h = f.box
            y += offset[1]
            color = page.error_color
            draw.rectangle((x, y, x + w, y + h), outline=color, width=2)
            draw.text((x, y + h + 5), f.error, fill=color, font=self.small_font)

    def _draw_typing(self, draw: ImageDraw.ImageDraw, state: _State, page: _Page, offset: tuple) -> None:
        focused = state.focus.get(state.view, 0)
        for index in range(max(1, len(page.fields))):
            x, y = self.typing_origin(page, index)
            y += offset[1]
            typed = state.typed.get((*state.view, index), "")
            if typed:
                draw.text((x, y), typed, fill=page.ink, font=self.font)
            if state.caret and index == focused:
                cx = x + int(self.font.getlength(typed)) + 1
                draw.rectangle((cx, y + 2, cx + 1, y + self.line_h - 3), fill=page.ink)

    def typing_origin(self, page: _Page, index: int) -> tuple[int, int]:
        """Where typed text of a page's target (a form's field `index`) starts, page coordinates."""
        if page.kind == "form":
            box = page.fields[index].box
            return box[0] + 8, box[1] + (box[3] - self.line_h) // 2 + 2
        return page.target

    def _draw_spinner(
        self, draw: ImageDraw.ImageDraw, center: tuple[int, int], ts: float, ink: tuple
    ) -> None:
        cx, cy = center
        phase = ts * 2 * np.pi * 1.3
        for k in range(8):
            angle = phase + k * np.pi / 4
            shade = int(40 + 180 * k / 7)
            x, y = cx + 9 * np.cos(angle), cy + 9 * np.sin(angle)
            color = tuple(int(c * shade / 255 + 128 * (1 - shade / 255)) for c in ink)
            draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=color)

    def _draw_box(
        self,
        draw: ImageDraw.ImageDraw,
        box: _Overlay,
        title_font: ImageFont.FreeTypeFont | None = None,
        buttons: bool = False,
        shadow: bool = False,
    ) -> None:
        x, y, w, h = box.box
        if shadow:  # elevation, as light cards on light pages are drawn
            draw.rectangle((x + 2, y + 3, x + w + 2, y + h + 3), fill=_mix(box.fill, (0, 0, 0), 0.22))
        draw.rectangle((x, y, x + w - 1, y + h - 1), fill=box.fill, outline=_mix(box.fill, box.ink, 0.3))
        font = title_font or self.font
        draw.text((x + 12, y + 8), box.title, fill=box.ink, font=font)
        if box.text:
            draw.text((x + 12, y + 14 + self.line_h), box.text, fill=box.ink, font=self.small_font)
        if buttons:
            for i, label in enumerate(("Cancel", "OK")):
                bx = x + w - 190 + i * 95
                draw.rectangle((bx, y + h - 44, bx + 80, y + h - 14), fill=_mix(box.fill, box.ink, 0.15))
                draw.text((bx + 18, y + h - 36), label, fill=box.ink, font=self.small_font)

    def _draw_cursor(self, draw: ImageDraw.ImageDraw, at: tuple[int, int]) -> None:
        x, y = at
        arrow = [
            (x, y),
            (x, y + 17),
            (x + 4, y + 13),
            (x + 7, y + 19),
            (x + 9, y + 18),
            (x + 6, y + 12),
            (x + 11, y + 12),
        ]
        draw.polygon(arrow, fill=(255, 255, 255), outline=(0, 0, 0))


def _mix(a: tuple, b: tuple, share: float) -> tuple[int, int, int]:
    return tuple(int(x * (1 - share) + y * share) for x, y in zip(a, b, strict=True))


TEXT_WORDS = [
    "account",
    "billing",
    "support",
    "customer",
    "plan",
    "export",
    "settings",
    "notes",
    "team",
    "access",
    "password",
    "payment",
    "the",
    "a",
    "to",
    "and",
    "your",
    "with",
]


Action = Callable[[_State], None]


@dataclass
class _Plan:
    """The planned clip: discrete changes as timed actions, continuous processes, labelled events."""

    screen: _Screen
    spec: EventClipSpec
    actions: list[tuple[float, int, Action]] = field(default_factory=list)
    events: list[ClipEvent] = field(default_factory=list)
    cursor_path: list[tuple[float, float, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    bursts: list[tuple[float, tuple[int, int, int], str, float]] = field(default_factory=list)
    nudges: list[tuple[float, float, tuple[int, int], int]] = field(default_factory=list)
    clock_start: int = 0
    clock_seconds: bool = True

    def add(self, ts: float, action: Action) -> None:
        self.actions.append((ts, len(self.actions), action))
        self.actions.sort(key=lambda a: (a[0], a[1]))

    def discrete_at(self, ts: float) -> _State:
        state = _State()
        for at, _, action in self.actions:
            if at > ts:
                break
            action(state)
        return state

    def state_at(self, ts: float) -> _State:
        state = self.discrete_at(ts)
        state.cursor = self.cursor_at(ts)
        state.typed = self.typed_at(ts)
        state.caret = "caret" in self.spec.distractors and int(ts / 0.53) % 2 == 0
        state.clock = self.clock_at(ts)
        state.scroll[state.view] = self.scroll_at(state.view, state.scroll.get(state.view, 0), ts)
        return state

    def cursor_at(self, ts: float) -> tuple[int, int] | None:
        for t0, t1, p0, p1 in self.cursor_path:
            if t0 <= ts < t1:
                u = (ts - t0) / (t1 - t0) if t1 > t0 else 1.0
                u = u * u * (3 - 2 * u)
                return int(p0[0] + (p1[0] - p0[0]) * u), int(p0[1] + (p1[1] - p0[1]) * u)
        return self.cursor_path[-1][3] if self.cursor_path else None

    def typed_at(self, ts: float) -> dict[tuple[int, int, int], str]:
        typed: dict[tuple[int, int, int], str] = {}
        for t0, target, chars, rate in self.bursts:
            if t0 <= ts:
                typed[target] = typed.get(target, "") + chars[: int((ts - t0) * rate) + 1]
        return typed

    def clock_at(self, ts: float) -> str:
        now = self.clock_start + (int(ts) if "clock" in self.spec.distractors else 0)
        hh, mm, ss = now // 3600 % 24, now // 60 % 60, now % 60
        return f"{hh:02d}:{mm:02d}:{ss:02d}" if self.clock_seconds else f"{hh:02d}:{mm:02d}"

    def scroll_at(self, view: tuple[int, int], base: int, ts: float) -> int:
        offset = base
        for t0, dur, v, dy in self.nudges:
            if v == view and t0 <= ts:
                offset += round(dy * min(1.0, (ts - t0) / dur))
        return int(min(max(offset, 0), self.screen.max_scroll(view)))


class _Planner:
    """Draws a clip's timeline from the seed: significant events at least `min_gap_s` apart (opened
    toasts and dialogs close later), then the distractors around them."""

    WEIGHTS: ClassVar[dict[str, float]] = {
        "toast": 0.2,
        "banner": 0.14,
        "inline_error": 0.14,
        "dialog": 0.1,
        "tab_switch": 0.12,
        "app_switch": 0.1,
        "page_scroll": 0.1,
        "code_scroll": 0.1,
    }

    def __init__(self, screen: _Screen, spec: EventClipSpec, rng: np.random.Generator):
        self.screen, self.spec, self.rng = screen, spec, rng
        self.plan = _Plan(screen, spec)
        self.state = _State()  # the planning state, kept at the latest planned time
        self.pending: list[tuple[float, str]] = []  # (due, kind) of toast and dialog closes
        self.want_app, self.want_tab = -1, -1  # where the next switch should go, when an event needs it
        self.intent: str | None = None  # the event a switch was made for: it comes next
        self._last_choice = ""

    def run(self) -> _Plan:
        self._start()
        limit = self.spec.duration_s - 0.7
        t = float(self.rng.uniform(0.8, 1.6))
        while t < limit:
            self._next_significant(t)
            t += float(self.rng.uniform(self.spec.min_gap_s, max(self.spec.min_gap_s, 2.4)))
        self._distractors()
        return self.plan

    # setup --------------------------------------------------------------------------------------

    def _start(self) -> None:
        rng, screen, kinds = self.rng, self.screen, self.spec.kinds
        app = int(rng.integers(0, len(screen.apps)))
        tab = int(rng.integers(0, screen.tabs(app)))
        switches = {"app_switch", "tab_switch"} & set(kinds)
        if not switches:  # no way to reach the view an event needs: start there
            if {"inline_error"} & set(kinds):
                app, tab = 0, screen.tab_kinds.index("form")
            elif "page_scroll" in kinds:
                app, tab = 0, next(i for i, k in enumerate(screen.tab_kinds) if k != "form")
            elif "code_scroll" in kinds:
                app, tab = 1, 0
        self.plan.clock_start = int(rng.integers(0, 86400))
        self.plan.clock_seconds = bool(rng.random() < 0.5)

        def start(s: _State) -> None:
            s.app, s.tab = app, tab

        self._act(0.0, start)

    def _act(self, ts: float, action: Action) -> None:
        self.plan.add(ts, action)
        action(self.state)

    def _event(self, ts: float, kind: str, detail: str = "", box: Box | None = None) -> None:
        self.plan.events.append(ClipEvent(round(ts, 4), kind, detail, box))

    # significant events -------------------------------------------------------------------------

    def _next_significant(self, t: float) -> None:
        due = sorted(p for p in self.pending if p[0] <= t)
        if due:
            self.pending.remove(due[0])
            {"toast": self._toast_close, "dialog": self._dialog_close}[due[0][1]](t)
            return
        if self.state.dialog is not None:
            return  # nothing else happens while a modal dialog waits for its close
        self.want_app, self.want_tab = -1, -1
        wanted, self.intent = self.intent, None
        kind = self._feasible(wanted) if wanted else self._choose()
        if kind is None:
            return
        if wanted is None and kind != self._last_choice:
            self.intent = self._last_choice  # a switch on the way to the chosen event
        getattr(self, f"_{kind}")(t)

    def _choose(self) -> str | None:
        kinds = [k for k in self.spec.kinds if k in self.WEIGHTS]
        if not kinds:
            return None
        weights = np.array([self.WEIGHTS[k] for k in kinds])
        self._last_choice = str(self.rng.choice(kinds, p=weights / weights.sum()))
        return self._feasible(self._last_choice)

    def _feasible(self, kind: str) -> str | None:
        """The event to do now for `kind`: itself, a switch that leads to where it can happen, or None."""
        s, screen, allowed = self.state, self.screen, set(self.spec.kinds)
        in_browser = screen.apps[s.app] == "browser"
        needs = {
            "toast": (None, s.toast is None),
            "banner": (None, True),
            "dialog": (None, True),
            "app_switch": (None, len(screen.apps) > 1),
            "tab_switch": ("browser", in_browser),
            "inline_error": ("form", in_browser and self._open_field() is not None),
            "page_scroll": ("scrollable", in_browser and screen.max_scroll(s.view) > 0),
            "code_scroll": ("editor", screen.apps[s.app] == "editor"),
        }
        where, ok = needs[kind]
        if ok:
            return kind
        if kind == "toast" or where is None:
            return None
        self.want_app = 1 if where == "editor" else 0
        if where == "editor" or not in_browser:
            return "app_switch" if "app_switch" in allowed else None
        if where == "form" and screen.tab_kinds[s.tab] == "form":
            return None  # every field already shows an error
        wanted = [i for i, k in enumerate(screen.tab_kinds) if (k == "form") == (where == "form")]
        self.want_tab = int(self.rng.choice(wanted))
        return "tab_switch" if "tab_switch" in allowed else None

    def _open_field(self) -> int | None:
        s = self.state
        if self.screen.tab_kinds[s.tab] != "form":
            return None
        fields = self.screen.pages[(0, s.tab)].fields
        free = [i for i in range(len(fields)) if (s.tab, i) not in s.errors]
        return int(self.rng.choice(free)) if free else None

    def _ink_for(self, fill: tuple[int, int, int]) -> tuple[int, int, int]:
        return (20, 20, 20) if sum(fill) > 450 else (250, 250, 250)

    def _toast(self, t: float) -> None:
        rng, screen = self.rng, self.screen
        w = int(min(rng.integers(230, 421), screen.width - 40))
        h, margin = int(rng.integers(48, 85)), int(rng.integers(12, 29))
        corner = str(rng.choice(["br", "tr", "bl", "tl"], p=[0.4, 0.3, 0.15, 0.15]))
        x = screen.width - margin - w if corner[1] == "r" else margin
        y = 70 + margin if corner[0] == "t" else screen.window_h - margin - h
        fill = PALETTE["toast"][int(rng.integers(0, len(PALETTE["toast"])))]
        title, text = TOAST_TEXT[int(rng.integers(0, len(TOAST_TEXT)))]
        toast = _Overlay((x, y, w, h), fill, self._ink_for(fill), title, text)
        self._act(t, lambda s: setattr(s, "toast", toast))
        self._event(t, "toast", "open", toast.box)
        self.pending.append((t + float(rng.uniform(1.2, 4.0)), "toast"))

    def _toast_close(self, t: float) -> None:
        box = self.state.toast.box if self.state.toast else None
        self._act(t, lambda s: setattr(s, "toast", None))
        self._event(t, "toast", "close", box)

    def _banner(self, t: float) -> None:
        rng, screen = self.rng, self.screen
        top = screen.top(self.state.app)
        if self.state.banner is not None:
            box = (0, top, screen.width, self.state.banner.box[3])
            self._act(t, lambda s: setattr(s, "banner", None))
            self._event(t, "banner", "off", box)
            return
        h = int(rng.integers(30, 57))
        fill = PALETTE["banner"][int(rng.integers(0, len(PALETTE["banner"])))]
        text = BANNER_TEXT[int(rng.integers(0, len(BANNER_TEXT)))]
        banner = _Overlay((0, top, screen.width, h), fill, self._ink_for(fill), text, push=rng.random() < 0.5)
        self._act(t, lambda s: setattr(s, "banner", banner))
        self._event(t, "banner", "on" + (" push" if banner.push else ""), banner.box)

    def _inline_error(self, t: float) -> None:
        index = self._open_field()
        tab, screen = self.state.tab, self.screen
        x, y, w, h = screen.pages[(0, tab)].fields[index].box
        push = self.state.banner.box[3] if self.state.banner and self.state.banner.push else 0
        box = (x, y + screen.top(0) + push, w, h + 5 + screen.line_h)

        def show(s: _State) -> None:
            s.errors = s.errors | {(tab, index)}

        self._act(t, show)
        self._event(t, "inline_error", f"field {index}", box)

    def _dialog(self, t: float) -> None:
        rng, screen = self.rng, self.screen
        w = int(min(rng.integers(340, 621), screen.width * 0.9))
        h = int(min(rng.integers(180, 361), screen.window_h * 0.8))
        x, y = (screen.width - w) // 2, (screen.window_h - h) // 2
        fill = (250, 250, 250) if rng.random() < 0.7 else (45, 48, 56)
        title, text = DIALOG_TEXT[int(rng.integers(0, len(DIALOG_TEXT)))]
        dim = float(rng.uniform(0.25, 0.6)) if rng.random() < 0.7 else 0.0
        dialog = _Overlay((x, y, w, h), fill, self._ink_for(fill), title, text, dim=dim)
        self._act(t, lambda s: setattr(s, "dialog", dialog))
        self._event(t, "dialog", "open" + (" dimmed" if dim else ""), dialog.box)
        self.pending.append((t + float(rng.uniform(0.8, 2.5)), "dialog"))

    def _dialog_close(self, t: float) -> None:
        box = self.state.dialog.box if self.state.dialog else None
        self._act(t, lambda s: setattr(s, "dialog", None))
        self._event(t, "dialog", "close", box)

    def _window_box(self) -> Box:
        return (0, 0, self.screen.width, self.screen.window_h)

    def _tab_switch(self, t: float) -> None:
        tabs = [i for i in range(self.screen.tabs(0)) if i != self.state.tab]
        tab = self.want_tab if self.want_tab in tabs else int(self.rng.choice(tabs))
        self._act(t, lambda s: setattr(s, "tab", tab))
        self._event(t, "tab_switch", f"to tab {tab}", self._window_box())

    def _app_switch(self, t: float) -> None:
        apps = [i for i in range(len(self.screen.apps)) if i != self.state.app]
        app = self.want_app if self.want_app in apps else int(self.rng.choice(apps))
        self._act(t, lambda s: setattr(s, "app", app))
        self._event(t, "app_switch", f"to {self.screen.apps[app]}", self._window_box())

    def _scroll_screenful(self, t: float, kind: str) -> None:
        view, screen = self.state.view, self.screen
        base = self.state.scroll.get(view, 0)
        step = int(screen.viewport_h(view[0]) * self.rng.uniform(0.85, 1.0))
        target = base + step if base + step <= screen.max_scroll(view) else max(0, base - step)

        def scroll(s: _State) -> None:
            s.scroll[view] = target

        self._act(t, scroll)
        top = screen.top(view[0])
        self._event(t, kind, "down" if target > base else "up", (0, top, screen.width, screen.window_h - top))

    def _page_scroll(self, t: float) -> None:
        self._scroll_screenful(t, "page_scroll")

    def _code_scroll(self, t: float) -> None:
        self._scroll_screenful(t, "code_scroll")

    # distractors --------------------------------------------------------------------------------

    def _distractors(self) -> None:
        kinds = set(self.spec.distractors)
        if kinds & {"cursor", "tooltip"}:
            self._cursor_and_tooltips(moving="cursor" in kinds, tooltips="tooltip" in kinds)
        if "typing" in kinds:
            self._typing()
        if "spinner" in kinds:
            self._spinners()
        if "smooth_scroll" in kinds:
            self._nudges()
        if self.spec.busy:
            plan_growth(self)
        if "clock" in kinds:
            step = 1 if self.plan.clock_seconds else 60
            first = step - self.plan.clock_start % step
            box = (self.screen.width - 70, self.screen.height - 24, 64, 18)
            for second in range(first, int(self.spec.duration_s) + 1, step):
                self._event(float(second), "clock", self.plan.clock_at(second), box)
        if "caret" in kinds:
            for n in range(1, int(self.spec.duration_s / 0.53) + 1):
                self._event(n * 0.53, "caret", "on" if n % 2 == 0 else "off")

    def _random_point(self) -> tuple[int, int]:
        return (
            int(self.rng.integers(20, self.screen.width - 30)),
            int(self.rng.integers(40, self.screen.window_h - 30)),
        )

    def _cursor_and_tooltips(self, moving: bool, tooltips: bool) -> None:
        rng, t, pos = self.rng, 0.0, self._random_point()
        path = []
        while t < self.spec.duration_s:
            rest = float(rng.uniform(0.2, 1.8))
            path.append((t, t + rest, pos, pos))
            if tooltips and rest >= 0.9 and rng.random() < 0.5:
                self._tooltip(t + float(rng.uniform(0.3, 0.6)), t + rest, pos)
            t += rest
            if moving:
                target, move = self._random_point(), float(rng.uniform(0.25, 1.0))
                path.append((t, t + move, pos, target))
                self._event(t, "cursor", f"to {target}")
                t, pos = t + move, target
            else:
                pos = self._random_point()
        self.plan.cursor_path = path if moving else []

    def _tooltip(self, shown: float, hidden: float, at: tuple[int, int]) -> None:
        rng, screen = self.rng, self.screen
        w, h = int(rng.integers(100, 191)), int(rng.integers(22, 35))
        x = min(at[0] + int(rng.integers(8, 17)), screen.width - w - 2)
        y = min(at[1] + int(rng.integers(18, 27)), screen.window_h - h - 2)
        fill = PALETTE["tooltip"][int(rng.integers(0, len(PALETTE["tooltip"])))]
        tip = _Overlay((x, y, w, h), fill, self._ink_for(fill), TOOLTIP_TEXT[int(rng.integers(0, 7))])
        self.plan.add(shown, lambda s: setattr(s, "tooltip", tip))
        self.plan.add(hidden, lambda s: setattr(s, "tooltip", None))
        self._event(shown, "tooltip", "open", tip.box)
        self._event(hidden, "tooltip", "close", tip.box)

    def _typing(self) -> None:
        rng, screen = self.rng, self.screen
        t = float(rng.uniform(0.5, 3.0))
        while t < self.spec.duration_s:
            state = self.plan.discrete_at(t)
            page = screen.pages[state.view]
            n, rate = int(rng.integers(3, 10)), float(rng.uniform(6.0, 12.0))
            if state.dialog is None:
                index = int(rng.integers(0, len(page.fields))) if page.fields else 0
                if page.fields:
                    view = state.view
                    self.plan.add(t, lambda s, v=view, i=index: s.focus.__setitem__(v, i))
                chars = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz     "), size=n))
                self.plan.bursts.append((t, (*state.view, index), chars, rate))
                x, y = screen.typing_origin(page, index)
                self._event(t, "typing", chars, (x, y, int(screen.font.getlength(chars)) + 4, screen.line_h))
            t += n / rate + float(rng.uniform(1.5, 5.0))

    def _spinners(self) -> None:
        rng, screen = self.rng, self.screen
        t = float(rng.uniform(1.0, 5.0))
        while t < self.spec.duration_s:
            span = float(rng.uniform(1.0, 3.0))
            x = int(rng.integers(40, screen.width - 60))
            y = int(rng.integers(100, screen.window_h - 40))
            self.plan.add(t, lambda s, c=(x, y): setattr(s, "spinner", c))
            self.plan.add(t + span, lambda s: setattr(s, "spinner", None))
            self._event(t, "spinner", "on", (x - 12, y - 12, 24, 24))
            self._event(t + span, "spinner", "off", (x - 12, y - 12, 24, 24))
            t += span + float(rng.uniform(3.0, 9.0))

    def _nudges(self) -> None:
        rng, screen = self.rng, self.screen
        t = float(rng.uniform(2.0, 5.0))
        while t < self.spec.duration_s:
            state = self.plan.discrete_at(t)
            if state.dialog is None and screen.max_scroll(state.view) > 0:
                dy = int(rng.integers(2, 7)) * (1 if rng.random() < 0.5 else -1)
                self.plan.nudges.append((t, float(rng.uniform(0.1, 0.3)), state.view, dy))
                self._event(t, "smooth_scroll", f"{dy:+d} px")
            t += float(rng.uniform(2.5, 7.0))
