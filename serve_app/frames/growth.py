"""Text that grows is not news by itself: the test a region change must fail before it is sent.

A log, a terminal, a chat sidebar or an editor gets text a line or two at a time; the region signal sees
a box a content area wide and one or two text lines high (976 x 42 at the bottom of the content) and,
alone, would send a frame for each. A toast, a banner, a dialog or an inline form error can take the same
width, so the test reads what changed inside the box, from the region thumbnail the detector already has
(the cells' luma and colourfulness means, now and in the reference):

- **shape**: at most `max_height` pixels tall (two text lines with the windows' overlap). A toast, a
  dialog, an inline error with its field (the border turns red) are taller;
- **background kept**: the box's dominant luma and colourfulness (the mode of the cells, in 16-level
  bins) are the same now as in the reference, covered at least `BLANK_SHARE` of the cells in the
  reference (the text went where the page was blank: a page scrolled text over text is not growth) and
  still cover at least `BACKGROUND_SHARE` of them: ink was added on the page. A banner or a toast
  filled with its own colour changes the dominant level;
- **no colour added**: the cells' colourfulness rose by less than `colour` levels at the 90th
  percentile: grey, white or a terminal's muted ink, not a red error line (whose strokes take about
  a third of a cell: a red of colourfulness 180 adds 60).

Only a change that passes all three is dropped; anything else (and a box that holds a toast beside a
new log line: their boxes join) is sent as before. The test reads the box's cells only, after the
detector found a region, so it costs nothing on the frames where nothing changed.
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]
CELL_H = 2
BIN = 16  # levels per bin when the dominant level is compared
BACKGROUND_SHARE = 0.3  # the dominant level covers at least this share of the box's cells, now
BLANK_SHARE = 0.75  # and covered at least this share of them before: the text went where the page was blank


def _cells(box: Box, tile: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    x, y, w, h = box
    return slice(y // CELL_H, min(shape[1], -(-(y + h) // CELL_H))), slice(
        x // tile, min(shape[2], -(-(x + w) // tile))
    )


def _mode(values: np.ndarray) -> tuple[int, float]:
    """The most common bin of values in 0-255 (strip means of uint8 pixels) and the share in it."""
    counts = np.bincount(values.astype(np.int64).ravel() // BIN, minlength=256 // BIN)
    best = int(np.argmax(counts))
    return best, float(counts[best] / max(1, values.size))


def text_growth(
    means: np.ndarray, reference: np.ndarray, box: Box, tile: int, max_height: int, colour: float
) -> bool:
    """Whether the change in `box` is text added on an unchanged background (see the module).
    `means`: float [2, strips, cols] strip means now (luma, colourfulness); `reference`: uint8 the same
    shape, of the stream's last processed frame."""
    if max_height <= 0 or box[3] > max_height:
        return False
    rows, cols = _cells(box, tile, means.shape)
    now = means[:, rows, cols]
    then = reference[:, rows, cols].astype(np.float32)
    if now.size == 0:
        return False
    for channel in (0, 1):
        before, blank = _mode(then[channel])
        after, share = _mode(now[channel])
        if before != after or share < BACKGROUND_SHARE or blank < BLANK_SHARE:
            return False
    rise = (now[1] - then[1]).ravel()
    k = (rise.size - 1) * 9 // 10  # the 90th percentile's rank (partition: cheaper than percentile)
    return float(np.partition(rise, k)[k]) < colour
