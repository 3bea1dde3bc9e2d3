"""Text that grows line by line (a terminal's log, a chat sidebar, a pasted phrase) is not sent by the
region signal on busy generated desktops, while each event kind still is (toasts, banners, inline
errors, dialogs, tab and app switches); drawn scenes (three log lines at once, a two-line chat message,
toasts three lines tall, a red two-line error) through both detectors; the test on hand-made thumbnails."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from serve_app.frames import region as region_module
from serve_app.frames.growth import GrowthShape, text_growth
from serve_app.frames.region import RegionPolicy
from serve_app.frames.sampler import FrameSampler, Reason, SamplingPolicy
from serve_app.tenancy import parse_stream_id
from supportgraph_tools.frames.busy import GROWTH
from supportgraph_tools.frames.synthetic import EventClip, EventClipSpec, jpeg_rgb

STREAM = parse_stream_id("tenant_t_growth.screen")


def _sampler(**region: object) -> FrameSampler:
    return FrameSampler(STREAM, SamplingPolicy(region=RegionPolicy(**region)))


def _pair(clip: EventClip, ts: float, **region: object):
    """The decision on the frame just after `ts`, against the frame just before it."""
    s = _sampler(**region)
    s.offer(clip.rgb(ts - 0.04), is_speaking=True, ts=ts - 0.04)
    return s.offer(clip.rgb(ts + 0.04), is_speaking=True, ts=ts + 0.04)


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (640, 480)])
def test_growing_text_is_not_sent_and_without_the_test_some_of_it_would_be(width: int, height: int) -> None:
    sent, unfiltered, seen = 0, 0, 0
    for seed in (21, 22, 23):
        clip = EventClip(EventClipSpec(seed=seed, width=width, height=height, duration_s=20, busy=True))
        lone = [
            e
            for e in clip.events
            if e.kind in GROWTH and not any(abs(o.ts - e.ts) < 0.6 for o in clip.events if o.significant)
        ]
        for event in lone[:8]:
            seen += 1
            sent += _pair(clip, event.ts).reason is Reason.REGION
            unfiltered += _pair(clip, event.ts, growth_max_h=0).reason is Reason.REGION
    assert seen >= 6 and sent == 0 and unfiltered >= 1, (seen, sent, unfiltered)


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (640, 480)])
def test_every_event_kind_is_still_sent_on_a_busy_desktop(width: int, height: int) -> None:
    kinds = ("toast", "banner", "inline_error", "dialog", "tab_switch", "app_switch")
    hit: dict[str, int] = dict.fromkeys(kinds, 0)
    for seed in (31, 32, 33, 34):
        clip = EventClip(EventClipSpec(seed=seed, width=width, height=height, duration_s=20, busy=True))
        for event in [e for e in clip.events if e.kind in kinds]:
            decision = _pair(clip, event.ts)
            assert decision.send, (seed, event, decision)
            hit[event.kind] += 1
    assert all(hit.values()), hit


WIDTH, HEIGHT, LINE_H = 1280, 720, 20
FONT = ImageFont.load_default(size=13)
LOG = [
    "GET /api/tickets 200",
    "worker heartbeat ok",
    "cache hit ratio 0.93 (warm)",
    "queue depth 12",
    "POST /api/orders 201 in 38 ms",
    "sync batch 418 committed",
    "replica 2 ready, retrying in 500ms",
]
PAGE, DARK, INK = (246, 246, 248), (28, 30, 34), (200, 200, 204)


def _terminal(lines: int) -> Image.Image:
    """A dark terminal with `lines` log lines from the top."""
    image = Image.new("RGB", (WIDTH, HEIGHT), DARK)
    draw = ImageDraw.Draw(image)
    for n in range(lines):
        line = f"12:04:{n:02d} {LOG[n % len(LOG)]} {LOG[(3 * n + 1) % len(LOG)]}"
        draw.text((8, 30 + n * LINE_H), line, fill=INK, font=FONT)
    return image


def _page() -> Image.Image:
    """A light page with a paragraph at the top and a chat sidebar (300 px) holding two messages."""
    image = Image.new("RGB", (WIDTH, HEIGHT), PAGE)
    draw = ImageDraw.Draw(image)
    for n in range(4):
        draw.text(
            (40, 80 + n * LINE_H), "Invoices are exported nightly to the billing bucket " * 2, fill=(40,) * 3
        )
    draw.rectangle((WIDTH - 300, 60, WIDTH, HEIGHT), fill=(236, 238, 242))
    for n in range(2):
        _chat(draw, n)
    return image


def _chat(draw: ImageDraw.ImageDraw, n: int) -> None:
    """Message `n` of the sidebar: a name line and the text, wrapped on two lines."""
    y = 100 + n * 70
    for k, line in enumerate(
        ("Farah", "ticket 4821 is waiting on the customer, ok", "I will ping them again after lunch today")
    ):
        draw.text((WIDTH - 290, y + k * LINE_H), line, fill=(50,) * 3, font=FONT)


def _toast(image: Image.Image, fill: tuple[int, int, int], ink: tuple[int, int, int]) -> Image.Image:
    """A toast three text lines tall (70 px) at the bottom right, with its border and shadow."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    x, y, w, h = WIDTH - 380, HEIGHT - 120, 340, 70
    draw.rectangle((x + 2, y + 3, x + w + 2, y + h + 3), fill=tuple(int(c * 0.78) for c in fill))
    border = tuple(int(a * 0.7 + b * 0.3) for a, b in zip(fill, ink, strict=True))
    draw.rectangle((x, y, x + w - 1, y + h - 1), fill=fill, outline=border)
    draw.text((x + 12, y + 8), "Sync failed", fill=ink, font=FONT)
    draw.text((x + 12, y + 14 + LINE_H), "Error 0x80070005: access denied", fill=ink, font=FONT)
    return out


