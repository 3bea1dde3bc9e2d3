"""Pillow's LANCZOS resampling plan for a 32x32 pHash thumbnail, computed exactly as Pillow does.

Owns the fixed-point filter tables (weights, bounds) and the pass order that Pillow 13 picks, so that
the native and torch kernels reproduce `Image.convert("L").resize((32, 32), LANCZOS)` bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

THUMB = 32  # imagehash.phash: hash_size 8 * highfreq_factor 4
PRECISION_BITS = 22  # Pillow: 32 - 8 - 2
LANCZOS_SUPPORT = 3.0


@dataclass(frozen=True)
class AxisFilter:
    """Fixed-point weights for one axis: `weights[o, t]` applies to input `bounds[o, 0] + t`."""

    weights: np.ndarray  # int32 [THUMB, ksize]
    bounds: np.ndarray  # int32 [THUMB, 2]: first input index, number of taps

    def dense(self, in_size: int) -> np.ndarray:
        """The same filter as a dense int64 matrix [THUMB, in_size] (for matmul kernels)."""
        mat = np.zeros((THUMB, in_size), dtype=np.int64)
        for out, (first, taps) in enumerate(self.bounds):
            mat[out, first : first + taps] = self.weights[out, :taps]
        return mat


@dataclass(frozen=True)
class ResamplePlan:
    """Everything needed to shrink an H x W gray image to 32x32 like Pillow."""

    height: int
    width: int
    horizontal: AxisFilter | None  # None when width == 32 (Pillow skips the pass)
    vertical: AxisFilter | None  # None when height == 32
    vertical_first: bool


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3)
    return 0.0


def _fixed_point(value: float) -> int:
    scaled = value * (1 << PRECISION_BITS)
    return int(-0.5 + scaled) if value < 0 else int(0.5 + scaled)


def axis_filter(in_size: int, out_size: int = THUMB) -> AxisFilter:
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for a full-image box, in the same float order."""
    scale = float(np.float32(in_size)) / out_size  # box edges are C floats in Pillow
    filterscale = max(scale, 1.0)
    support = LANCZOS_SUPPORT * filterscale
    ksize = math.ceil(support) * 2 + 1
    weights = np.zeros((out_size, ksize), dtype=np.int32)
    bounds = np.zeros((out_size, 2), dtype=np.int32)
    inv = 1.0 / filterscale
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        taps = min(int(center + support + 0.5), in_size) - first
        raw = [_lanczos((t + first - center + 0.5) * inv) for t in range(taps)]
        total = 0.0
        for w in raw:
            total += w
        for t, w in enumerate(raw):
            weights[out, t] = _fixed_point(w / total if total != 0.0 else w)
        bounds[out] = (first, taps)
    return AxisFilter(weights=weights, bounds=bounds)


@lru_cache(maxsize=64)
def plan_for(height: int, width: int) -> ResamplePlan:
    """The resampling plan for one frame size (cached: a stream keeps its size)."""
    if height < 1 or width < 1:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    # Pillow 13 runs the vertical pass first when it shrinks rows much more than columns
    # (measured against Pillow over every size pair from 4 to 400; see tests/test_phash_exact.py).
    both = height != THUMB and width != THUMB
    vertical_first = both and height > THUMB and (height - THUMB) > 2 * (width - THUMB)
    return ResamplePlan(
        height=height,
        width=width,
        horizontal=axis_filter(width) if width != THUMB else None,
        vertical=axis_filter(height) if height != THUMB else None,
        vertical_first=vertical_first,
    )
