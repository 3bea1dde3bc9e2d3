"""Per-stream screen state: the text on screen now, and what appeared since the last turn.

A whole-frame reading replaces a stream's lines; a region reading replaces the lines that overlapped
the region it read. Readings may land out of order (region reads go before whole frames): by the frames'
timestamps (else the order reads were submitted in, `seq`), a whole frame keeps the lines of newer
region reads that already landed, and a region reading older than the last whole frame adds to what
appeared, not to the current text.
`turn()` returns the screen context for a turn (current text, text that appeared
since the previous turn) and starts a new "since"; it waits at most `wait_s` for reads of the stream
still running, then answers with what has landed.

What appeared is kept per read (`ScreenChange`: the lines of one changed box, or the new lines of a whole
frame, with the frame's timestamp and when the read landed), newest read first: a turn's question is
grounded on what changed, not on the whole of a busy screen (`context.query_lines`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Any

from serve_app.lru import LRU
from serve_app.screen.reader import Box, Reading, ScreenLine


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


@dataclass
class ScreenChange:
    """The lines one read found new: those of a changed box (a region read), or of a whole frame the
    stream's screen did not show before; `ts` is the frame's, `read_at` when the read landed (epoch s)."""

    lines: list[str]
    whole_frame: bool
    ts: float | None = None
    read_at: float = 0.0
    box: Box | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "whole_frame": self.whole_frame,
            "ts": self.ts,
            "read_at": round(self.read_at, 3),
            "box": None if self.box is None else list(self.box),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScreenChange:
        box = data.get("box")
        return cls(
            [str(x) for x in data.get("lines", [])],
            bool(data.get("whole_frame", False)),
            None if data.get("ts") is None else float(data["ts"]),
            float(data.get("read_at", 0.0)),
            None if box is None else (int(box[0]), int(box[1]), int(box[2]), int(box[3])),
        )


@dataclass
class ScreenContext:
    """What a turn gets: the screen's text now and the lines that appeared since the last turn (newest
    read first; each read's lines in screen order), with the reads they came from (`changes`)."""

    current: list[str] = field(default_factory=list)
    appeared: list[str] = field(default_factory=list)
    reads: int = 0
    pending: int = 0  # reads still running when the turn stopped waiting
    waited_ms: float = 0.0
    # reads landed since the last turn, for the cost ledger: (latency ms, characters, failed, whole frame)
    usage: list[tuple[float, int, bool, bool]] = field(default_factory=list)
    changes: list[ScreenChange] = field(default_factory=list)  # newest first
    read_at: float | None = None  # when the newest read of the stream landed (epoch s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "appeared": self.appeared,
            "reads": self.reads,
            "pending": self.pending,
            "waited_ms": round(self.waited_ms, 1),
            "usage": [list(u) for u in self.usage],
            "changes": [c.to_dict() for c in self.changes],
            "read_at": self.read_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ScreenContext:
        data = data or {}
        return cls(
            [str(x) for x in data.get("current", [])],
            [str(x) for x in data.get("appeared", [])],
            int(data.get("reads", 0)),
            int(data.get("pending", 0)),
            float(data.get("waited_ms", 0.0)),
            [(float(u[0]), int(u[1]), bool(u[2]), bool(u[3])) for u in data.get("usage", [])],
            [ScreenChange.from_dict(c) for c in data.get("changes", [])],
            None if data.get("read_at") is None else float(data["read_at"]),
        )

    def __bool__(self) -> bool:
        return bool(self.current or self.appeared)


_Order = tuple[float | None, int]


def _order(reading: Reading) -> _Order:
    return (reading.ts, reading.seq)


def _before(a: _Order, b: _Order) -> bool:
    """Whether `a` read an older frame than `b`: by frame timestamp where both have one, else by the
    order the reads were submitted in (`seq`; 0, unordered, is never older)."""
    if a[0] is not None and b[0] is not None and a[0] != b[0]:
        return a[0] < b[0]
    return bool(a[1] and b[1] and a[1] < b[1])


def _newest_first(changes: list[ScreenChange], orders: list[_Order]) -> list[ScreenChange]:
    """The changes, the newest frame's first (by frame timestamp, else submission order; reads that
    cannot be ordered so, by when they landed)."""
    landed = list(range(len(changes)))

    def compare(i: int, j: int) -> int:
        if _before(orders[i], orders[j]):
            return 1
        if _before(orders[j], orders[i]):
            return -1
        return j - i

    return [changes[i] for i in sorted(landed, key=functools.cmp_to_key(compare))]


@dataclass
class _Stream:
    lines: list[ScreenLine] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # texts on screen at the last turn
    changes: list[ScreenChange] = field(default_factory=list)  # since the last turn, as they landed
    orders: list[_Order] = field(default_factory=list)  # the frame order of each change's read
    read_at: float | None = None  # when the newest read landed (epoch s)
    usage: list[tuple[float, int, bool, bool]] = field(default_factory=list)  # unbilled reads
    digests: set[str] = field(default_factory=set)  # chat images already read for this key
    reads: int = 0
    frame_order: _Order | None = None  # of the newest whole-frame reading that landed
    regions: list[tuple[_Order, Box]] = field(default_factory=list)  # (order, region) of recent region reads
    pending: list[float] = field(default_factory=list)  # when each running read started (monotonic)
    changed: asyncio.Event | None = None
    touched: float = field(default_factory=time.monotonic)


