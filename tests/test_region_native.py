"""The C region detector (`_phash_native.region_observe`) against its numpy definition
(`RegionDetector.observe_numpy`): the same change, box, window count and scroll, and the same state
(reference, previous tile means, freshness times) after every frame, on generated clips of both
resolutions and many seeds, on scrolls with a change left over (whole and half shifts), and under other
thresholds, tile sizes and shift limits."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from serve_app.frames import sampler as sampler_module
from serve_app.frames.phash import signals_batch
from serve_app.frames.region import RegionDetector, RegionPolicy, RegionState, Thumb, native_detector
from serve_app.frames.sampler import FrameSampler, SamplingPolicy
from serve_app.tenancy import parse_stream_id
from supportgraph_tools.frames.synthetic import EventClip, EventClipSpec

pytestmark = pytest.mark.skipif(not native_detector(), reason="the native extension is not built")
RESOLUTIONS = [(1280, 720), (640, 480)]


def thumbs_of(frames: np.ndarray, policy: RegionPolicy) -> list[Thumb]:
    cells = signals_batch(frames, cell=policy.cell).cells
    return [Thumb(c, frames.shape[1], frames.shape[2], policy.tile) for c in cells]


def lockstep(thumbs: list[Thumb], stamps: list[float], policy: RegionPolicy, commit_every: int = 3) -> int:
    """Both detectors over the same frames from one starting state; every result and every state array
    must be equal. A frame is committed (becomes the reference) when a region fired or every
    `commit_every` frames. Returns how many frames had a region."""
    native, numpy_ = RegionDetector(policy, native=True), RegionDetector(policy, native=False)
    a = RegionState.start(thumbs[0], stamps[0])
    b = copy.deepcopy(a)
    fired = 0
    for n, (thumb, ts) in enumerate(zip(thumbs[1:], stamps[1:], strict=True), start=1):
        got, want = native.observe(a, thumb, ts), numpy_.observe_numpy(b, thumb, ts)
        assert got == want, (n, got, want)
        for name in ("pending", "previous", "changed_at", "reference"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (n, name)
        fired += want is not None
        if want is not None or n % commit_every == 0:
            a.commit()
            b.commit()
    return fired


@pytest.mark.parametrize(("width", "height"), RESOLUTIONS)
def test_native_detector_matches_numpy_on_generated_clips(width: int, height: int) -> None:
    fired = 0
    for seed in range(6):
        clip = EventClip(EventClipSpec(seed=seed, width=width, height=height, duration_s=10))
        stamps = [i / 6 for i in range(54)]
        frames = np.stack([clip.rgb(t) for t in stamps])
        fired += lockstep(thumbs_of(frames, RegionPolicy()), stamps, RegionPolicy())
    assert fired >= 12  # the clips' events do reach the comparison


@pytest.mark.parametrize(
    "policy",
    [
        RegionPolicy(threshold=7.3, tile=12, max_shift=9, min_width=200),
        RegionPolicy(threshold=5.5, tile=4, max_shift=3, window_s=0.2, min_area=9000),
        RegionPolicy(threshold=11.0, tile=64, max_shift=30, min_width=120),
        RegionPolicy(threshold=8.0, tile=22, max_shift=0),
    ],
)
def test_native_detector_matches_numpy_under_other_settings(policy: RegionPolicy) -> None:
    for seed, (width, height) in zip((31, 32), RESOLUTIONS, strict=True):
        clip = EventClip(EventClipSpec(seed=seed, width=width, height=height, duration_s=8))
        stamps = [i / 5 for i in range(40)]
        frames = np.stack([clip.rgb(t) for t in stamps])
        lockstep(thumbs_of(frames, policy), stamps, policy, commit_every=2)


def scrolled_pages(shift: int, with_toast: bool, width: int = 640, height: int = 560) -> np.ndarray:
    """A page of text lines between a title bar and a taskbar, then the page scrolled up by `shift`
    pixels (a toast on top when asked): the scroll search, its half steps and the per-strip pass run."""
    rng = np.random.default_rng(shift)
    page = np.full((height - 80, width, 3), 250, np.uint8)
    for y in range(4, height - 80, 18):
        page[y : y + 9, 20 : width - 40] = rng.integers(10, 60)
        page[y : y + 9, 20 : width - 40 : 3] = 250
    before = np.full((height, width, 3), 250, np.uint8)
    before[:40], before[height - 40 :] = 60, 30
    after = before.copy()
    before[40 : height - 40] = page
    after[40 : height - 40 - shift] = page[shift:]
    after[height - 40 - shift : height - 40] = page[:shift]
    if with_toast:
        after[300:380, 200:560] = (40, 120, 200)
    return np.stack([before, after])


@pytest.mark.parametrize("shift", [1, 3, 4, 5, 7, 10, 12, 15])
def test_native_detector_matches_numpy_on_scrolls(shift: int) -> None:
    fired = 0
    for with_toast in (False, True):
        frames = scrolled_pages(shift, with_toast)
        for max_shift in (0, 6, 12, 16):
            policy = RegionPolicy(max_shift=max_shift)
            fired += lockstep(thumbs_of(frames, policy), [0.0, 0.2], policy)
    assert fired >= 1


def test_a_scroll_with_a_toast_reports_the_same_shift() -> None:
    """The compensated shift is reported (whole and half steps), equal on both paths."""
    shifts = set()
    for shift in (3, 4, 5, 8):
        frames = scrolled_pages(shift, True)
        policy = RegionPolicy()
        thumbs = thumbs_of(frames, policy)
        results = []
        for native in (True, False):
            state = RegionState.start(thumbs[0], 0.0)
            detector = RegionDetector(policy, native=native)
            observe = detector.observe if native else detector.observe_numpy
            results.append(observe(state, thumbs[1], 0.2))
        assert results[0] == results[1] and results[0] is not None
        shifts.add(results[0].shift)
    assert len(shifts - {0}) >= 2


def test_samplers_on_either_detector_decide_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole decisions (verdict, reason, box) through the sampler, pHash included."""
    clip = EventClip(EventClipSpec(seed=5, width=1280, height=720, duration_s=10))
    stamps = [i / 5 for i in range(50)]
    frames = np.stack([clip.rgb(t) for t in stamps])
    policy = RegionPolicy()
    signals = signals_batch(frames, cell=policy.cell)
    thumbs = [Thumb(c, 720, 1280, policy.tile) for c in signals.cells]
    runs = []
    for native in (True, False):
        monkeypatch.setattr(sampler_module, "RegionDetector", lambda p, n=native: RegionDetector(p, native=n))
        s = FrameSampler(parse_stream_id("tenant_t_native.screen"), SamplingPolicy())
        inputs = zip(stamps, signals.hashes, thumbs, strict=True)
        runs.append([s.decide(ts, int(h), th).to_dict() for ts, h, th in inputs])
    assert runs[0] == runs[1]
    assert any(d["reason"] == "region" for d in runs[0])
