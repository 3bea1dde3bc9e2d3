"""The Ray-free screen reader: what text a processed frame (or its changed region) shows.

`ScreenReader.read_batch(requests)` crops each frame to its changed box plus a margin (the whole frame
for `first` / `phash` decisions), limits its size (huge frames are scaled down, empty or blank ones are
not read), runs OCR on the batch and normalizes each line (spacing restored against the request's
vocabulary, the tenant's, or the reader's own; codes intact). Of a region read only the lines centred
in the changed box are read (the margin's are the page around it), and a crop whose pixels were read
lately (a toast that shows again) is not read again (`cache_size` readings kept by content hash).
Boxes come back in frame pixels. Nothing raises: a frame that cannot be read (corrupt,
wrong shape, an OCR failure) gives an empty reading with `error` set, and is counted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from serve_app.lru import LRU
from serve_app.screen.normalize import Vocabulary, normalize_line
from serve_app.screen.ocr import OcrEngine, OcrLine

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ReaderLimits:
    margin: int = 12  # pixels around a changed box
    max_side: int = 1600  # longer sides are scaled down to this before reading
    max_pixels: int = 8_294_400  # a frame above this (3840x2160) is refused outright
    min_side: int = 8
    blank_std: float = 2.0  # luma standard deviation below which a crop holds no text
    min_confidence: float = 0.5


@dataclass(frozen=True)
class ReadRequest:
    frame: Any  # RGB uint8 HxWx3 (anything else is an error reading)
    box: Box | None = None  # the changed region; None: the whole frame
    origin: tuple[int, int] = (0, 0)  # `frame` is a crop whose top-left is here in the stream's frame
    whole_frame: bool | None = None  # what the reading reports; None: `box is None`
    stream_id: str = ""
    ts: float | None = None
    reason: str = ""
    seq: int = 0  # the order reads of a stream were submitted in (0: unordered)
    # a whole frame of a stream supersedes its older queued ones (screen shares); chat images: each is read
    supersedes: bool = True
    vocabulary: Vocabulary | None = None  # restores spacing (the tenant's); None: the reader's own


@dataclass(frozen=True)
class ScreenLine:
    text: str
    box: Box  # frame pixels
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "box": list(self.box), "confidence": self.confidence}


@dataclass
class Reading:
    lines: list[ScreenLine] = field(default_factory=list)
    region: Box | None = None  # what was read, frame pixels (None: nothing was)
    whole_frame: bool = False
    ms: float = 0.0
    error: str | None = None
    stream_id: str = ""
    ts: float | None = None
    reason: str = ""
    seq: int = 0
    skipped: str | None = None  # "stale": not read, a newer whole frame of the stream superseded it

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)

    @property
    def chars(self) -> int:
        return sum(len(line.text) for line in self.lines)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lines"] = [line.to_dict() for line in self.lines]
        out["chars"] = self.chars
        return out


COMPACT_SHARE = 0.25  # a pHash send's changed box at most this share of the frame is also read alone


def compact(shape: tuple[int, ...], box: list[int] | tuple[int, ...]) -> bool:
    """Whether a changed box is a compact part of the frame (a toast, a dialog), not most of it: the
    hand-off reads it alone too (fast, what a turn about it waits for) when pHash sent the frame."""
    return box[2] * box[3] <= COMPACT_SHARE * shape[0] * shape[1]


def crop_box(shape: tuple[int, ...], box: Box | None, margin: int) -> Box:
    """The box grown by `margin` and clipped to the frame; the whole frame for None."""
    h, w = shape[:2]
    if box is None:
        return (0, 0, w, h)
    x, y, bw, bh = (int(v) for v in box)
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(w, x + bw + margin), min(h, y + bh + margin)
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def _frame(frame: Any) -> np.ndarray:
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"not an RGB uint8 frame: {array.dtype} {array.shape}")
    return array[:, :, :3]


@dataclass(frozen=True)
class _Prepared:
    crop: np.ndarray | None
    region: Box | None
    scale: float = 1.0
    area: Box | None = None
    error: str | None = None

    def key(self) -> bytes:
        """The crop's content (and what of it is read): a reading of equal pixels is the same."""
        assert self.crop is not None
        digest = hashlib.blake2b(self.crop.tobytes(), digest_size=16)
        digest.update(repr((self.crop.shape, self.area)).encode())
        return digest.digest()


