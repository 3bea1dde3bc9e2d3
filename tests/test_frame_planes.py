"""Planes (`frames/planes.py`: luma plus 2x2 colourfulness sums) give the dedup what RGB gives it: the
same integers (C, numpy and torch, odd sizes, every tile), the same decisions through `offer_planes`,
the handle-free backend and the HTTP batch route as the RGB frames one at a time, and a clear 4xx for a
bad body."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serve_app.frames.phash import FrameShapeError, signals_batch
from serve_app.frames.planes import (
    MEDIA_TYPE,
    Planes,
    color_cells,
    frame_bytes,
    planes_signals,
    to_planes,
    to_planes_numpy,
)
from serve_app.frames.service import DedupService
from tests import images
from tests.test_frames_fast_path import SIZES, clip_frames, http_client, one_at_a_time

ODD_SIZES = [(1, 1), (2, 3), (33, 47), (31, 32), (32, 32), (100, 32), (32, 100), (17, 1000), (720, 1280)]


@pytest.mark.parametrize(("height", "width"), ODD_SIZES)
def test_planes_hash_and_cells_are_the_rgb_ones(height: int, width: int) -> None:
    rng = np.random.default_rng(height * 7919 + width)
    frames = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    frames[1] = images.text(height, width, 3) if min(height, width) >= 8 else frames[1]
    planes = to_planes(frames)
    reference = to_planes_numpy(frames)
    assert np.array_equal(planes.luma, reference.luma) and np.array_equal(planes.color, reference.color)
    back = Planes.from_bytes(planes.to_bytes(), width, height)
    assert np.array_equal(back.luma, planes.luma) and np.array_equal(back.color, planes.color)
    for cell in (None, (16, 2), (4, 2), (12, 2), (64, 2)):
        rgb = signals_batch(frames, cell=cell)
        # `back` views an HTTP body: its colour plane is misaligned for uint16 when height*width is odd
        for backend, source in (("native", planes), ("native", back), ("torch", planes), ("torch", back)):
            got = planes_signals(source, cell=cell, backend=backend)
            assert np.array_equal(got.hashes, rgb.hashes), (cell, backend)
            if cell is not None:
                assert np.array_equal(got.cells, rgb.cells), (cell, backend)


def test_planes_are_half_the_bytes_and_refuse_odd_cells_and_shapes() -> None:
    assert frame_bytes(720, 1280) == 1280 * 720 * 3 // 2
    planes = to_planes(np.zeros((1, 6, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="even number wide"):
        color_cells(planes.color, 6, (3, 2))
    with pytest.raises(FrameShapeError, match="color must be uint16"):
        Planes(planes.luma, planes.color[:, :2])
    with pytest.raises(FrameShapeError, match="luma must be uint8"):
        Planes(planes.luma.astype(np.int16), planes.color)
    with pytest.raises(ValueError, match="bytes each"):
        Planes.from_bytes(b"\x00" * 10, 6, 6)


def planes_in_chunks(frames: np.ndarray, ts: list[float], speaking: list[bool], sizes: list[int]) -> list:
    service = DedupService()

    async def run() -> list[dict]:
        out, at, k = [], 0, 0
        while at < len(frames):
            n = sizes[k % len(sizes)]
            planes = to_planes(frames[at : at + n])
            got = await service.offer_planes(
                "tenant_fast_s.screen", planes, speaking[at : at + n], ts[at : at + n]
            )
            out += [d.to_dict() for d in got]
            at, k = at + n, k + 1
        return out

    return asyncio.run(run())


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_offer_planes_decides_exactly_as_rgb_one_at_a_time(width: int, height: int) -> None:
    frames, ts, speaking = clip_frames(width, height)
    expected = one_at_a_time(frames, ts, speaking)
    reasons = {d["reason"] for d in expected}
    assert {"first", "duplicate", "throttled"} <= reasons and reasons & {"phash", "region"}
    for sizes in ([16], [1, 5, 2, 31]):
        assert planes_in_chunks(frames, ts, speaking, sizes) == expected


def test_rgb_and_planes_frames_mix_in_one_batch() -> None:
    """A replica's batch may hold RGB frames of one stream and planes of another: each decided as alone."""
    frames, ts, speaking = clip_frames(640, 480)
    expected = one_at_a_time(frames[:20], ts[:20], speaking[:20])
    service = DedupService()
    rgb = [
        service.admit("tenant_fast_a.screen", f, s, t)
        for f, s, t in zip(frames[:20], speaking[:20], ts[:20], strict=True)
    ]
    planes = service.admit_planes("tenant_fast_s.screen", to_planes(frames[:20]), speaking[:20], ts[:20])
    pending = [p for pair in zip(rgb, planes, strict=True) for p in pair if not hasattr(p, "verdict")]
    decided = iter(asyncio.run(service.decide_batch(pending)))
    by_stream: dict[str, list[dict]] = {"tenant_fast_a.screen": [], "tenant_fast_s.screen": []}
    for pair in zip(rgb, planes, strict=True):
        for item in pair:
            decision = item if hasattr(item, "verdict") else next(decided)
            by_stream[decision.stream_id].append({**decision.to_dict(), "stream_id": "tenant_fast_s.screen"})
    assert by_stream["tenant_fast_a.screen"] == expected == by_stream["tenant_fast_s.screen"]


