"""The labelled-event clip generator: deterministic per seed, every kind across a few seeds at both
resolutions, events where they are drawn, frames as a receiver decodes them."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from supportgraph_tools.frames.synthetic import DISTRACTORS, SIGNIFICANT, EventClip, EventClipSpec


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (640, 480)])
def test_a_few_seeds_cover_every_kind_spaced_and_inside_the_clip(width: int, height: int) -> None:
    kinds: Counter[str] = Counter()
    for seed in range(4):
        clip = EventClip(EventClipSpec(seed=seed, width=width, height=height))
        significant = [e for e in clip.events if e.significant]
        assert 12 <= len(significant) <= 30
        times = [e.ts for e in significant]
        assert min(np.diff(times)) >= clip.spec.min_gap_s - 1e-6
        assert times[0] > 0.5 and times[-1] < clip.spec.duration_s - 0.5
        assert 50 <= clip.quality <= 80
        for e in clip.events:
            if e.box is not None:
                x, y, w, h = e.box
                assert x >= 0 and y >= 0 and x + w <= width and y + h <= height, e
        kinds.update(e.kind for e in clip.events)
    assert set(SIGNIFICANT) | set(DISTRACTORS) <= set(kinds), kinds


def test_the_same_seed_gives_the_same_clip_and_another_seed_another() -> None:
    a, b = (EventClip(EventClipSpec(seed=5, width=640, height=480, duration_s=6)) for _ in range(2))
    c = EventClip(EventClipSpec(seed=6, width=640, height=480, duration_s=6))
    assert a.events == b.events and a.times() == b.times()
    np.testing.assert_array_equal(a.rgb(3.0), b.rgb(3.0))
    assert a.events != c.events


def test_a_toast_is_drawn_in_its_box_and_gone_after_it_closes() -> None:
    clip = EventClip(
        EventClipSpec(seed=2, width=1280, height=720, duration_s=10, kinds=("toast",), distractors=())
    )
    opened = next(e for e in clip.events if e.detail == "open")
    closed = next(e for e in clip.events if e.detail == "close")
    x, y, w, h = opened.box
    before, during, after = (
        np.asarray(clip.image(t)) for t in (opened.ts - 0.1, opened.ts + 0.1, closed.ts + 0.1)
    )
    inside = (slice(y, y + h), slice(x, x + w))
    assert np.abs(during[inside].astype(int) - before[inside]).mean() > 10
    np.testing.assert_array_equal(after, before)  # nothing else moves in this clip


def test_frames_decode_to_rgb_with_the_speech_timeline() -> None:
    clip = EventClip(EventClipSpec(seed=1, width=640, height=480, duration_s=4))
    frame = clip.frame(45)
    assert frame.rgb.shape == (480, 640, 3) and frame.ts == pytest.approx(1.5)
    assert (frame.ts, frame.is_speaking) == clip.times()[45]
    assert 0.2 < np.mean([s for _, s in EventClip(EventClipSpec(seed=1, duration_s=30)).times()]) < 0.8
