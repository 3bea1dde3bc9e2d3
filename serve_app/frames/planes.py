"""Frame planes: the part of an RGB frame the dedup reads, half its bytes, with the same decisions.

The dedup reads two things of a frame's pixels (`phash.py`, `region.py`): Pillow's integer luma
`L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16` (the pHash, and the region signal's first channel) and
each pixel's colourfulness `max(R, G, B) - min(R, G, B)`, of which the region signal only ever reads sums
over cells 2 pixels tall and an even number of pixels wide. So a client can send, instead of RGB:

- **luma**: uint8 `[H, W]`, L of every pixel;
- **color**: uint16 `[ceil(H / 2), ceil(W / 2)]`, the colourfulness summed over each block of 2 x 2 pixels
  (the last row and column of blocks cover what is left of the frame); any even tile adds these up.

That is `H * W + 2 * ceil(H / 2) * ceil(W / 2)` bytes, 1.5 per pixel against RGB's 3 (1.38 MB for 720p),
and the server skips the per-pixel conversion. Hashes and region cell sums computed from planes are the
integers computed from the RGB frame, so every decision is the same (tests/test_frame_planes.py).
`to_planes` computes them (the C kernel, threads split the batch; numpy without it).

On the wire (`application/x-supportgraph-planes`, `POST /v1/streams/{id}/frames/batch` with `width` and
`height`): each frame's luma bytes (row by row) then its color values (uint16 little-endian, row by
row), frames back to back. What the ScreenReader gets of a processed frame sent as planes is its luma, as
grey RGB.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.frames.phash import (
    CHANNELS,
    BatchSignals,
    Cell,
    FrameShapeError,
    _filter_args,
    _phash_native,
    _pool,
    cell_grid,
    check_frames,
    default_threads,
    hash_thumbnails,
    resolve_backend,
)
from serve_app.frames.resample import THUMB, plan_for

MEDIA_TYPE = "application/x-supportgraph-planes"
COLOR_DTYPE = np.dtype("<u2")


def native_planes() -> bool:
    """Whether the C kernel built here reads planes (an extension built before them does not)."""
    return _phash_native is not None and hasattr(_phash_native, "planes_batch")


def color_shape(height: int, width: int) -> tuple[int, int]:
    """Shape of the color plane of an H x W frame: one value per 2x2 block."""
    return -(-height // 2), -(-width // 2)


def frame_bytes(height: int, width: int) -> int:
    """Bytes of one frame's planes on the wire."""
    rows, cols = color_shape(height, width)
    return height * width + COLOR_DTYPE.itemsize * rows * cols


@dataclass(frozen=True)
class Planes:
    """A batch of frames as planes: luma uint8 `[B, H, W]`, color uint16 `[B, ceil(H / 2), ceil(W / 2)]`."""

    luma: np.ndarray
    color: np.ndarray

    def __post_init__(self) -> None:
        check_planes(self.luma, self.color)

    def __len__(self) -> int:
        return self.luma.shape[0]

    @property
    def height(self) -> int:
        return self.luma.shape[1]

    @property
    def width(self) -> int:
        return self.luma.shape[2]

    def frame(self, i: int) -> PlaneFrame:
        return PlaneFrame(self.luma[i], self.color[i])

    def to_bytes(self) -> bytes:
        """The wire body: per frame its luma bytes, then its color values (uint16 little-endian)."""
        parts = []
        for luma, color in zip(self.luma, self.color, strict=True):
            parts.append(np.ascontiguousarray(luma).tobytes())
            parts.append(np.ascontiguousarray(color, COLOR_DTYPE).tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, width: int, height: int, count: int | None = None) -> Planes:
        """Planes of `count` (or as many as the body holds) frames of width x height, as views of `data`.
        Raises ValueError when the body is not a whole number of frames."""
        if width < 1 or height < 1:
            raise ValueError(f"planes need a width and height of at least 1, got {width}x{height}")
        size = frame_bytes(height, width)
        if count is None:
            count = len(data) // size
        if count < 1 or len(data) != count * size:
            raise ValueError(
                f"planes of {width}x{height} frames are {size} bytes each (luma, then 2x2 colour sums as "
                f"uint16); got {len(data)} bytes" + (f" for {count} frames" if count else "")
            )
        rows, cols = color_shape(height, width)
        per = np.frombuffer(data, np.uint8).reshape(count, size)
        luma = per[:, : height * width].reshape(count, height, width)
        color = per[:, height * width :].view(COLOR_DTYPE).reshape(count, rows, cols)
        if np.dtype(np.uint16) != COLOR_DTYPE:  # a big-endian host
            color = color.astype(np.uint16)
        return cls(luma, color)


