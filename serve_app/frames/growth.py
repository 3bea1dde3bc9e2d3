"""Text that grows is not news by itself: the test a region change must fail before it is sent.

A log, a terminal, a chat sidebar or an editor gets text a few lines at a time; the region signal sees
a box a content area wide and one to four text lines high (976 x 42 at the bottom of the content, 448 x
82 for three log lines) and, alone, would send a frame for each. A toast, a banner, a dialog or an
inline form error can take the same size, so the test reads what changed inside the box, from the
region thumbnail the detector already has (the cells' luma and colourfulness means, 2 pixels tall and
`tile` wide, now and in the reference). Only a change that passes all of these is dropped:

- **size**: at most `max_height` pixels tall (a few text lines with the windows' overlap). A dialog, a
  screenful of scrolled text, a tab's page are taller;
- **background kept**: the box's dominant luma and colourfulness (the mode of the cells, in 16-level
  bins) are the same now as in the reference, covered at least `BLANK_SHARE` of the cells in the
  reference (the text went where the page was blank: a page scrolled text over text is not growth) and
  still cover at least `BACKGROUND_SHARE` of them: ink was added on the page. A banner or a toast
  filled with its own colour changes the dominant level;
- **no colour added**: the cells' colourfulness rose by less than `colour` levels at the 90th
  percentile: grey, white or a terminal's muted ink, not a red error line (whose strokes take about
  a third of a cell: a red of colourfulness 180 adds 60);
- **text lines**: the changed cells form rows of ink (strip rows with at least `INK_CELLS` changed
  cells) separated by gaps back to the page, each row of ink at most `line_h` pixels tall. A white
  toast or a dialog on a white page is a box whose sides join its rows into one; a form field with its
  border turning red is one too; a button's fill is taller than a line;
- **no rule**: no strip row holds a run of `rule_w` pixels of changed cells whose current means step by
  at most `RULE_STEP` levels from cell to cell. A border, a shadow, a separator or a fill paints such
  a run; a line of text never does (its cells' ink varies with the glyphs).

Anything else is sent as before, including a box that holds a toast beside a new log line (their boxes
join, and the toast's border is a rule). The test reads the box's cells only, after the detector found
a region, so it costs nothing on the frames where nothing changed; it runs on the C detector's output
and on the numpy definition alike, so both keep identical decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]
CELL_H = 2
BINS = 16  # bins of 16 levels (>> 4) when the dominant level is compared
_CHANNEL_BINS = np.array([0, BINS], np.uint8)[:, None, None]  # colourfulness's bins after luma's
BACKGROUND_SHARE = 0.3  # the dominant level covers at least this share of the box's cells, now
BLANK_SHARE = 0.75  # and covered at least this share of them before: the text went where the page was blank
INK_CELLS = 3  # a strip row with this many changed cells is ink (a cursor or a caret beside is not)
RULE_STEP = 3.0  # neighbouring cells of a rule differ by at most this many levels (JPEG moves 1-2)


@dataclass(frozen=True)
class GrowthShape:
    """What text that grows may look like: `max_height` 0 turns the test off (everything is sent)."""

    max_height: int = 120
    colour: float = 22.0
    line_h: int = 24
    rule_w: int = 160
    changed: float = 8.0  # a cell's mean moved this many levels: it changed (the region's threshold)


def _cells(box: Box, tile: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    x, y, w, h = box
    return slice(y // CELL_H, min(shape[1], -(-(y + h) // CELL_H))), slice(
        x // tile, min(shape[2], -(-(x + w) // tile))
    )


def _modes(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel of uint8 cells [2, rows, cols], the most common bin and the share of cells in it."""
    counts = np.bincount(((cells >> 4) + _CHANNEL_BINS).ravel(), minlength=2 * BINS).reshape(2, BINS)
    return counts.argmax(axis=1), counts.max(axis=1) / max(1, cells[0].size)


def _background_kept(now: np.ndarray, then: np.ndarray) -> bool:
    before, blank = _modes(then)
    after, share = _modes(now)
    return bool(
        np.all(before == after) and np.all(share >= BACKGROUND_SHARE) and np.all(blank >= BLANK_SHARE)
    )


def _colour_added(now: np.ndarray, then: np.ndarray, colour: float) -> bool:
    rise = (now[1] - then[1]).ravel()
    k = (rise.size - 1) * 9 // 10  # the 90th percentile's rank (partition: cheaper than percentile)
    return float(np.partition(rise, k)[k]) >= colour


def _has_run(mask: np.ndarray, run: int) -> bool:
    """Whether some row of the boolean `mask` [rows, n] holds `run` consecutive True values."""
    if mask.shape[1] < run:
        return False
    counts = np.zeros((mask.shape[0], mask.shape[1] + 1), np.int32)
    np.cumsum(mask, axis=1, out=counts[:, 1:])
    return bool(np.any(counts[:, run:] - counts[:, :-run] == run))


def _lines_of_text(changed: np.ndarray, line_strips: int) -> bool:
    """Whether the rows of ink (strip rows with INK_CELLS changed cells) come in runs of at most
    `line_strips` strips, each run ended by a gap back to the page."""
    ink = np.count_nonzero(changed, axis=1) >= INK_CELLS
    return bool(ink.any()) and not _has_run(ink[None], line_strips + 1)


def _has_rule(now: np.ndarray, changed: np.ndarray, run: int) -> bool:
    """Whether a strip row holds `run` changed cells in a row whose means (luma and colourfulness) step
    by at most RULE_STEP levels from each to the next."""
    if run < 2:
        return False
    steps = np.max(np.abs(np.diff(now, axis=2)), axis=0) <= RULE_STEP
    return _has_run(steps & changed[:, 1:] & changed[:, :-1], run - 1)


def text_growth(means: np.ndarray, reference: np.ndarray, box: Box, tile: int, shape: GrowthShape) -> bool:
    """Whether the change in `box` is text added on an unchanged background (see the module).
    `means`: [2, strips, cols] strip means now (luma, colourfulness; uint8, or values in 0-255 taken as
    uint8); `reference`: uint8 the same shape, of the stream's last processed frame."""
    if shape.max_height <= 0 or box[3] > shape.max_height:
        return False
    rows, cols = _cells(box, tile, means.shape)
    now, then = means[:, rows, cols].astype(np.uint8), reference[:, rows, cols]
    if now.size == 0 or not _background_kept(now, then):
        return False
    now, then = now.astype(np.int16), then.astype(np.int16)
    if _colour_added(now, then, shape.colour):
        return False
    changed = np.max(np.abs(now - then), axis=0) >= shape.changed
    if not _lines_of_text(changed, -(-shape.line_h // CELL_H)):
        return False
    # at least two cells: a rule narrower than a cell would otherwise turn the test off
    return not _has_rule(now, changed, max(2, -(-shape.rule_w // tile)))
