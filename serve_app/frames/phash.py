"""Batched perceptual hash (pHash), bit-exact with `imagehash.phash`.

`phash_batch(frames)` takes uint8 RGB frames `[B, H, W, 3]` (numpy or torch) and returns one uint64 per
frame equal to `int(str(imagehash.phash(Image.fromarray(frame))), 16)`.

Pipeline, each stage exact:
1. Pillow's integer RGB->L and fixed-point LANCZOS resize to 32x32 (`resample.py` plans it), done by
   the native C kernel on CPU (threads split the batch) or by float64 matmuls in torch (exact: every
   partial sum is an integer far below 2**53), which runs on CUDA when the frames or the device are there.
2. scipy's DCT-II on the 32x32 thumbnails, batched (bitwise the same as imagehash's per-image calls,
   ties on flat frames included, because it *is* the same scipy routine), top-left 8x8, `> median`.

`signals_batch(frames, cell=(w, h))` also returns, from the same pass over the pixels, the cell sums the
region change signal reads (`region.py`): for each cell of w x h pixels (the last row and column of
cells may be smaller), the sum of the same Pillow L values (channel 0) and the sum of each pixel's
colourfulness `max(R, G, B) - min(R, G, B)` (channel 1), as int32 `[B, 2, ceil(H / h), ceil(W / w)]`.
Both backends compute these integers exactly, so they are identical.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.fftpack

from serve_app.errors import FrameShapeError
from serve_app.frames.resample import PRECISION_BITS, THUMB, ResamplePlan, plan_for

if TYPE_CHECKING:
    import torch

try:
    from serve_app.frames import _phash_native
except ImportError:  # built by `pip install`; the torch path stays exact without it
    _phash_native = None

Backend = Literal["auto", "native", "torch"]
Cell = tuple[int, int]  # (width, height) in pixels of a region cell
HASH_BITS = 64
CHANNELS = 2  # region cells: luma, colourfulness
MAX_CELL_PIXELS = 1 << 23  # 255 * pixels of a cell must fit an int32 sum
_TORCH_CHUNK_PIXELS = 16 * 1280 * 720  # frames per torch step: bounds float64 scratch to ~120 MB


def native_available() -> bool:
    return _phash_native is not None


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def check_frames(frames: Any) -> tuple[int, int, int]:
    """Validate a frame batch; returns (B, H, W)."""
    shape = tuple(frames.shape)
    dtype = str(frames.dtype)
    if len(shape) != 4 or shape[3] != 3:
        raise FrameShapeError(f"frames must be [B, H, W, 3] RGB, got shape {shape}")
    if dtype not in ("uint8", "torch.uint8"):
        raise FrameShapeError(f"frames must be uint8, got {dtype}")
    b, h, w, _ = shape
    if h < 1 or w < 1:
        raise FrameShapeError(f"frames must be at least 1x1, got {h}x{w}")
    return b, h, w


@dataclass(frozen=True)
class BatchSignals:
    """What one pass over a batch yields: the pHash of every frame and, when asked, its luma cell sums."""

    hashes: np.ndarray  # [B] uint64
    cells: np.ndarray | None  # [B, 2, ceil(H / cell_h), ceil(W / cell_w)] int32, None without a cell size


def cell_grid(height: int, width: int, cell: Cell) -> tuple[int, int]:
    """(rows, cols) of cells covering a frame; the last row and column may be partial."""
    cell_w, cell_h = cell
    if cell_w < 1 or cell_h < 1 or cell_w * cell_h > MAX_CELL_PIXELS:
        raise ValueError(f"region cells must be 1x1 to {MAX_CELL_PIXELS} pixels, got {cell}")
    return -(-height // cell_h), -(-width // cell_w)


def hash_thumbnails(thumbs: np.ndarray) -> np.ndarray:
    """[B, 32, 32] uint8 Pillow thumbnails -> [B] uint64 pHash (imagehash's DCT, median and bit order)."""
    coeffs = scipy.fftpack.dct(scipy.fftpack.dct(thumbs, axis=1), axis=2)[:, :8, :8]
    flat = coeffs.reshape(len(thumbs), HASH_BITS)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").reshape(-1).astype(np.uint64)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


def hash_hex(value: int | np.integer) -> str:
    """The 16-hex-digit form imagehash prints for a 64-bit pHash."""
    return f"{int(value):016x}"


# --- native CPU path -------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="phash")


def _filter_args(plan: ResamplePlan) -> tuple[Any, Any, Any, Any]:
    h, v = plan.horizontal, plan.vertical
    return (
        None if h is None else h.weights,
        None if h is None else h.bounds,
        None if v is None else v.weights,
        None if v is None else v.bounds,
    )


def native_pass(
    frames: np.ndarray, threads: int | None = None, cell: Cell | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pillow-exact 32x32 gray thumbnails (and luma cell sums when `cell` is given) with the C kernel,
    in one pass over each frame, the batch split across threads."""
    if _phash_native is None:
        raise RuntimeError("the native pHash kernel is not built; reinstall the package (pip install -e .)")
    b, h, w = check_frames(frames)
    frames = np.ascontiguousarray(frames)
    plan = plan_for(h, w)
    out = np.empty((b, THUMB, THUMB), dtype=np.uint8)
    cells = None if cell is None else np.empty((b, CHANNELS, *cell_grid(h, w, cell)), dtype=np.int32)
    extra = () if cell is None else (cells, *cell)
    args = _filter_args(plan)
    threads = min(threads or default_threads(), max(b, 1))

    def run(start: int, stop: int) -> None:
        _phash_native.resize_batch(frames, b, h, w, *args, plan.vertical_first, out, start, stop, *extra)

    if threads <= 1:
        run(0, b)
        return out, cells
    edges = np.linspace(0, b, threads + 1).astype(int)
    futures = [
        _pool(threads).submit(run, int(lo), int(hi)) for lo, hi in itertools.pairwise(edges) if hi > lo
    ]
    for f in futures:
        f.result()
    return out, cells


def thumbnails_native(frames: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Pillow-exact 32x32 gray thumbnails with the C kernel, the batch split across threads."""
    return native_pass(frames, threads)[0]


# --- torch path (CPU or CUDA) ----------------------------------------------------------------


@lru_cache(maxsize=32)
def _dense_filters(height: int, width: int, device: str) -> tuple[Any, Any]:
    import torch

    plan = plan_for(height, width)

    def mat(f: Any, size: int) -> Any:
        return None if f is None else torch.from_numpy(f.dense(size).astype(np.float64)).to(device)

    return mat(plan.horizontal, plan.width), mat(plan.vertical, plan.height)


def _round_clip(acc: torch.Tensor) -> torch.Tensor:
    import torch

    half = float(1 << (PRECISION_BITS - 1))
    return torch.clamp(torch.floor((acc + half) / float(1 << PRECISION_BITS)), 0.0, 255.0)


def _cell_sums(gray: torch.Tensor, rgb: torch.Tensor, cell: Cell) -> torch.Tensor:
    """[b, H, W] int32 luma and [b, H, W, 3] int32 RGB -> [b, 2, rows, cols] int32 sums per cell of luma
    and colourfulness (zero padding fills partial cells)."""
    import torch

    b, h, w = gray.shape
    rows, cols = cell_grid(h, w, cell)
    cell_w, cell_h = cell
    padded = torch.zeros((b, CHANNELS, rows * cell_h, cols * cell_w), dtype=torch.int32, device=gray.device)
    padded[:, 0, :h, :w] = gray
    padded[:, 1, :h, :w] = rgb.amax(dim=-1) - rgb.amin(dim=-1)
    return padded.view(b, CHANNELS, rows, cell_h, cols, cell_w).sum(dim=(3, 5)).to(torch.int32)


def thumbnails_torch(frames: Any, device: str | None = None) -> np.ndarray:
    """Pillow-exact thumbnails with torch float64 matmuls (exact integer arithmetic), on `device`."""
    return torch_pass(frames, device)[0]


def torch_pass(
    frames: Any, device: str | None = None, cell: Cell | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pillow-exact thumbnails with torch float64 matmuls (exact integer arithmetic), on `device`, and
    the luma cell sums when `cell` is given (integer sums of the same L values: equal to the C kernel's)."""
    import torch

    b, h, w = check_frames(frames)
    if not isinstance(frames, torch.Tensor):
        frames = np.ascontiguousarray(frames)
        if not frames.flags.writeable:  # arrays arrive read-only in Ray replicas; torch wants writable
            frames = frames.copy()
    x = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(frames)
    dev = torch.device(device) if device else x.device
    plan = plan_for(h, w)
    kx, ky = _dense_filters(h, w, str(dev))
    step = max(1, _TORCH_CHUNK_PIXELS // (h * w))
    out, sums = [], []
    for lo in range(0, b, step):
        chunk = x[lo : lo + step]
        if dev.type == "cuda" and not chunk.is_cuda and torch.get_num_threads() > 1:
            # Staging in pinned memory is a copy torch spreads over its threads, then an asynchronous
            # transfer: on an H100 host, 720p from numpy went 1.8k -> 2.4k frames/s with 2 threads and
            # -> 6.7k with 16, but 1.9k -> 1.5k with one thread, where the direct pageable copy wins.
            chunk = chunk.pin_memory()
        chunk = chunk.to(dev, non_blocking=True).to(torch.int32)
        gray = (chunk[..., 0] * 19595 + chunk[..., 1] * 38470 + chunk[..., 2] * 7471 + 0x8000) >> 16
        if cell is not None:
            sums.append(_cell_sums(gray, chunk, cell))
        img = gray.to(torch.float64)
        if plan.vertical_first:
            img = _round_clip(ky @ img)
            img = _round_clip(img @ kx.T)
        else:
            if kx is not None:
                img = _round_clip(img @ kx.T)
            if ky is not None:
                img = _round_clip(ky @ img)
        out.append(img.to(torch.uint8))
    thumbs = torch.cat(out).cpu().numpy() if out else np.empty((0, THUMB, THUMB), np.uint8)
    if cell is None:
        return thumbs, None
    empty = np.empty((0, CHANNELS, *cell_grid(h, w, cell)), np.int32)
    cells = torch.cat(sums).cpu().numpy() if sums else empty
    return thumbs, cells


# --- public entry point ----------------------------------------------------------------------


def resolve_backend(
    frames: Any, backend: Backend = "auto", device: str | None = None
) -> tuple[str, str | None]:
    """Pick (backend, device): CUDA tensors or a CUDA device go to torch; CPU to native when built."""
    if backend != "auto":
        return backend, device
    is_cuda_tensor = getattr(getattr(frames, "device", None), "type", "cpu") == "cuda"
    if is_cuda_tensor or (device or "").startswith("cuda"):
        return "torch", device
    return ("native", None) if native_available() else ("torch", "cpu")


def signals_batch(
    frames: Any,
    *,
    cell: Cell | None = None,
    backend: Backend = "auto",
    device: str | None = None,
    threads: int | None = None,
) -> BatchSignals:
    """pHash of every frame in a uint8 `[B, H, W, 3]` batch and, with `cell`, its luma cell sums."""
    b, h, w = check_frames(frames)
    if cell is not None:
        cell_grid(h, w, cell)  # a bad cell size is refused before any work
    if b == 0:
        empty = None if cell is None else np.empty((0, CHANNELS, *cell_grid(h, w, cell)), np.int32)
        return BatchSignals(np.empty(0, dtype=np.uint64), empty)
    chosen, dev = resolve_backend(frames, backend, device)
    if chosen == "native":
        if not isinstance(frames, np.ndarray):
            frames = frames.cpu().numpy()
        thumbs, cells = native_pass(frames, threads, cell)
    elif chosen == "torch":
        thumbs, cells = torch_pass(frames, dev, cell)
    else:
        raise ValueError(f"unknown pHash backend {backend!r} (auto, native, torch)")
    return BatchSignals(hash_thumbnails(thumbs), cells)


def phash_batch(
    frames: Any, *, backend: Backend = "auto", device: str | None = None, threads: int | None = None
) -> np.ndarray:
    """pHash of every frame in a uint8 `[B, H, W, 3]` batch, as a `[B]` uint64 numpy array."""
    return signals_batch(frames, backend=backend, device=device, threads=threads).hashes


def stacked(frames: list[np.ndarray]) -> np.ndarray:
    """Frames of one shape as one `[n, H, W, 3]` array: a view when they lie back to back in one
    buffer (the rows of one batch array, as `offer_many` receives them), else a copy (`np.stack`)."""
    first = frames[0]
    base, size = first.base, first.nbytes
    if base is not None and all(f.base is base and f.flags.c_contiguous for f in frames):
        start = first.__array_interface__["data"][0]
        if all(f.__array_interface__["data"][0] == start + i * size for i, f in enumerate(frames)):
            return np.lib.stride_tricks.as_strided(
                first, shape=(len(frames), *first.shape), strides=(size, *first.strides), writeable=False
            )
    return np.stack(frames)


def frame_signals(
    frames: list[np.ndarray], cell: Cell | None = None, **options: Any
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """pHash (and cell sums) of frames that may differ in size: one `signals_batch` call per size,
    results in input order."""
    hashes = np.empty(len(frames), dtype=np.uint64)
    cells: list[np.ndarray | None] = [None] * len(frames)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, frame in enumerate(frames):
        by_shape.setdefault(tuple(frame.shape), []).append(i)
    for indices in by_shape.values():
        got = signals_batch(stacked([frames[i] for i in indices]), cell=cell, **options)
        hashes[indices] = got.hashes
        if got.cells is not None:
            for i, frame_cells in zip(indices, got.cells, strict=True):
                cells[i] = frame_cells
    return hashes, cells


def hash_frames(frames: list[np.ndarray], **options: Any) -> np.ndarray:
    """pHash of frames that may differ in size: one `phash_batch` call per size, results in input order."""
    return frame_signals(frames, **options)[0]