def _scenes() -> dict[str, tuple[Image.Image, Image.Image, bool]]:
    """name: (before, after, whether the change must be sent)."""
    page = _page()
    chat = page.copy()
    _chat(ImageDraw.Draw(chat), 2)
    error = page.copy()
    draw = ImageDraw.Draw(error)
    for n, line in enumerate(
        ("Card number is not valid: it must have 16 digits,", "and the expiry date lies ahead")
    ):
        draw.text((40, 400 + n * LINE_H), line, fill=(220, 38, 38), font=FONT)
    return {
        "three log lines at once": (_terminal(6), _terminal(9), False),
        "four log lines at once": (_terminal(6), _terminal(10), False),
        "a chat message of three lines": (page, chat, False),
        "a white toast three lines tall": (page, _toast(page, (250, 250, 250), (20, 20, 20)), True),
        "a dark toast three lines tall": (page, _toast(page, (45, 52, 64), (250, 250, 250)), True),
        "a toast on the terminal": (_terminal(6), _toast(_terminal(6), (250, 250, 250), (20, 20, 20)), True),
        "a red two-line error": (page, error, True),
    }


@pytest.fixture(params=[True, False], ids=["native", "numpy"])
def detector(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param and not region_module.native_detector():
        pytest.skip("the C detector is not built")
    monkeypatch.setattr(region_module, "native_detector", lambda: request.param)


@pytest.mark.parametrize("scene", list(_scenes()))
def test_lines_of_text_are_not_sent_and_toasts_and_errors_are(scene: str, detector: None) -> None:
    """Region alone decides (pHash never fires): several lines of grey text added where the page was
    blank are dropped; a toast (white with a border, or filled) or red error lines are sent. With the
    growth test off every one of these is a region change."""
    before, after, significant = _scenes()[scene]

    def decision(**region: object):
        s = FrameSampler(STREAM, SamplingPolicy(hamming_threshold=64, region=RegionPolicy(**region)))
        s.offer(jpeg_rgb(before, 60), is_speaking=True, ts=0.0)
        return s.offer(jpeg_rgb(after, 60), is_speaking=True, ts=0.1)

    assert decision(growth_max_h=0).reason is Reason.REGION, scene
    assert decision().send is significant, (scene, decision())


def _thumb(background: float, rows: int = 30, cols: int = 40) -> np.ndarray:
    out = np.zeros((2, rows, cols), np.float32)
    out[0] = background
    return out


def test_the_growth_test_reads_size_background_colour_lines_and_rules() -> None:
    reference = _thumb(240).astype(np.uint8)
    line = _thumb(240)
    line[0, 10:17, 2:30:2] = 150  # a grey text line on the page (words and gaps)
    line[0, 10:17, 3:30:4] = 170
    box, shape = (32, 18, 448, 20), GrowthShape()
    assert text_growth(line, reference, box, 16, shape)
    assert not text_growth(line, reference, (32, 18, 448, 130), 16, shape)  # taller than a few lines
    assert not text_growth(line, reference, box, 16, GrowthShape(max_height=0))  # the test off
    filled = _thumb(240)
    filled[0, 8:19, 2:30] = 90  # a banner's fill: the dominant level changed
    assert not text_growth(filled, reference, box, 16, shape)
    red = line.copy()
    red[1, 10:17, 2:30:2] = 60  # a red error line: colour added
    assert not text_growth(red, reference, box, 16, shape)
    busy = _thumb(240)
    busy[0, ::2] = 120  # text over text (a page scrolled): the page was not blank there
    assert not text_growth(line, busy.astype(np.uint8), box, 16, shape)
    tall = _thumb(240)
    tall[0, 10:24, 2:30:2] = 150  # ink 28 px tall without a gap: not a line of text
    assert not text_growth(tall, reference, (32, 18, 448, 40), 16, shape)
    bordered = line.copy()
    bordered[0, 9, 2:30] = 200  # a border above it: a run of even cells
    assert not text_growth(bordered, reference, box, 16, shape)
    assert text_growth(bordered, reference, box, 16, GrowthShape(rule_w=480))  # wider than the run
