"""The region change signal beside pHash: which compact part of the screen changed since the stream's
last processed frame, and where.

pHash summarises the whole frame in 64 bits, so a toast, a banner or a red error line moves it by a few
bits only. This module owns the second, local signal the dedup reads:

- **Region thumbnail.** Two sums per cell of `tile` pixels wide and `CELL_H` = 2 pixels tall (the last
  row and column of cells cover what is left of the frame): of Pillow's integer luma
  `L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16` (the L the pHash kernel computes anyway) and of the
  colourfulness `max(R, G, B) - min(R, G, B)` (a grey field border turning a red of the same brightness
  moves only this one). int32 `[2, ceil(H / 2), ceil(W / tile)]`, from the same batched pass as the
  pHash (`phash.signals_batch`: C kernel or torch, identical integers). Adding up strips gives `tile` x
  `tile` mean windows at every 2-pixel vertical offset, so a text line never splits across two tile
  rows and fades.
- **Changed.** A window counts as changed when either mean differs from the reference (the stream's
  last processed frame) by at least `threshold` levels (JPEG noise moves a 256-pixel mean by 1-2).
  A vertical scroll of up to `max_shift` pixels is compensated first: the reference is also compared
  at the vertical offset (1-pixel steps, odd ones interpolated) under which the fewest windows differ,
  provided that offset explains at least half of them, each 2-pixel strip matching either offset (what
  scrolls, and what stays: title bars, taskbars, a toast floating over the page). Content the scroll
  revealed at the edges of the scrolled area is a band of windows at most `shift + 2 tile` pixels tall
  (a nudge of 1-2 px mid-way goes undetected), so a region must be taller than that.
- **Fresh.** A changed window must also have moved, beyond `FRESH_FLOOR`, against the previous sampled
  frame within the last `window_s` seconds. What piles up slowly since the last send (a line typed a
  few characters at a time, a clock) is old news in every window but the last few characters' and
  never adds up to a region.
- **Region.** Changed and fresh windows form 8-connected components; a component is a region change
  when its box is at least `min_width` pixels wide, or covers at least `min_area` square pixels. The
  cursor (12x20), the caret, a few typed characters, a clock's digits, a spinner (24 px) stay far below
  both; a tooltip (about 150x30, 100-190 wide in the generated clips) stays below both too, while an
  inline error (a red line under a field some 300 px wide, the field's border turning red) is wide and
  a toast (a few hundred px by 50-80) is wide. The width test is what separates the error line from
  the tooltip: they cover about the same area. The area test is for narrow but tall changes; it sits
  above what a tooltip and the cursor resting beside it cover together (about 224 x 110 windows).

`RegionState` keeps per stream the reference strip means (uint8 `[2, ceil(H / 2), ceil(W / tile)]`),
the previous sampled frame's tile means and when each tile last moved: about 80 KB for a 1280x720
stream at tile 16. A frame of another size than the stream's last is a region change of the whole frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import lru_cache

import numpy as np
from scipy import ndimage

from serve_app.frames.growth import GrowthShape, text_growth

try:
    from serve_app.frames import _phash_native
except ImportError:  # built by `pip install`; the numpy definition below decides the same without it
    _phash_native = None

CELL_H = 2  # pixel rows per cell: the vertical step of the sliding tiles and of scroll compensation
FRESH_FLOOR = 2.0  # levels a tile mean must move between sampled frames to count as touched
SCROLL_EXPLAINS = 0.5  # a shift counts as a scroll when it leaves at most this share of changed windows
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels


@dataclass
class RegionPolicy:
    """Thresholds of the region signal (shared by a replica's streams, changed live)."""

    enabled: bool = True
    tile: int = 16
    threshold: float = 8.0
    min_width: int = 240
    min_area: int = 32000
    window_s: float = 0.5
    max_shift: int = 12
    growth_max_h: int = 120  # a shorter change made of grey text lines is text growing (growth.py); 0: off
    growth_colour: float = 22.0
    growth_line_h: int = 24
    growth_rule_w: int = 160

    def __post_init__(self) -> None:
        if self.tile < CELL_H or self.tile % CELL_H:
            raise ValueError(f"region tile must be a positive multiple of {CELL_H} pixels, got {self.tile}")
        if self.threshold <= 0 or self.window_s < 0 or self.max_shift < 0:
            raise ValueError("region threshold must be positive, window and shift not negative")

    def update(self, other: RegionPolicy) -> None:
        """Take every threshold of `other` (in place: samplers hold this object)."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))

    @property
    def growth(self) -> GrowthShape:
        """What text that grows may look like (`growth.text_growth`)."""
        return GrowthShape(
            self.growth_max_h, self.growth_colour, self.growth_line_h, self.growth_rule_w, self.threshold
        )

    @property
    def cell(self) -> tuple[int, int]:
        """(width, height) of the cells the kernel sums over."""
        return (self.tile, CELL_H)


@dataclass(frozen=True)
class Thumb:
    """A frame's region thumbnail: luma and colourfulness sums per cell, with the frame size and tile."""

    sums: np.ndarray  # int32 [2, ceil(H / CELL_H), ceil(W / tile)]: luma, colourfulness
    height: int
    width: int
    tile: int

    @property
    def grid(self) -> Grid:
        return _grid(self.height, self.width, self.tile)

    @property
    def counts(self) -> np.ndarray:
        """Pixels per cell (edge cells are smaller)."""
        return self.grid.counts

    @property
    def per_tile(self) -> int:
        return self.tile // CELL_H

    def strip_means(self) -> np.ndarray:
        return self.sums / self.grid.counts


@dataclass(frozen=True)
class Grid:
    """The cell, window and tile layout of one frame size and tile (cached: a stream keeps its size)."""

    counts: np.ndarray  # float32 [strips, cols]: pixels per cell
    window_counts: np.ndarray  # float32 [windows, cols]: pixels per sliding window
    tile_edges: np.ndarray  # first strip of each non-overlapping tile row
    tile_counts: np.ndarray  # float32 [tile rows, cols]
    fresh_rows: tuple[np.ndarray, np.ndarray]  # the tile rows each window overlaps (first, last)
    k: int  # strips per window


@lru_cache(maxsize=64)
def _grid(height: int, width: int, tile: int) -> Grid:
    strips, cols = -(-height // CELL_H), -(-width // tile)
    rows = np.minimum(CELL_H, height - CELL_H * np.arange(strips))
    widths = np.minimum(tile, width - tile * np.arange(cols))
    counts = (rows[:, None] * widths[None, :]).astype(np.float32)
    k = min(tile // CELL_H, strips)
    edges = np.arange(0, strips, tile // CELL_H)
    tiles = len(edges)
    top = np.arange(strips - k + 1) * CELL_H
    first = np.minimum(top // tile, tiles - 1)
    last = np.minimum((top + tile - 1) // tile, tiles - 1)
    for array in (counts, edges, first, last):
        array.flags.writeable = False
    window_counts = _window_sums(counts[None], k)[0]
    tile_counts = np.add.reduceat(counts, edges, axis=0)
    return Grid(counts, window_counts, edges, tile_counts, (first, last), k)


def _window_sums(x: np.ndarray, k: int) -> np.ndarray:
    """[channels, strips, cols] -> sums of every `k` consecutive strips, [channels, strips - k + 1, cols]
    (by doubling: runs of 1, 2, 4, ... strips, then the rest)."""
    sums, span = np.asarray(x, dtype=np.float32), 1
    runs = {1: sums}
    while 2 * span <= k:
        runs[2 * span] = runs[span][:, :-span] + runs[span][:, span:]
        span *= 2
    n = x.shape[1] - k + 1
    out, done = runs[span][:, :n].copy(), span
    while done < k:  # k not a power of two: add the largest runs that fit
        step = max(r for r in runs if r <= k - done)
        out += runs[step][:, done : done + n]
        done += step
    return out


@dataclass(frozen=True)
class RegionChange:
    box: Box  # x, y, width, height in frame pixels: every qualifying component, together
    tiles: int  # changed windows in the qualifying components
    shift: int  # vertical scroll (pixels) compensated before comparing

    def to_list(self) -> list[int]:
        return list(self.box)


def _windows(sums: np.ndarray, grid: Grid) -> np.ndarray:
    """Per channel, means of windows of `grid.k` strips starting at every strip (one window when there
    are fewer): [channels, strips, cols] sums -> [channels, windows, cols]."""
    return _window_sums(sums, grid.k) / grid.window_counts


def _tile_means(thumb: Thumb) -> np.ndarray:
    """Per channel, means of the non-overlapping tiles (tile x tile), the grid freshness is kept on."""
    grid = thumb.grid
    return np.add.reduceat(thumb.sums, grid.tile_edges, axis=1) / grid.tile_counts


@dataclass
class RegionState:
    """One stream's region reference (its last processed frame) and freshness record."""

    height: int
    width: int
    tile: int
    reference: np.ndarray  # uint8 strip means of the last processed frame
    previous: np.ndarray  # uint8 tile means of the previous sampled frame
    changed_at: np.ndarray  # float32 seconds since `epoch` when each tile last moved past FRESH_FLOOR
    epoch: float
    pending: np.ndarray | None = field(default=None, repr=False)  # strip means of the frame being decided

    @classmethod
    def start(cls, thumb: Thumb, ts: float) -> RegionState:
        tiles = _tile_means(thumb)
        return cls(
            thumb.height,
            thumb.width,
            thumb.tile,
            _quantize(thumb.strip_means()),
            _quantize(tiles),
            np.full(tiles.shape[1:], -np.inf, np.float32),
            ts,
        )

    def fits(self, thumb: Thumb) -> bool:
        return (self.height, self.width, self.tile) == (thumb.height, thumb.width, thumb.tile)

    def commit(self) -> None:
        """The frame just decided was processed: it becomes the reference."""
        if self.pending is not None:
            self.reference = self.pending
        self.pending = None


def _quantize(means: np.ndarray) -> np.ndarray:
    """Means of uint8 values (so within 0-255) rounded to uint8. No clip: it cost a third of a decision."""
    return np.rint(means).astype(np.uint8)


def native_detector() -> bool:
    """Whether the C region detector (`_phash_native.region_observe`) is built."""
    return _phash_native is not None and hasattr(_phash_native, "region_observe")


class RegionDetector:
    """Compares a stream's frames with its reference under a `RegionPolicy` (stateless itself).

    `observe` runs the C port of `observe_numpy` when the extension is built (`native=None`), which
    computes the same values in the same types (float64 tile and strip means, float32 windows and
    differences, numpy's order for the sums that are not integers, the same components), so the
    decisions and boxes are identical (tests/test_region_native.py); `observe_numpy` is the definition.
    """

    def __init__(self, policy: RegionPolicy, native: bool | None = None):
        self.policy = policy
        self.native = native_detector() if native is None else native

    def observe(self, state: RegionState, thumb: Thumb, ts: float) -> RegionChange | None:
        """Update the freshness record with a sampled frame and say whether a region changed against
        the reference; `state.commit()` afterwards if the frame is processed."""
        if not self.native:
            return self.observe_numpy(state, thumb, ts)
        grid, policy = thumb.grid, self.policy
        now = ts - state.epoch
        pending = np.empty(state.reference.shape, np.uint8)
        found = _phash_native.region_observe(
            np.ascontiguousarray(thumb.sums, dtype=np.int32),
            state.reference,
            state.previous,
            state.changed_at,
            pending,
            grid.counts,
            grid.window_counts,
            grid.tile_counts,
            now,
            now - policy.window_s,
            policy.threshold,
            thumb.tile,
            thumb.height,
            thumb.width,
            policy.max_shift,
            policy.min_width,
            policy.min_area,
            SCROLL_EXPLAINS,
        )
        state.pending = pending
        if found is None:
            return None
        x, y, width, height, tiles, shift = found
        return self._news(state, thumb, RegionChange((x, y, width, height), tiles, shift))

    def _news(self, state: RegionState, thumb: Thumb, change: RegionChange) -> RegionChange | None:
        """The change, unless it is only text growing on the page (`growth.text_growth`)."""
        assert state.pending is not None
        if text_growth(state.pending, state.reference, change.box, thumb.tile, self.policy.growth):
            return None
        return change

    def observe_numpy(self, state: RegionState, thumb: Thumb, ts: float) -> RegionChange | None:
        """`observe` in numpy and scipy: the definition the C port is tested against."""
        tiles = _tile_means(thumb)
        touched = np.max(np.abs(tiles - state.previous), axis=0) >= FRESH_FLOOR
        state.changed_at[touched] = ts - state.epoch
        state.previous = _quantize(tiles)
        strips = thumb.strip_means()
        state.pending = _quantize(strips)
        fresh = _fresh_windows(state, thumb, ts - state.epoch - self.policy.window_s)
        if not fresh.any():
            return None  # nothing moved lately: nothing can qualify
        grid = thumb.grid
        current = _windows(thumb.sums, grid)
        reference = _windows(state.reference * grid.counts, grid)
        diff0 = np.max(np.abs(current - reference), axis=0)
        if self._qualifying(diff0 >= self.policy.threshold, fresh, thumb) is None:
            return None  # compensation only ever removes changes
        shift, diff = self._compensated(current, strips, state.reference, thumb, diff0)
        # content a scroll of s pixels revealed or hid at the edges of the scrolled area shows as a band
        # of windows at most s + 2 tiles tall (s of 1-2 px goes undetected mid-nudge): a region must be
        # taller than that
        min_height = round(abs(shift) * CELL_H) + 2 * thumb.tile + 1
        found = self._qualifying(diff >= self.policy.threshold, fresh, thumb, min_height)
        if found is None:
            return None
        box, tiles_changed = found
        return self._news(state, thumb, RegionChange(box, tiles_changed, round(shift * CELL_H)))

    def _compensated(
        self,
        current: np.ndarray,
        current_strips: np.ndarray,
        reference: np.ndarray,
        thumb: Thumb,
        diff0: np.ndarray,
    ) -> tuple[float, np.ndarray]:
        """The vertical offset (in cells; whole ones searched first, then the halves beside the best,
        interpolated) under which the fewest windows differ from the reference, each window compared at
        that offset or at 0 (fixed parts: title bars, taskbars), whichever is closer, and those
        differences."""
        steps = self.policy.max_shift // CELL_H
        grid = thumb.grid
        ref = _windows(reference * grid.counts, grid)
        threshold = self.policy.threshold
        unshifted = int(np.count_nonzero(diff0 >= threshold))
        best, best_changed, best_diff = 0.0, unshifted, diff0

        def compare(shift: float, windows: np.ndarray) -> None:
            nonlocal best, best_changed, best_diff
            # NaN where there is no shifted window: fmin keeps diff0 there
            diff = np.fmin(diff0, np.max(np.abs(current - windows), axis=0))
            if (changed := int(np.count_nonzero(diff >= threshold))) < best_changed:
                best, best_changed, best_diff = shift, changed, diff

        whole = {s: _shifted(ref, s) for s in range(-steps, steps + 1)}
        for shift in sorted(whole, key=abs)[1:]:
            compare(shift, whole[shift])
        around = int(best)
        for half in (around - 0.5, around + 0.5):
            lo = int(np.floor(half))
            if lo in whole and lo + 1 in whole and half != 0:
                compare(half, (whole[lo] + whole[lo + 1]) / 2)  # NaN where either is missing
        if best_changed > unshifted * SCROLL_EXPLAINS:
            return 0.0, diff0  # no scroll: a shift that explains little is chance (a moved box, a grid)
        return best, np.minimum(best_diff, self._per_strip(current_strips, reference, thumb, best))

    def _per_strip(self, strips: np.ndarray, reference: np.ndarray, thumb: Thumb, shift: float) -> np.ndarray:
        """Window differences when each 2-pixel strip may match the reference scrolled or not: windows
        that straddle what scrolls and what stays (a viewport edge, a toast or a chat button floating
        over a page) then differ only by what the scroll revealed."""
        below = _shifted(reference.astype(np.float32), int(np.floor(shift)))
        if shift != np.floor(shift):
            below = (below + _shifted(reference.astype(np.float32), int(np.floor(shift)) + 1)) / 2
        still = np.max(np.abs(strips - reference), axis=0)
        moved = np.max(np.abs(strips - below), axis=0)
        best = np.fmin(still, moved)  # NaN (nothing scrolled in there) -> as is
        grid = thumb.grid
        return _windows((best * grid.counts)[None], grid)[0]

    def _qualifying(
        self, changed: np.ndarray, fresh: np.ndarray, thumb: Thumb, min_height: int = 0
    ) -> tuple[Box, int] | None:
        """The box around every component big enough to be a region change, and its window count."""
        mask = changed & fresh
        if not mask.any():
            return None
        labels, _ = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        boxes = []
        for index, found in enumerate(ndimage.find_objects(labels), start=1):
            rows, cols = found
            x0, x1 = cols.start * thumb.tile, min(cols.stop * thumb.tile, thumb.width)
            y0 = rows.start * CELL_H
            y1 = min((rows.stop - 1) * CELL_H + thumb.tile, thumb.height)
            width, height = x1 - x0, y1 - y0
            big = width >= self.policy.min_width or width * height >= self.policy.min_area
            if big and height >= min_height:
                boxes.append((x0, y0, x1, y1, int(np.count_nonzero(labels[found] == index))))
        if not boxes:
            return None
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        return (x0, y0, x1 - x0, y1 - y0), sum(b[4] for b in boxes)


def _shifted(windows: np.ndarray, shift: int) -> np.ndarray:
    """`windows` [channels, rows, cols] moved up by `shift` rows (row j holds row j + shift), NaN where
    there is none."""
    out = np.full(windows.shape, np.nan, dtype=np.float32)
    n = windows.shape[1]
    lo, hi = max(0, -shift), min(n, n - shift)
    if hi > lo:
        out[:, lo:hi] = windows[:, lo + shift : hi + shift]
    return out


def _fresh_windows(state: RegionState, thumb: Thumb, since: float) -> np.ndarray:
    """Windows (sliding tiles) that overlap a tile touched after `since` (seconds since the epoch)."""
    fresh_tiles = state.changed_at >= since
    first, last = thumb.grid.fresh_rows
    return fresh_tiles[first] | fresh_tiles[last]


def whole_frame(height: int, width: int) -> RegionChange:
    """The change reported when a stream's frame size changes: all of it."""
    return RegionChange((0, 0, width, height), 0, 0)