def test_http_planes_batches_decide_as_rgb_single_uploads() -> None:
    frames, ts, speaking = clip_frames(640, 480)
    frames, ts, speaking = frames[:24], ts[:24], speaking[:24]
    url = "/v1/streams/tenant_fast_h.screen"
    raw = {"content-type": "application/octet-stream"}
    with http_client() as single:
        expected = [
            single.post(
                f"{url}/frames",
                content=f.tobytes(),
                headers=raw,
                params={"ts": t, "speaking": s, "width": 640, "height": 480},
            )
            .raise_for_status()
            .json()
            for f, t, s in zip(frames, ts, speaking, strict=True)
        ]
    got = []
    with http_client() as batch:
        for lo, hi in ((0, 1), (1, 9), (9, 24)):
            r = batch.post(
                f"{url}/frames/batch",
                content=to_planes(frames[lo:hi]).to_bytes(),
                headers={"content-type": MEDIA_TYPE},
                params={"ts": ts[lo:hi], "speaking": speaking[lo:hi], "width": 640, "height": 480},
            )
            got += r.raise_for_status().json()["decisions"]
    assert got == expected


ONE = to_planes(np.zeros((1, 4, 6, 3), np.uint8)).to_bytes()


@pytest.mark.parametrize(
    ("route", "body", "params", "status", "needle"),
    [
        ("batch", ONE, {}, 422, "width and height"),
        ("batch", ONE + b"\x00", {"width": 6, "height": 4}, 422, "36 bytes each"),
        ("batch", ONE * 2, {"width": 6, "height": 4, "ts": [1.0]}, 422, "for 1 frames"),
        ("batch", ONE, {"width": 6, "height": 4, "sizes": [36]}, 422, "not sizes"),
        ("batch", ONE * 65, {"width": 6, "height": 4}, 413, "1 to 64 frames"),
        ("single", ONE, {"width": 6, "height": 4}, 415, "/frames/batch"),
    ],
)
def test_bad_planes_bodies_get_a_clear_4xx(
    route: str, body: bytes, params: dict, status: int, needle: str
) -> None:
    path = "/frames/batch" if route == "batch" else "/frames"
    with http_client() as client:
        r = client.post(
            f"/v1/streams/tenant_fast_b.screen{path}",
            content=body,
            headers={"content-type": MEDIA_TYPE},
            params=params,
        )
    assert r.status_code == status and needle in r.json()["detail"], r.text
