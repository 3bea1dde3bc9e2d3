"""The region change signal: fires on every significant kind of generated event and on none of the
distractors (several seeds, both resolutions), says where, survives scrolls of a few pixels, ignores
slow pile-ups, and reaches the decisions, counters and live settings."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pydantic import ValidationError

from serve_app.frames.region import RegionPolicy, Thumb
from serve_app.frames.sampler import Decision, FrameSampler, Reason, SamplingPolicy, Verdict
from serve_app.frames.service import DedupService
from serve_app.settings import DedupSettings
from serve_app.tenancy import parse_stream_id
from supportgraph_tools.frames.synthetic import DISTRACTORS, SIGNIFICANT, EventClip, EventClipSpec
from tests import images

RESOLUTIONS = [(1280, 720), (640, 480)]
STREAM = parse_stream_id("tenant_t_region.screen")
LOCAL = {"toast", "banner", "inline_error", "dialog"}


def sampler(hamming_threshold: int = 10, **region: object) -> FrameSampler:
    policy = SamplingPolicy(hamming_threshold=hamming_threshold, region=RegionPolicy(**region))
    return FrameSampler(STREAM, policy)


def decide(s: FrameSampler, frame: np.ndarray, ts: float) -> Decision:
    """The gates after throttling, as the service runs them: pHash and region thumbnail, one pass."""
    return s.offer(frame, is_speaking=True, ts=ts)


@pytest.mark.parametrize("kind", SIGNIFICANT)
@pytest.mark.parametrize(("width", "height"), RESOLUTIONS)
def test_every_significant_kind_fires_the_region_signal(kind: str, width: int, height: int) -> None:
    """Each event of the kind (toasts open and close, banners on and off, ...), seen against the frame
    before it, is a region change whose box covers the event, whatever pHash says."""
    seen = 0
    for seed in (1, 2):
        spec = EventClipSpec(
            seed=seed, width=width, height=height, duration_s=9, kinds=(kind,), distractors=()
        )
        clip = EventClip(spec)
        for event in [e for e in clip.events if e.kind == kind][:3]:
            s = sampler()
            assert decide(s, clip.rgb(event.ts - 0.1), event.ts - 0.1).reason is Reason.FIRST
            after = decide(s, clip.rgb(event.ts + 0.05), event.ts + 0.05)
            assert after.send and after.region is not None, (seed, event)
            if kind in LOCAL:
                x, y, w, h = after.region.box
                ex, ey, ew, eh = event.box
                assert x <= ex + ew / 2 <= x + w and y <= ey + eh / 2 <= y + h, (seed, event, after.box)
            seen += 1
    assert seen >= 2


def clips_with(kind: str, width: int, height: int, n: int = 2) -> list[EventClip]:
    """The first `n` 7 s clips (seeds from 3) with only this distractor where it happens (a clock
    without seconds changes once a minute)."""
    clips = []
    for seed in range(3, 40):
        spec = EventClipSpec(
            seed=seed, width=width, height=height, duration_s=7, kinds=(), distractors=(kind,)
        )
        clip = EventClip(spec)
        if any(e.kind == kind for e in clip.events):
            clips.append(clip)
        if len(clips) == n:
            return clips
    raise AssertionError(f"no clip shows {kind}")


@pytest.mark.parametrize("kind", DISTRACTORS)
@pytest.mark.parametrize(("width", "height"), RESOLUTIONS)
def test_no_distractor_fires_the_region_signal(kind: str, width: int, height: int) -> None:
    """A clip with only this distractor going on, sampled at 6 fps: the region signal never fires
    (pHash alone may: a tooltip over a blank page moves it)."""
    for clip in clips_with(kind, width, height):
        s = sampler()
        fired = [decide(s, clip.rgb(t / 6), t / 6) for t in range(42)]
        assert [d.box for d in fired if d.region is not None and d.reason is not Reason.FIRST] == [], (
            clip.spec
        )


def test_a_scroll_of_a_few_pixels_is_compensated() -> None:
    page = np.full((480, 640, 3), 250, np.uint8)
    for y in range(4, 480, 18):  # lines of text-like strokes, 9 px tall
        page[y : y + 9, 20:600] = 20
        page[y : y + 9, 20:600:3] = 250
    frame = np.full((560, 640, 3), 250, np.uint8)
    frame[:40], frame[520:] = 60, 30  # a title bar and a taskbar that stay
    for shift in (2, 3, 5, 6, 8, 10, 12):
        # without compensation the shifted lines differ (from 6 px on, for lines of this pitch)
        for max_shift, fires in ((12, False), (0, shift >= 6)):
            s = sampler(hamming_threshold=64, max_shift=max_shift)
            before, after = frame.copy(), frame.copy()
            before[40:520] = page
            after[40 : 520 - shift] = page[shift:]  # content moves up, new rows at the bottom
            after[520 - shift : 520] = page[:shift]
            decide(s, before, 0.0)
            assert (decide(s, after, 0.2).region is not None) is fires, (shift, max_shift)


def test_changes_that_pile_up_slowly_never_make_a_region() -> None:
    """A line that grows 6 px a frame becomes 600 px wide, more than a region, but only its last few
    tiles are fresh: never sent. Without the freshness window it would be. (pHash, which a line on a
    blank page moves a lot, is held off; so is the text-growth test, tests/test_region_growth.py, which
    would also take it for text growing.)"""
    frame = np.full((360, 640, 3), 245, np.uint8)
    for window_s, sent in ((0.5, False), (60.0, True)):
        s = sampler(hamming_threshold=64, window_s=window_s, growth_max_h=0)
        decisions = []
        for n in range(100):
            typed = frame.copy()
            typed[200:212, 20 : 20 + 6 * n : 2] = 20  # glyph-like strokes
            decisions.append(decide(s, typed, n / 10))
        assert any(d.reason is Reason.REGION for d in decisions) is sent, window_s


def test_a_tooltip_sized_box_is_not_a_region_and_an_error_line_is() -> None:
    frame = np.full((480, 640, 3), 248, np.uint8)
    tooltip, error = frame.copy(), frame.copy()
    tooltip[300:330, 200:350] = (40, 40, 44)  # 150x30 dark box
    error[300:314, 40:340:2] = (220, 38, 38)  # a 300 px red line of strokes
    for after, expected in ((tooltip, None), (error, Reason.REGION)):
        s = sampler(hamming_threshold=64)  # pHash moves a lot on a blank page: held off
        decide(s, frame, 0.0)
        d = decide(s, after, 0.2)
        assert (d.reason if d.region else None) is expected
    s = sampler(hamming_threshold=64)
    decide(s, frame, 0.0)
    box = decide(s, error, 0.2).region.box
    assert box[0] <= 40 and box[0] + box[2] >= 340 and box[1] <= 300 and box[1] + box[3] >= 314


def test_a_grey_border_turning_red_at_the_same_brightness_is_seen() -> None:
    """Colourfulness carries what luma cannot: a field border turning a red as bright as the grey."""
    frame = np.full((480, 640, 3), 30, np.uint8)
    grey, red = (152, 152, 152), (248, 113, 113)  # L 152 and 152
    field = frame.copy()
    field[100:136, 40:360] = grey
    field[102:134, 42:358] = 30
    error = field.copy()
    error[100:136, 40:360] = red
    error[102:134, 42:358] = 30
    s = sampler(hamming_threshold=64)
    decide(s, field, 0.0)
    assert decide(s, error, 0.2).reason is Reason.REGION


def test_a_new_frame_size_is_a_change_of_the_whole_frame() -> None:
    s = sampler()
    decide(s, images.text(240, 320, 1), 0.0)
    d = decide(s, images.text(480, 640, 1), 0.2)
    assert d.send and d.box == [0, 0, 640, 480]


def test_decisions_say_why_and_counters_count_per_reason() -> None:
    service = DedupService(DedupSettings(hamming_threshold=64))  # pHash held off on this blank frame
    frame = np.full((480, 640, 3), 248, np.uint8)
    toast = frame.copy()
    toast[400:460, 320:620] = (34, 139, 84)
    sid = "tenant_acme_r.screen"
    got = [
        asyncio.run(service.offer(sid, f, True, i / 30)).to_dict()
        for i, f in enumerate([frame, frame, toast])
    ]
    assert [(d["verdict"], d["reason"]) for d in got] == [
        ("processed", "first"),
        ("duplicate", "duplicate"),
        ("processed", "region"),
    ]
    assert got[0]["box"] is None and got[1]["box"] is None
    x, y, w, h = got[2]["box"]
    assert x <= 320 and x + w >= 620 and y <= 400 and y + h >= 460
    assert service.stats(sid)["stream"]["reasons"] == {
        "first": 1,
        "phash": 0,
        "region": 1,
        "throttled": 0,
        "duplicate": 1,
    }


def test_region_settings_apply_live_and_bad_ones_change_nothing() -> None:
    service = DedupService(DedupSettings(hamming_threshold=64))
    sid = "tenant_acme_live.screen"
    frame = np.full((480, 640, 3), 248, np.uint8)
    toast = frame.copy()
    toast[400:460, 320:620] = (34, 139, 84)
    asyncio.run(service.offer(sid, frame, True, 0.0))
    service.reconfigure({"region_enabled": False})
    assert asyncio.run(service.offer(sid, toast, True, 0.1)).reason is Reason.DUPLICATE
    service.reconfigure({"region_enabled": True, "region_min_width": 320, "region_min_area": 40000})
    asyncio.run(service.offer(sid, frame, True, 0.2))  # a fresh region reference, no send
    assert asyncio.run(service.offer(sid, toast, True, 0.3)).reason is Reason.DUPLICATE  # 304x88: too small
    service.reconfigure({"region_min_width": 240, "region_min_area": 32000})
    assert asyncio.run(service.offer(sid, toast, True, 0.4)).reason is Reason.REGION  # big enough again
    for bad in ({"region_tile": 15}, {"region_threshold": 0}, {"region_window_s": -1}):
        with pytest.raises(ValidationError):
            service.reconfigure(bad)
    assert service.policy.region.tile == 16 and service.policy.region.min_width == 240


def test_turning_the_region_signal_off_gives_the_phash_decisions() -> None:
    """With the region signal off, verdicts are pHash's alone: the toast is a duplicate (pHash held off
    at 64 bits), and no region state is kept."""
    s = FrameSampler(STREAM, SamplingPolicy(hamming_threshold=64, region=RegionPolicy(enabled=False)))
    frame = np.full((480, 640, 3), 248, np.uint8)
    toast = frame.copy()
    toast[400:460, 320:620] = (34, 139, 84)
    assert [decide(s, f, t).verdict for f, t in [(frame, 0.0), (toast, 0.1)]] == [
        Verdict.PROCESSED,
        Verdict.DUPLICATE,
    ]
    assert s.region is None


def test_thumb_counts_cover_the_frame_exactly() -> None:
    thumb = Thumb(np.zeros((2, 3, 3), np.int32), height=5, width=40, tile=16)
    np.testing.assert_array_equal(thumb.counts, [[32, 32, 16], [32, 32, 16], [16, 16, 8]])
    assert thumb.counts.sum() == 5 * 40
