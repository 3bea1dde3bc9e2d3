"""The fast frame path decides exactly as one frame at a time: `offer_many` (several frames of one stream
per call, one `[B, H, W, 3]` array or a list), the batched HTTP route, and the forwarder's batching (as
planes: tests/test_frame_planes.py has the planes' own tests)."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_app.agent.frames import FrameBuffer, VideoForwarder
from serve_app.auth import RateLimiter
from serve_app.backends import LocalFrameBackend
from serve_app.frames.decode import FrameLimits
from serve_app.frames.phash import frame_signals, stacked
from serve_app.frames.sampler import FrameSampler
from serve_app.frames.service import DedupService
from serve_app.http import create_app
from serve_app.tenancy import parse_stream_id
from supportgraph_tools.frames.synthetic import EventClip, EventClipSpec

SIZES = [(1280, 720), (640, 480)]


@lru_cache(maxsize=4)
def clip_frames(width: int, height: int) -> tuple[np.ndarray, list[float], list[bool]]:
    """Sampled frames of a generated screen share with events (toasts, banners, errors, scrolls...), plus
    a near-duplicate a few ms after every third one (throttled), as one array with their times."""
    clip = EventClip(EventClipSpec(seed=11, width=width, height=height, duration_s=9))
    assert any(e.significant for e in clip.events)
    frames, ts, speaking = [], [], []
    for i in range(45):
        t = i / 5
        frame = clip.rgb(t)
        frames.append(frame)
        ts.append(t)
        speaking.append(i % 7 < 3)
        if i % 3 == 0:
            frames.append(frame)
            ts.append(t + 0.01)
            speaking.append(False)
    return np.stack(frames), ts, speaking


def one_at_a_time(frames: np.ndarray, ts: list[float], speaking: list[bool]) -> list[dict]:
    service = DedupService()  # stream "tenant_fast_s.screen"

    async def run() -> list[dict]:
        return [
            (await service.offer("tenant_fast_s.screen", f, s, t)).to_dict()
            for f, s, t in zip(frames, speaking, ts, strict=True)
        ]

    return asyncio.run(run())


def batched(
    frames: np.ndarray, ts: list[float], speaking: list[bool], sizes: list[int], as_list: bool
) -> list[dict]:
    service = DedupService()

    async def run() -> list[dict]:
        out, at, k = [], 0, 0
        while at < len(frames):
            n = sizes[k % len(sizes)]
            chunk = frames[at : at + n]
            sent = [f.copy() for f in chunk] if as_list else chunk
            got = await service.offer_many(
                "tenant_fast_s.screen", sent, speaking[at : at + n], ts[at : at + n]
            )
            out += [d.to_dict() for d in got]
            at, k = at + n, k + 1
        return out

    return asyncio.run(run())


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_offer_many_decides_exactly_as_one_at_a_time(width: int, height: int) -> None:
    frames, ts, speaking = clip_frames(width, height)
    expected = one_at_a_time(frames, ts, speaking)
    sampler = FrameSampler(parse_stream_id("tenant_fast_s.screen"), DedupService().policy)
    assert expected == [  # the sampler alone, in this thread: what the service does in its worker thread
        sampler.offer(f, s, t).to_dict() for f, s, t in zip(frames, speaking, ts, strict=True)
    ]
    reasons = {d["reason"] for d in expected}
    assert {"first", "duplicate", "throttled"} <= reasons and reasons & {"phash", "region"}
    for sizes, as_list in (([16], False), ([1, 5, 2, 31], False), ([7, 3], True)):
        assert batched(frames, ts, speaking, sizes, as_list) == expected


def test_rows_of_one_array_are_hashed_where_they_lie() -> None:
    frames, _, _ = clip_frames(640, 480)
    rows = list(frames[3:11])
    view = stacked(rows)
    assert np.shares_memory(view, frames) and np.array_equal(view, frames[3:11])
    apart = [frames[3], frames[5], frames[4]]
    copy = stacked(apart)
    assert not np.shares_memory(copy, frames) and np.array_equal(copy, np.stack(apart))
    hashes, cells = frame_signals(rows, cell=(16, 2))
    each = [frame_signals([f.copy()], cell=(16, 2)) for f in rows]
    assert [int(h) for h in hashes] == [int(e[0][0]) for e in each]
    assert all(np.array_equal(c, e[1][0]) for c, e in zip(cells, each, strict=True))


@pytest.mark.parametrize(
    ("frames", "speaking", "ts", "needle"),
    [
        (np.zeros((2, 8, 8, 3), np.uint8), False, [0.0], "ts has 1 values for 2 frames"),
        (np.zeros((2, 8, 8, 3), np.uint8), [True], None, "is_speaking has 1 values"),
        (np.zeros((0, 8, 8, 3), np.uint8), False, None, "1 to 256 frames"),
        (np.zeros((2, 8, 8), np.uint8), False, None, "frames must be"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 4), np.uint8)], False, None, "RGB"),
        (np.zeros((2, 8, 8, 3), np.uint8), False, [0.0, float("nan")], "finite"),
    ],
)
def test_a_bad_call_is_refused_whole(frames, speaking, ts, needle) -> None:
    service = DedupService()
    with pytest.raises(ValueError, match=needle):
        service.admit_many("tenant_fast_bad", frames, speaking, ts)
    assert "tenant_fast_bad" not in service.streams


# --- HTTP: /frames/batch decides as /frames one at a time ------------------------------------------


def http_client(limits: FrameLimits | None = None) -> TestClient:
    app = create_app(limits or FrameLimits())
    app.state.frames = LocalFrameBackend(DedupService())
    return TestClient(app)


def encoded(frames: np.ndarray, fmt: str) -> list[bytes]:
    out = []
    for frame in frames:
        if fmt == "raw":
            out.append(frame.tobytes())
            continue
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format=fmt.upper())
        out.append(buf.getvalue())
    return out


CTYPES = {"raw": "application/octet-stream", "jpeg": "image/jpeg", "png": "image/png"}


@pytest.mark.parametrize("fmt", ["raw", "jpeg", "png"])
def test_http_batches_decide_as_single_uploads(fmt: str) -> None:
    frames, ts, speaking = clip_frames(640, 480)
    frames, ts, speaking = frames[:24], ts[:24], speaking[:24]
    bodies = encoded(frames, fmt)
    size = {"width": 640, "height": 480} if fmt == "raw" else {}
    headers = {"content-type": CTYPES[fmt]}
    url = "/v1/streams/tenant_fast_h.screen"
    with http_client() as single:
        expected = [
            single.post(f"{url}/frames", content=b, headers=headers, params={"ts": t, "speaking": s, **size})
            .raise_for_status()
            .json()
            for b, t, s in zip(bodies, ts, speaking, strict=True)
        ]
    assert {d["reason"] for d in expected} >= {"first", "duplicate", "throttled"}
    got = []
    with http_client() as batch:
        for lo, hi in ((0, 1), (1, 9), (9, 24)):
            params = {"ts": ts[lo:hi], "speaking": speaking[lo:hi], **size}
            if fmt != "raw":
                params["sizes"] = [len(b) for b in bodies[lo:hi]]
            r = batch.post(
                f"{url}/frames/batch", content=b"".join(bodies[lo:hi]), headers=headers, params=params
            )
            got += r.raise_for_status().json()["decisions"]
    assert got == expected


def test_a_raw_batch_without_ts_counts_frames_from_the_body() -> None:
    """Without ts the replica's clock stamps them: frames of one request arrive together (throttled)."""
    frames = np.stack([np.full((8, 16, 3), v, np.uint8) for v in (0, 0, 200)])
    with http_client() as client:
        r = client.post(
            "/v1/streams/tenant_fast_r.screen/frames/batch",
            content=frames.tobytes(),
            headers={"content-type": "application/octet-stream"},
            params={"width": 16, "height": 8, "speaking": True},
        )
    assert [d["verdict"] for d in r.raise_for_status().json()["decisions"]] == [
        "processed",
        "throttled",
        "throttled",
    ]


