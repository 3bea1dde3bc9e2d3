"""Text that grows line by line (a terminal's log, a chat sidebar, a pasted phrase) is not sent by the
region signal on busy generated desktops, while each event kind still is (toasts, banners, inline
errors, dialogs, tab and app switches); the test itself on hand-made thumbnails."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.frames.growth import text_growth
from serve_app.frames.region import RegionPolicy
from serve_app.frames.sampler import FrameSampler, Reason, SamplingPolicy
from serve_app.tenancy import parse_stream_id
from supportgraph_tools.frames.busy import GROWTH
from supportgraph_tools.frames.synthetic import EventClip, EventClipSpec

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
            if e.kind in GROWTH
            and e.detail != "+3"  # three lines at once are taller than two text lines: sent
            and not any(abs(o.ts - e.ts) < 0.6 for o in clip.events if o.significant)
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


def _thumb(background: float, rows: int = 30, cols: int = 40) -> np.ndarray:
    out = np.zeros((2, rows, cols), np.float32)
    out[0] = background
    return out


def test_the_growth_test_reads_shape_background_and_colour() -> None:
    reference = _thumb(240).astype(np.uint8)
    line = _thumb(240)
    line[0, 10:17, 2:30:2] = 150  # a grey text line on the page (words and gaps)
    box = (32, 18, 448, 20)
    assert text_growth(line, reference, box, 16, 60, 22.0)
    assert not text_growth(line, reference, (32, 18, 448, 80), 16, 60, 22.0)  # taller: a toast's size
    assert not text_growth(line, reference, box, 16, 0, 22.0)  # the test off
    filled = _thumb(240)
    filled[0, 8:19, 2:30] = 90  # a banner's fill: the dominant level changed
    assert not text_growth(filled, reference, box, 16, 60, 22.0)
    red = line.copy()
    red[1, 10:17, 2:30:2] = 60  # a red error line: colour added
    assert not text_growth(red, reference, box, 16, 60, 22.0)
    busy = _thumb(240)
    busy[0, ::2] = 120  # text over text (a page scrolled): the page was not blank there
    assert not text_growth(line, busy.astype(np.uint8), box, 16, 60, 22.0)
