"""ScreenReader deployment: OCR of the frames FrameDedup sends on, and each stream's screen text.

FrameDedup hands each processed frame off without waiting (`ScreenHandOff`): the changed region (plus a
margin) for a `region` decision, the whole frame for `first` / `phash`, so the reader's cost follows the
dedup, not the frame rate. Region reads and whole-frame reads have a batch queue each and a thread each
(`serve_app.screen.queues`), so a region read (what a turn waits for) never queues behind a whole-frame
read of seconds; the whole-frame thread runs at a lower CPU priority, and a whole-frame read of a stream
that a newer whole frame of the stream superseded before it started is dropped (`stale`). A turn's
`turn()` call is answered while OCR runs; it waits at most `screen.turn_wait_s` for a read of its stream
still running. Calls name `stream_id` so the stream-affinity router keeps a stream on one replica.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from ray.serve.handle import DeploymentHandle

from serve_app.db.database import Database
from serve_app.metrics import Metrics
from serve_app.screen.normalize import Vocabulary
from serve_app.screen.ocr import OcrEngine
from serve_app.screen.queues import ReadQueues
from serve_app.screen.reader import ReaderLimits, Reading, ReadRequest, ScreenReader, compact, crop_box
from serve_app.screen.state import ScreenStore
from serve_app.screen.tenant_vocabulary import TenantVocabularies
from serve_app.screen.vocabulary import vocabulary_texts
from serve_app.settings import DatabaseSettings, DeploymentResources, ScreenSettings
from serve_app.tenancy import parse_stream_id, validate_tenant_id

log = logging.getLogger("ray.serve")
MAX_CHAT_IMAGE_PIXELS = 3840 * 2160
VOCABULARY_WAIT_S = 0.1  # a read waits this long for its tenant's vocabulary (then the last one built)


def tenant_of(key: str) -> str | None:
    """The tenant of a stream id (`tenant_<t>_<room>...`) or of a chat key (`chat:<t>:<anchor>`)."""
    if key.startswith("chat:"):
        tenant = key.split(":")[1]
        try:
            return validate_tenant_id(tenant)
        except Exception:
            return None
    try:
        return parse_stream_id(key).tenant_id
    except Exception:
        return None


class ScreenReaderDeployment:
    def __init__(
        self,
        cfg: ScreenSettings,
        db: DatabaseSettings | None = None,
        state_dir: Path | None = None,
        engine_factory: Callable[[], Any] | None = None,
        niceness: int = 5,
    ):
        """`niceness`: how far below the replica's priority its whole-frame reads run."""
        self.cfg = cfg
        vocab = Vocabulary().add(vocabulary_texts(cfg.vocabulary))
        # each tenant's ingested help center adds its words (read under RLS, cached, rebuilt on ingest)
        self.vocabularies = TenantVocabularies(
            Database(db, state_dir or Path(".supportgraph")) if db is not None else None,
            vocab,
            refresh_s=cfg.vocabulary_refresh_s,
        )
        self.reader = ScreenReader(
            vocabulary=vocab,
            limits=ReaderLimits(margin=cfg.margin, max_side=cfg.max_side),
            engine_factory=engine_factory or (lambda: OcrEngine(device=cfg.device, threads=cfg.threads)),
        )
        self.store = ScreenStore(max_streams=cfg.max_streams)
        self.metrics = Metrics.ray()
        # region reads and whole frames in queues (and threads) of their own: regions never wait behind
        # a whole frame, and a whole frame superseded by a newer one of its stream is not read
        self.queues = ReadQueues(
            self.reader,
            cfg.max_batch_size,
            cfg.frame_batch_size,
            cfg.batch_wait_timeout_s,
            cfg.max_streams,
            frame_niceness=niceness,
        )
        if cfg.warm:
            log.info("screen reader warmed in %.1f s", self.reader.warm())

    async def read(
        self,
        stream_id: str,
        frame: np.ndarray,
        origin: tuple[int, int] = (0, 0),
        whole_frame: bool = True,
        reason: str = "",
        ts: float | None = None,
        box: tuple[int, int, int, int] | None = None,
        supersedes: bool = True,
    ) -> dict[str, Any]:
        """Read one frame (or the crop of one at `origin`) of a stream into its screen state; `box`, in
        `frame`'s pixels, is the changed region of a region read (lines outside it are not read);
        `supersedes`: a queued older whole frame of the stream is dropped once this one is queued."""
        self.store.started(stream_id)
        seq = self.queues.next_seq()
        try:
            vocabulary = await self.vocabularies.get(tenant_of(stream_id), VOCABULARY_WAIT_S)
            request = ReadRequest(
                frame,
                None if box is None else tuple(box),
                tuple(origin),
                whole_frame,
                stream_id=stream_id,
                ts=ts,
                reason=reason,
                seq=seq,
                vocabulary=vocabulary,
                supersedes=supersedes,
            )
            reading = await self.queues.read(request)
        except Exception as exc:  # the stream's state must hear of every read it waits for
            reading = Reading(stream_id=stream_id, error=f"{type(exc).__name__}: {exc}"[:300], seq=seq)
        self.store.landed(reading)
        self._count(reading)
        return {
            "lines": len(reading.lines),
            "chars": reading.chars,
            "ms": reading.ms,
            "error": reading.error,
            "skipped": reading.skipped,
        }

    def _count(self, reading: Reading) -> None:
        tenant = tenant_of(reading.stream_id) or "chat"
        outcome = reading.skipped or ("error" if reading.error else ("text" if reading.lines else "empty"))
        self.metrics.inc("supportgraph_screen_reads", tenant=tenant, outcome=outcome)
        if reading.skipped:
            return
        self.metrics.inc("supportgraph_screen_characters", reading.chars, tenant=tenant)
        scope = "frame" if reading.whole_frame else "region"
        self.metrics.observe("supportgraph_screen_read_latency_ms", reading.ms, scope=scope)

    async def read_images(self, stream_id: str, images: list[bytes]) -> int:
        """Chat images (encoded) read as whole frames under `stream_id`, each once; returns how many
        new reads started (they run on; `turn` waits a little for them)."""
        started = 0
        for data in images:
            if not self.store.first_sight(stream_id, hashlib.sha256(data).hexdigest()):
                continue
            try:
                with Image.open(io.BytesIO(data)) as img:
                    if img.width * img.height > MAX_CHAT_IMAGE_PIXELS:
                        raise ValueError(f"image of {img.width}x{img.height} is too large to read")
                    frame = np.asarray(img.convert("RGB"))
            except Exception as exc:
                reading = Reading(stream_id=stream_id, error=f"{type(exc).__name__}: {exc}"[:300])
                self.store.landed(reading, started=False)
                self._count(reading)
                continue
            # each image of a message is read: none supersedes another as a screen share's frames do
            read = self.read(stream_id, frame, reason="image", supersedes=False)
            asyncio.get_running_loop().create_task(read)
            started += 1
        return started

    async def turn(self, stream_id: str, wait_s: float | None = None) -> dict[str, Any]:
        """The stream's screen context for a turn (current text, what appeared since the last turn)."""
        wait = self.cfg.turn_wait_s if wait_s is None else wait_s
        return (await self.store.turn(stream_id, wait)).to_dict()

    async def peek(self, stream_id: str) -> dict[str, Any]:
        return self.store.peek(stream_id).to_dict()

    async def close(self) -> None:
        await self.queues.close()
        if self.vocabularies.db is not None:
            await self.vocabularies.db.close()

    async def stats(self) -> dict[str, Any]:
        return {**self.reader.stats(), "stale": self.queues.stale, "streams": len(self.store)}


