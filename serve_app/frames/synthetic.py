"""A generated screen-share clip: an editor and a browser tab with typing, a blinking and moving cursor,
scrolling, tab switches and JPEG noise, with the user speaking in some stretches.

Deterministic for a seed. Used by the demo, the benchmark and the tests; never real user content.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

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
class ClipSpec:
    seed: int = 0
    width: int = 1280
    height: int = 720
    fps: float = 30.0
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