PNG_2 = encoded(np.zeros((2, 8, 8, 3), np.uint8), "png")


@pytest.mark.parametrize(
    ("body", "ctype", "params", "status", "needle"),
    [
        (b"".join(PNG_2), "image/png", {}, 422, "sizes query parameter"),
        (b"".join(PNG_2), "image/png", {"sizes": [len(PNG_2[0]), 3]}, 422, "add up"),
        (
            b"".join(PNG_2),
            "image/png",
            {"sizes": [len(b) for b in PNG_2], "ts": [1.0]},
            422,
            "2 values for 1",
        ),
        (
            b"".join(PNG_2),
            "image/png",
            {"sizes": [len(b) for b in PNG_2], "speaking": [1, 0, 1]},
            422,
            "speaking",
        ),
        (PNG_2[0] + b"\x00" * 9, "image/png", {"sizes": [len(PNG_2[0]), 9]}, 422, "PNG"),
        (b"\x00" * 7, "application/octet-stream", {"width": 1, "height": 1}, 422, "3 bytes each"),
        (
            b"\x00" * 6,
            "application/octet-stream",
            {"width": 1, "height": 1, "ts": [1.0]},
            422,
            "for 1 frames",
        ),
        (b"\x00" * 3 * 65, "application/octet-stream", {"width": 1, "height": 1}, 413, "1 to 64 frames"),
        (b"\x00" * 6, "application/octet-stream", {}, 422, "width and height"),
        (b"\x00" * 6, "text/plain", {}, 415, "unsupported"),
        (b"", "image/png", {}, 422, "empty body"),
        (b"\x00" * 6, "application/octet-stream", {"width": 1, "height": 1, "ts": [1.0, -1.0]}, 422, "ts"),
    ],
)
def test_bad_batches_get_a_clear_4xx(body: bytes, ctype: str, params: dict, status: int, needle: str) -> None:
    with http_client() as client:
        r = client.post(
            "/v1/streams/tenant_fast_b.screen/frames/batch",
            content=body,
            headers={"content-type": ctype},
            params=params,
        )
    assert r.status_code == status and needle in r.json()["detail"], r.text