class ScreenStore:
    """Screen state of many streams (least recently used dropped past `max_streams`)."""

    def __init__(self, max_streams: int = 10_000, max_lines: int = 200, stale_s: float = 30.0):
        self.max_streams, self.max_lines, self.stale_s = max_streams, max_lines, stale_s
        self._streams: LRU[str, _Stream] = LRU(max_streams)

    def _get(self, stream_id: str) -> _Stream:
        state = self._streams.get(stream_id)
        if state is None:
            state = _Stream()
        self._streams.put(stream_id, state)
        state.touched = time.monotonic()
        return state

    def started(self, stream_id: str) -> None:
        """A read of the stream was handed off; `turn` waits for it (a little)."""
        self._get(stream_id).pending.append(time.monotonic())

    def landed(self, reading: Reading, started: bool = True) -> None:
        """A reading arrived (`started`: it was announced with `started`)."""
        state = self._get(reading.stream_id)
        if started and state.pending:
            state.pending.pop(0)
        if reading.skipped:  # not read: nothing landed, nothing to bill
            if state.changed is not None:
                state.changed.set()
            return
        state.reads += 1
        state.usage = [
            *state.usage,
            (reading.ms, reading.chars, reading.error is not None, reading.whole_frame),
        ]
        state.usage = state.usage[-1000:]
        if reading.region is not None and reading.error is None:
            self._place(state, reading)
            state.read_at = time.time()
            self._appeared(state, reading)
        if state.changed is not None:
            state.changed.set()

    def _appeared(self, state: _Stream, reading: Reading) -> None:
        """The reading's lines not on screen at the last turn nor already appeared, as one change."""
        known = state.seen | {text for c in state.changes for text in c.lines}
        new = list(dict.fromkeys(ln.text for ln in reading.lines if ln.text not in known))
        if not new:
            return
        change = ScreenChange(new, reading.whole_frame, reading.ts, state.read_at or 0.0, reading.region)
        state.changes, state.orders = [*state.changes, change], [*state.orders, _order(reading)]
        while sum(len(c.lines) for c in state.changes) > self.max_lines and len(state.changes) > 1:
            state.changes.pop(0)
            state.orders.pop(0)

    def _place(self, state: _Stream, reading: Reading) -> None:
        """The reading's lines into the stream's current text, in the order of the frames they read."""
        assert reading.region is not None
        order = _order(reading)
        if reading.whole_frame:
            if state.frame_order is not None and _before(order, state.frame_order):
                return  # a newer whole frame already landed
            newer = [r for o, r in state.regions if _before(order, o)]  # regions of later frames
            kept = [ln for ln in state.lines if any(_overlaps(ln.box, r) for r in newer)]
            lines = [ln for ln in reading.lines if not any(_overlaps(ln.box, r) for r in newer)]
            state.lines = [*kept, *lines]
            state.frame_order = order
        else:
            if state.frame_order is not None and _before(order, state.frame_order):
                return  # older than the whole frame on show: it appeared, it is not on screen now
            state.regions = [*state.regions, (order, reading.region)][-50:]
            state.lines = [ln for ln in state.lines if not _overlaps(ln.box, reading.region)]
            state.lines = [*state.lines, *reading.lines]
        state.lines = state.lines[-self.max_lines :]
        state.lines.sort(key=lambda ln: (ln.box[1], ln.box[0]))

    def forget(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)

    def peek(self, stream_id: str) -> ScreenContext:
        state = self._streams.get(stream_id)
        if state is None:
            return ScreenContext()
        # what appeared stays even if it has gone since (a toast that closed before the question);
        # newest read first
        changes = _newest_first(state.changes, state.orders)
        appeared = [text for c in changes for text in c.lines]
        return ScreenContext(
            [ln.text for ln in state.lines],
            appeared,
            state.reads,
            len(state.pending),
            changes=changes,
            read_at=state.read_at,
        )

    async def turn(self, stream_id: str, wait_s: float = 0.3) -> ScreenContext:
        """The turn's screen context; waits up to `wait_s` for reads still running."""
        started = time.perf_counter()
        state = self._get(stream_id)
        deadline = started + max(0.0, wait_s)
        stale = time.monotonic() - self.stale_s  # a read lost with its replica is not waited for
        state.pending = [t for t in state.pending if t > stale]
        while state.pending and (left := deadline - time.perf_counter()) > 0:
            state.changed = state.changed or asyncio.Event()
            state.changed.clear()
            try:
                await asyncio.wait_for(state.changed.wait(), left)
            except TimeoutError:
                break
        context = self.peek(stream_id)
        context.waited_ms = (time.perf_counter() - started) * 1000
        context.usage, state.usage = state.usage, []
        state.seen = set(context.current)
        state.changes, state.orders = [], []
        return context

    def first_sight(self, stream_id: str, digest: str) -> bool:
        """True the first time `digest` (a chat image) is seen for `stream_id`."""
        state = self._get(stream_id)
        if digest in state.digests:
            return False
        state.digests.add(digest)
        return True

    def __len__(self) -> int:
        return len(self._streams)