class ScreenReader:
    """Reads frames in batches; `engine` is built lazily (first read) unless given."""

    def __init__(
        self,
        engine: OcrEngine | None = None,
        vocabulary: Vocabulary | None = None,
        limits: ReaderLimits = ReaderLimits(),
        engine_factory: Callable[[], OcrEngine] = OcrEngine,
        cache_size: int = 256,
    ):
        self._engine, self._factory = engine, engine_factory
        # readings of recent crops by content: a toast that shows again is not read again
        self._cache: LRU[bytes, list[OcrLine]] = LRU(cache_size)
        self.cache_size = cache_size
        self.cache_hits = 0
        self._lock = threading.RLock()
        self.vocabulary = vocabulary or Vocabulary()
        self.limits = limits
        self.reads = 0
        self.errors = 0
        self.empty = 0

    @property
    def engine(self) -> OcrEngine:
        with self._lock:  # region and whole-frame reads run in threads of their own
            if self._engine is None:
                self._engine = self._factory()
            return self._engine

    def _prepare(self, request: ReadRequest) -> _Prepared:
        """The crop to read (None: nothing to read), its region in frame pixels, its scale, error."""
        lim = self.limits
        frame = _frame(request.frame)
        h, w = frame.shape[:2]
        if h * w > lim.max_pixels:
            return _Prepared(None, (0, 0, w, h), error=f"frame of {w}x{h} is over {lim.max_pixels} pixels")
        x, y, cw, ch = crop_box(frame.shape, request.box, lim.margin)
        ox, oy = (int(v) for v in request.origin)
        region = (x + ox, y + oy, cw, ch)
        if min(cw, ch) < lim.min_side:
            return _Prepared(None, region)
        crop = frame[y : y + ch, x : x + cw]
        luma = crop[::2, ::2].astype(np.float32).mean(axis=2)
        if float(luma.std()) < lim.blank_std:
            return _Prepared(None, region)  # blank: nothing to read
        scale = min(1.0, lim.max_side / max(cw, ch))
        if scale < 1.0:
            size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
            crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.BILINEAR))
        area = None
        if request.box is not None:  # the changed box in crop pixels: the margin's lines are not read
            bx, by, bw, bh = (int(v) for v in request.box)
            area = tuple(round(v * scale) for v in (bx - x, by - y, bw, bh))
        return _Prepared(np.ascontiguousarray(crop), region, scale, area)

    def warm(self) -> float:
        """Builds the engine and runs detection and recognition once (onnxruntime's first run of a
        session is many times slower than the next); returns the seconds it took."""
        from PIL import ImageDraw

        started = time.perf_counter()
        image = Image.new("RGB", (360, 60), (250, 250, 250))
        ImageDraw.Draw(image).text((12, 20), "Sync failed: Error 0x80070005", fill=(20, 20, 20))
        self.engine.read([np.asarray(image)])
        return time.perf_counter() - started

    def read(self, request: ReadRequest) -> Reading:
        return self.read_batch([request])[0]

    def read_batch(self, requests: list[ReadRequest]) -> list[Reading]:
        started = time.perf_counter()
        readings = [
            Reading(
                stream_id=r.stream_id,
                ts=r.ts,
                reason=r.reason,
                whole_frame=r.box is None if r.whole_frame is None else r.whole_frame,
                seq=r.seq,
            )
            for r in requests
        ]
        todo: list[tuple[int, _Prepared, bytes]] = []
        for n, request in enumerate(requests):
            try:
                prepared = self._prepare(request)
            except Exception as exc:  # a corrupt frame is an empty reading, never a failed turn
                prepared = _Prepared(None, None, error=f"{type(exc).__name__}: {exc}")
            readings[n].region, readings[n].error = prepared.region, prepared.error
            if prepared.crop is None:
                continue
            key = prepared.key()
            with self._lock:
                if (cached := self._cache.lookup(key)) is not None:
                    self.cache_hits += 1
            if cached is not None:
                readings[n].lines = self._lines(cached, prepared.region, prepared.scale, request.vocabulary)
            else:
                todo.append((n, prepared, key))
        if todo:
            try:
                found = self.engine.read([p.crop for _, p, _ in todo], [p.area for _, p, _ in todo])
            except Exception as exc:
                log.warning("OCR failed on a batch of %d", len(todo), exc_info=True)
                found = None
                for n, *_ in todo:
                    readings[n].error = f"ocr: {type(exc).__name__}: {exc}"[:300]
            for (n, prepared, key), lines in zip(todo, found or [[] for _ in todo], strict=True):
                readings[n].lines = self._lines(
                    lines, prepared.region, prepared.scale, requests[n].vocabulary
                )
                if found is not None and self.cache_size > 0:
                    with self._lock:
                        self._cache.put(key, lines)
        elapsed = (time.perf_counter() - started) * 1000
        with self._lock:
            for reading in readings:
                reading.ms = round(elapsed, 2)
                self.reads += 1
                self.errors += reading.error is not None
                self.empty += not reading.lines
        return readings

    def _lines(
        self, lines: list[OcrLine], region: Box, scale: float, vocabulary: Vocabulary | None = None
    ) -> list[ScreenLine]:
        out = []
        for line in lines:
            if line.confidence < self.limits.min_confidence:
                continue
            text = normalize_line(line.text, vocabulary or self.vocabulary)
            if not text:
                continue
            x, y, w, h = line.box
            box = (
                region[0] + round(x / scale),
                region[1] + round(y / scale),
                round(w / scale),
                round(h / scale),
            )
            out.append(ScreenLine(text, box, line.confidence))
        return out

    def stats(self) -> dict[str, int]:
        return {
            "reads": self.reads,
            "errors": self.errors,
            "empty": self.empty,
            "cache_hits": self.cache_hits,
        }