def reads_in_flight(reader: DeploymentResources, dedup: DeploymentResources, cap: int = 16) -> int:
    """The reads one FrameDedup replica may have in flight: all the dedup replicas together hold at most
    half of the readers' request slots (the other half stays free for turns' `context` calls), at most
    `cap` and at least 2 each. (Replica counts a Serve config file overrides are not seen here.)"""
    slots = reader.max_ongoing_requests * reader.num_replicas
    return max(2, min(cap, slots // (2 * dedup.num_replicas)))


class ScreenHandOff:
    """FrameDedup's side: each processed frame goes to the ScreenReader without being waited for.

    Reads in flight are bounded: when the reader falls behind (a burst of sends, OCR starved of CPU, a
    reader restarting), whole-frame reads are shed once half of `max_in_flight` are out, and changed-box
    reads (what a turn about a toast waits for) only at `max_in_flight`. Unbounded, every waiting call is
    a pending request that the handle's router keeps trying to place, which costs the FrameDedup replica
    CPU that its frame decisions need, and a reader whose request slots are all held by waiting reads
    has none left for a turn's `context` call. 16 a FrameDedup replica keeps a few replicas' reads under
    the reader's 64 slots; the graph sets it from the replica counts (`reads_in_flight`). `shed` counts
    the reads not sent, `failed` those that raised."""

    def __init__(
        self,
        handle: DeploymentHandle,
        margin: int = 12,
        max_in_flight: int = 16,
        read_timeout_s: float = 60.0,
    ):
        self.handle, self.margin, self.max_in_flight = handle, margin, max_in_flight
        self.read_timeout_s = read_timeout_s
        self._tasks: set[asyncio.Task] = set()
        self.failed = 0
        self.shed = 0
        self.timed_out = 0

    def offer(self, stream_id: str, frame: np.ndarray, decision: dict[str, Any]) -> None:
        """Hand a processed frame off: the changed box of a `region` decision; the whole frame of a
        `first` / `phash` one, and also, first, the changed box of a `phash` decision that has a compact
        one (a toast on a busy screen): the fast region read is what a turn about it waits for."""
        if not decision.get("send"):
            return
        box = decision.get("box")
        reason = str(decision.get("reason") or "")
        if box is not None and (reason == "region" or (reason == "phash" and compact(frame.shape, box))):
            self._hand(stream_id, frame, decision, box)
        if reason != "region":
            self._hand(stream_id, frame, decision, None)

    def _hand(
        self, stream_id: str, frame: np.ndarray, decision: dict[str, Any], box: list[int] | None
    ) -> None:
        if len(self._tasks) >= (self.max_in_flight // 2 if box is None else self.max_in_flight):
            self.shed += 1
            return
        x, y, w, h = crop_box(frame.shape, box, self.margin)
        crop = np.ascontiguousarray(frame[y : y + h, x : x + w])
        call = self.handle.read.remote(
            stream_id=stream_id,
            frame=crop,
            origin=(x, y),
            whole_frame=box is None,
            box=None if box is None else (box[0] - x, box[1] - y, box[2], box[3]),
            reason=str(decision.get("reason") or ""),
            ts=decision.get("ts"),
        )
        task = asyncio.get_running_loop().create_task(self._wait(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, int]:
        return {
            "in_flight": len(self._tasks),
            "max_in_flight": self.max_in_flight,
            "shed": self.shed,
            "failed": self.failed,
            "timed_out": self.timed_out,
        }

    async def _wait(self, call: Any) -> None:
        try:
            # a read still unanswered after `read_timeout_s` (a reader replica gone or wedged, which the
            # handle may keep trying to reach) gives its slot back: otherwise a few of them would hold
            # the bound for good and every later read would be shed
            await asyncio.wait_for(call, self.read_timeout_s)
        except TimeoutError:
            self.timed_out += 1
            cancel = getattr(call, "cancel", None)
            if cancel is not None:
                cancel()
            log.warning("screen read hand-off unanswered after %.0f s: given up", self.read_timeout_s)
        except Exception:  # a lost read costs the screen text of one change, never a frame decision
            self.failed += 1
            log.warning("screen read hand-off failed", exc_info=True)