@dataclass(frozen=True)
class PlaneFrame:
    """One frame's planes (a row of `Planes`)."""

    luma: np.ndarray  # uint8 [H, W]
    color: np.ndarray  # uint16 [ceil(H / 2), ceil(W / 2)]

    @property
    def shape(self) -> tuple[int, int]:
        return self.luma.shape

    def grey_rgb(self) -> np.ndarray:
        """The luma as a grey uint8 `[H, W, 3]` view (what the ScreenReader reads of it)."""
        return np.broadcast_to(self.luma[..., None], (*self.luma.shape, 3))


def check_planes(luma: Any, color: Any) -> tuple[int, int, int]:
    """Validate a planes batch; returns (B, H, W)."""
    luma, color = np.asarray(luma), np.asarray(color)
    if luma.ndim != 3 or luma.dtype != np.uint8:
        raise FrameShapeError(f"luma must be uint8 [B, H, W], got {luma.dtype} {tuple(luma.shape)}")
    b, h, w = luma.shape
    if h < 1 or w < 1:
        raise FrameShapeError(f"frames must be at least 1x1, got {h}x{w}")
    want = (b, *color_shape(h, w))
    if color.dtype != np.uint16 or tuple(color.shape) != want:
        raise FrameShapeError(
            f"color must be uint16 {list(want)} (2x2 colourfulness sums), "
            f"got {color.dtype} {list(color.shape)}"
        )
    return b, h, w


def to_planes_numpy(frames: np.ndarray) -> Planes:
    """The definition: Pillow's L and 2x2 sums of max - min, in numpy."""
    frames = np.asarray(frames)
    b, h, w = check_frames(frames)
    rgb = frames.astype(np.uint32)
    luma = ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
    spread = (frames.max(axis=-1) - frames.min(axis=-1)).astype(np.uint16)
    rows, cols = color_shape(h, w)
    padded = np.zeros((b, 2 * rows, 2 * cols), np.uint16)
    padded[:, :h, :w] = spread
    color = padded.reshape(b, rows, 2, cols, 2).sum(axis=(2, 4), dtype=np.uint16)
    return Planes(luma, color)


def to_planes(frames: Any, threads: int | None = None) -> Planes:
    """Planes of uint8 RGB frames `[B, H, W, 3]` (the C kernel when built, the batch split across
    threads; numpy otherwise). Equal to `to_planes_numpy`."""
    b, h, w = check_frames(frames)
    if not native_planes():
        return to_planes_numpy(np.asarray(frames))
    frames = np.ascontiguousarray(frames)
    luma = np.empty((b, h, w), np.uint8)
    color = np.empty((b, *color_shape(h, w)), np.uint16)
    threads = min(threads or default_threads(), max(b, 1))

    def run(start: int, stop: int) -> None:
        _phash_native.planes_batch(frames, b, h, w, luma, color, start, stop)

    _split(run, b, threads)
    return Planes(luma, color)


def _split(run: Any, b: int, threads: int) -> None:
    if threads <= 1:
        run(0, b)
        return
    edges = np.linspace(0, b, threads + 1).astype(int)
    pool = _pool(threads)
    futures = [pool.submit(run, int(lo), int(hi)) for lo, hi in itertools.pairwise(edges) if hi > lo]
    for f in futures:
        f.result()


def check_cell(cell: Cell) -> None:
    cell_w, cell_h = cell
    if cell_h != 2 or cell_w % 2:
        raise ValueError(f"planes give region cells 2 pixels tall and an even number wide, not {cell}")