def test_a_batch_is_charged_one_frame_each() -> None:
    limiter = RateLimiter(1e9, 1e9, frames_per_min=10)
    assert limiter.admit("acme", frame=True) is None
    limiter.charge_frames("acme", 8)
    assert limiter.admit("acme", frame=True) is None  # the 10th frame of the minute
    assert limiter.admit("acme", frame=True) is not None


# --- the LiveKit forwarder batches under load, and decides the same --------------------------------


class SlowSink:
    """A FrameSink over an in-process service whose calls take a while (a busy graph)."""

    def __init__(self, delay_s: float):
        self.backend = LocalFrameBackend(DedupService())
        self.delay_s = delay_s
        self.decisions: list[dict] = []
        self.planes_calls = 0

    async def offer(self, stream_id, frame, is_speaking, ts):  # pragma: no cover - the forwarder batches
        raise AssertionError("the forwarder uses offer_planes")

    async def offer_many(self, stream_id, frames, is_speaking, ts):
        await asyncio.sleep(self.delay_s)
        out = await self.backend.offer_many(stream_id, frames, is_speaking, ts)
        self.decisions += out
        return out

    async def offer_planes(self, stream_id, planes, is_speaking, ts):
        await asyncio.sleep(self.delay_s)
        self.planes_calls += 1
        out = await self.backend.offer_planes(stream_id, planes, is_speaking, ts)
        self.decisions += out
        return out


@dataclass
class Event:
    frame: Any
    timestamp_us: int


def test_the_forwarder_batches_while_a_call_is_in_flight_and_decides_the_same() -> None:
    from livekit import rtc

    frames, ts, _ = clip_frames(640, 480)
    keep = [i for i in range(len(ts)) if i == 0 or ts[i] - ts[i - 1] > 0.1][:30]  # the 5-fps frames
    bgra = np.full((480, 640, 4), 255, np.uint8)

    async def events():
        for i in keep:
            bgra[..., :3] = frames[i][..., ::-1]
            yield Event(rtc.VideoFrame(640, 480, rtc.VideoBufferType.BGRA, bgra.tobytes()), int(ts[i] * 1e6))
            await asyncio.sleep(0.005)

    sink = SlowSink(0.05)
    forwarder = VideoForwarder(sink, "tenant_fast_f.screen", FrameBuffer(size=64))
    asyncio.run(forwarder.run(events()))
    expected = one_at_a_time(frames[keep], [ts[i] for i in keep], [False] * len(keep))
    assert forwarder.offered == len(keep) and forwarder.dropped == 0
    assert 1 < forwarder.calls < len(keep) // 2  # batched under load
    assert sink.planes_calls == forwarder.calls  # frames of one size go as planes
    assert sink.decisions == [{**d, "stream_id": "tenant_fast_f.screen"} for d in expected]
    assert forwarder.sent == sum(d["send"] for d in expected) == len(forwarder.buffer.latest())