def color_cells(color: np.ndarray, width: int, cell: Cell) -> np.ndarray:
    """[B, ceil(H / 2), ceil(W / 2)] 2x2 sums -> [B, ceil(H / 2), ceil(W / cell_w)] int32 cell sums."""
    check_cell(cell)
    per = cell[0] // 2
    b, rows, blocks = color.shape
    cols = -(-width // cell[0])
    padded = np.zeros((b, rows, cols * per), np.int32)
    padded[:, :, :blocks] = color
    return padded.reshape(b, rows, cols, per).sum(axis=3, dtype=np.int32)


def planes_signals(
    planes: Planes,
    *,
    cell: Cell | None = None,
    backend: str = "auto",
    device: str | None = None,
    threads: int | None = None,
) -> BatchSignals:
    """`phash.signals_batch` of the frames these planes came from, from the planes: the same hashes and
    region cell sums (cells 2 pixels tall and an even number wide)."""
    b, h, w = len(planes), planes.height, planes.width
    if cell is not None:
        check_cell(cell)
        cell_grid(h, w, cell)
    if b == 0:
        empty = None if cell is None else np.empty((0, CHANNELS, *cell_grid(h, w, cell)), np.int32)
        return BatchSignals(np.empty(0, np.uint64), empty)
    chosen, dev = resolve_backend(planes.luma, backend, device)
    if chosen == "native" and not native_planes() and backend == "auto":
        chosen, dev = "torch", "cpu"  # the same integers, slower
    if chosen == "native":
        thumbs, cells = _native_planes(planes, cell, threads)
    elif chosen == "torch":
        thumbs, cells = _torch_planes(planes, cell, dev)
    else:
        raise ValueError(f"unknown pHash backend {backend!r} (auto, native, torch)")
    return BatchSignals(hash_thumbnails(thumbs), cells)


def _native_planes(planes: Planes, cell: Cell | None, threads: int | None) -> tuple[np.ndarray, Any]:
    b, h, w = len(planes), planes.height, planes.width
    luma = np.ascontiguousarray(planes.luma)
    color = np.require(planes.color, np.uint16, ["C", "A"])  # read as uint16_t in C: aligned, contiguous
    plan = plan_for(h, w)
    out = np.empty((b, THUMB, THUMB), np.uint8)
    cells = None if cell is None else np.empty((b, CHANNELS, *cell_grid(h, w, cell)), np.int32)
    extra = (None, 0, 0, color) if cell is None else (cells, *cell, color)
    args = _filter_args(plan)

    def run(start: int, stop: int) -> None:
        _phash_native.resize_batch(luma, b, h, w, *args, plan.vertical_first, out, start, stop, *extra)

    _split(run, b, min(threads or default_threads(), b))
    return out, cells


def _torch_planes(planes: Planes, cell: Cell | None, device: str | None) -> tuple[np.ndarray, Any]:
    """The torch path from the luma plane: the same float64 resize as `phash.torch_pass`, luma cell sums
    in torch, colour cells added up from the color plane."""
    import torch

    from serve_app.frames.phash import _TORCH_CHUNK_PIXELS, _dense_filters, _round_clip

    b, h, w = len(planes), planes.height, planes.width
    dev = torch.device(device or "cpu")
    plan = plan_for(h, w)
    kx, ky = _dense_filters(h, w, str(dev))
    step = max(1, _TORCH_CHUNK_PIXELS // (h * w))
    thumbs, sums = [], []
    for lo in range(0, b, step):
        gray = torch.from_numpy(np.array(planes.luma[lo : lo + step])).to(dev).to(torch.int32)
        img = gray.to(torch.float64)
        if plan.vertical_first:
            img = _round_clip(_round_clip(ky @ img) @ kx.T)
        else:
            if kx is not None:
                img = _round_clip(img @ kx.T)
            if ky is not None:
                img = _round_clip(ky @ img)
        thumbs.append(img.to(torch.uint8).cpu().numpy())
        if cell is not None:
            rows, cols = cell_grid(h, w, cell)
            padded = torch.zeros((len(gray), rows * cell[1], cols * cell[0]), dtype=torch.int32, device=dev)
            padded[:, :h, :w] = gray
            sums.append(padded.view(len(gray), rows, cell[1], cols, cell[0]).sum(dim=(2, 4)).cpu().numpy())
    if cell is None:
        return np.concatenate(thumbs), None
    cells = np.stack([np.concatenate(sums).astype(np.int32), color_cells(planes.color, w, cell)], axis=1)
    return np.concatenate(thumbs), cells
