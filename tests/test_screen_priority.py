"""The ScreenReader deployment's queues, without Ray: a region read (what a turn waits for) never waits
behind whole-frame reads, and a whole frame superseded by a newer one of its stream is not read."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from deployments.screen_reader import ScreenReaderDeployment
from serve_app.metrics import Metrics
from serve_app.screen.ocr import OcrLine
from serve_app.settings import ScreenSettings

WHOLE_S, REGION_S = 0.6, 0.05


class _SlowEngine:
    """Reads a wide image (a whole frame) in WHOLE_S, a small one (a region) in REGION_S; each image
    reads as one line naming its first pixel's value."""

    def __init__(self) -> None:
        self.read_values: list[int] = []
        self._lock = threading.Lock()

    def read(self, images: list[np.ndarray], areas: list | None = None) -> list[list[OcrLine]]:
        out = []
        for image in images:
            time.sleep(WHOLE_S if image.shape[1] > 600 else REGION_S)
            with self._lock:
                self.read_values.append(int(image[0, 0, 0]))
            out.append([OcrLine(f"frame {int(image[0, 0, 0])}", (0, 0, 40, 10), 0.99)])
        return out


def _frame(value: int, width: int) -> np.ndarray:
    frame = np.random.default_rng(value).integers(0, 255, (120, width, 3), dtype=np.uint8)
    frame[0, 0] = value
    return frame


def test_region_reads_go_first_and_superseded_whole_frames_are_dropped() -> None:
    engine = _SlowEngine()
    metrics = Metrics.prometheus()
    stream, other = "tenant_t_desk-1.screen", "tenant_t_desk-2.screen"

    async def scenario() -> tuple[dict, list[str], dict, float]:
        dep = ScreenReaderDeployment(ScreenSettings(warm=False), engine_factory=lambda: engine)
        dep.metrics = metrics
        finished: list[str] = []

        def start(name: str, coro) -> asyncio.Task:
            task = asyncio.create_task(coro)
            task.add_done_callback(lambda _: finished.append(name))
            return task

        tasks = {"first": start("first", dep.read(other, _frame(1, 1280)))}
        await asyncio.sleep(0.2)  # the first whole frame is being read
        for n in (2, 3, 4):  # three whole frames of one stream queue behind it
            tasks[f"frame{n}"] = start(f"frame{n}", dep.read(stream, _frame(n, 1280)))
            await asyncio.sleep(0.01)
        tasks["region"] = start(
            "region",
            dep.read(stream, _frame(5, 200), origin=(900, 500), whole_frame=False, box=(12, 12, 176, 96)),
        )
        started = time.perf_counter()
        context = await dep.turn(stream, 0.3)
        waited = time.perf_counter() - started
        results = {name: await task for name, task in tasks.items()}
        await dep.close()
        return results, finished, context, waited

    results, finished, context, waited = asyncio.run(scenario())
    # the region read, submitted last, finished first (it waited for no whole frame)
    assert finished[0] == "region", finished
    assert results["region"]["lines"] == 1 and results["region"]["skipped"] is None
    # frames 2 and 3 were superseded by frame 4 before their read began: not read, not billed
    assert results["frame2"]["skipped"] == results["frame3"]["skipped"] == "stale"
    assert results["frame4"]["lines"] == 1 and results["first"]["lines"] == 1
    assert engine.read_values == [5, 1, 4]
    counted = {
        o: metrics.registry.get_sample_value("supportgraph_screen_reads_total", {"tenant": "t", "outcome": o})
        for o in ("text", "stale")
    }
    assert counted == {"text": 3.0, "stale": 2.0}
    chars = metrics.registry.get_sample_value("supportgraph_screen_characters_total", {"tenant": "t"})
    assert chars == 3 * len("frame 5")
    # the turn waited at most its 0.3 s for the whole frames still running, and had the region's text
    assert waited < 0.3 + 0.2 and context["waited_ms"] <= 300 + 100
    assert "frame 5" in context["current"] and context["pending"] >= 1


def test_a_whole_frame_landing_after_a_newer_region_keeps_the_region_text() -> None:
    from serve_app.screen.reader import Reading, ScreenLine
    from serve_app.screen.state import ScreenStore

    store = ScreenStore()
    old_toast = ScreenLine("Inbox", (900, 500, 100, 20), 0.9)
    page = ScreenLine("Notes", (10, 10, 100, 20), 0.9)
    toast = ScreenLine("Sync failed", (900, 500, 100, 20), 0.9)
    # whole frame submitted 1st, region 2nd; the region lands first
    store.landed(Reading([toast], region=(880, 480, 200, 80), stream_id="s", seq=2), False)
    store.landed(
        Reading([page, old_toast], region=(0, 0, 1280, 720), whole_frame=True, stream_id="s", seq=1), False
    )
    context = asyncio.run(store.turn("s", 0))
    assert context.current == ["Notes", "Sync failed"]
    # a region older than the whole frame on show: it appeared, it is not on screen
    store.landed(Reading([page], region=(0, 0, 1280, 720), whole_frame=True, stream_id="s", seq=4), False)
    store.landed(
        Reading(
            [ScreenLine("Saved", (900, 500, 90, 20), 0.9)], region=(880, 480, 200, 80), stream_id="s", seq=3
        ),
        False,
    )
    context = asyncio.run(store.turn("s", 0))
    assert context.current == ["Notes"] and context.appeared == ["Saved"]
    # frame timestamps order them where known: a whole frame of an earlier frame that arrived later
    store.landed(Reading([toast], region=(880, 480, 200, 80), stream_id="t", ts=2.0, seq=5), False)
    store.landed(
        Reading([page, old_toast], region=(0, 0, 1280, 720), whole_frame=True, stream_id="t", ts=1.0, seq=6),
        False,
    )
    assert asyncio.run(store.turn("t", 0)).current == ["Notes", "Sync failed"]


class _Exploding:
    def read(self, images: list[np.ndarray], areas: list | None = None) -> list:
        raise RuntimeError("onnxruntime fell over")


def test_bad_frames_and_ocr_failures_give_empty_readings_counted_as_errors() -> None:
    stream = "tenant_t_desk-9.screen"
    metrics = Metrics.prometheus()

    async def scenario() -> tuple[list[dict], dict, int]:
        dep = ScreenReaderDeployment(ScreenSettings(warm=False), engine_factory=_Exploding)
        dep.metrics = metrics
        results = [
            await dep.read(stream, np.full((720, 1280, 3), 250, np.uint8)),  # blank: nothing to read
            await dep.read(stream, np.zeros((2200, 3900, 3), np.uint8)),  # huge: refused
            await dep.read(stream, np.zeros((10, 10), np.float32)),  # not an RGB frame
            await dep.read(stream, _frame(7, 200), whole_frame=False, box=(0, 0, 50, 50)),  # OCR raises
            await dep.read_images(stream, [b"\x89PNG not really"]),  # an image that does not decode
        ]
        context = await dep.turn(stream, 0.3)
        await dep.close()
        return results[:4], context, results[4]

    results, context, started = asyncio.run(scenario())
    assert [r["lines"] for r in results] == [0, 0, 0, 0]
    assert [r["error"] is not None for r in results] == [False, True, True, True]
    assert "onnxruntime fell over" in results[3]["error"] and started == 0
    errors = metrics.registry.get_sample_value(
        "supportgraph_screen_reads_total", {"tenant": "t", "outcome": "error"}
    )
    assert errors == 4.0  # huge, not RGB, OCR failure, the image that does not decode
    assert context["current"] == [] and context["pending"] == 0 and len(context["usage"]) == 5


def test_the_hand_off_sends_the_changed_box_with_its_margin_and_the_box_within_it() -> None:
    from deployments.screen_reader import ScreenHandOff

    sent: list[dict] = []

    class _Method:
        def remote(self, **kwargs):
            sent.append(kwargs)
            return asyncio.sleep(0)

    class _Handle:
        read = _Method()

    async def scenario() -> None:
        handoff = ScreenHandOff(_Handle(), margin=12)  # type: ignore[arg-type]
        frame = _frame(3, 1280).repeat(6, axis=0)  # 720 x 1280
        handoff.offer("s", frame, {"send": True, "reason": "region", "box": [1000, 600, 200, 100], "ts": 1.0})
        handoff.offer("s", frame, {"send": True, "reason": "region", "box": [0, 0, 100, 20], "ts": 2.0})
        handoff.offer("s", frame, {"send": True, "reason": "phash", "box": None, "ts": 3.0})
        handoff.offer("s", frame, {"send": False, "reason": "duplicate"})
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert [(s["origin"], s["frame"].shape[:2], s["box"], s["whole_frame"]) for s in sent] == [
        ((988, 588), (124, 224), (12, 12, 200, 100), False),
        ((0, 0), (32, 112), (0, 0, 100, 20), False),
        ((0, 0), (720, 1280), None, True),
    ]


def test_every_image_of_a_chat_message_is_read_none_is_dropped_as_stale() -> None:
    """Several screenshots in one message: none supersedes another as a screen share's frames do."""
    import io

    from PIL import Image

    engine = _SlowEngine()
    stream = "tenant_t_chat-1.images"

    def png(value: int) -> bytes:
        out = io.BytesIO()
        Image.fromarray(_frame(value, 700)).save(out, format="PNG")
        return out.getvalue()

    async def scenario() -> tuple[int, dict]:
        dep = ScreenReaderDeployment(ScreenSettings(warm=False), engine_factory=lambda: engine)
        started = await dep.read_images(stream, [png(11), png(12), png(13)])
        await asyncio.sleep(0.05)  # the turn is a later call: the reads have begun
        context = await dep.turn(stream, 5.0)
        await dep.close()
        return started, context

    started, context = asyncio.run(scenario())
    assert started == 3
    assert sorted(engine.read_values) == [11, 12, 13]
    assert {"frame 11", "frame 12", "frame 13"} <= set(context["appeared"]) | set(context["current"]), context


def test_closing_the_queues_cancels_reads_still_waiting() -> None:
    from serve_app.screen.queues import ReadQueues
    from serve_app.screen.reader import ReadRequest, ScreenReader

    async def scenario() -> list[bool]:
        queues = ReadQueues(ScreenReader(engine=_SlowEngine()), frame_batch=1)
        stream = "tenant_t_desk-3.screen"
        reads = [
            asyncio.create_task(queues.read(ReadRequest(_frame(n, 700), stream_id=stream, supersedes=False)))
            for n in (21, 22, 23)
        ]
        await asyncio.sleep(0.2)  # the first is being read, the others queued
        await asyncio.wait_for(queues.close(), 2)
        done, _ = await asyncio.wait(reads, timeout=2)
        return [task.cancelled() for task in reads if task in done]

    assert asyncio.run(scenario()) == [True, True, True]


def test_a_reader_that_falls_behind_sheds_whole_frames_first_and_bounds_reads_in_flight() -> None:
    from deployments.screen_reader import ScreenHandOff

    sent: list[dict] = []
    never = asyncio.Event()

    class _Method:
        def remote(self, **kwargs):
            sent.append(kwargs)
            return never.wait()  # a reader that never answers

    class _Handle:
        read = _Method()

    async def scenario() -> ScreenHandOff:
        handoff = ScreenHandOff(_Handle(), margin=12, max_in_flight=8)  # type: ignore[arg-type]
        frame = _frame(3, 640).repeat(6, axis=0)
        for i in range(10):
            handoff.offer("s", frame, {"send": True, "reason": "phash", "box": None, "ts": float(i)})
        for i in range(10):
            box = [10, 10, 100, 20]
            handoff.offer("s", frame, {"send": True, "reason": "region", "box": box, "ts": 10.0 + i})
        await asyncio.sleep(0)
        never.set()
        await asyncio.sleep(0.01)
        return handoff

    handoff = asyncio.run(scenario())
    whole = [s for s in sent if s["whole_frame"]]
    assert len(whole) == 4 and len(sent) == 8 and handoff.shed == 12  # 4 whole frames, then 4 boxes
    assert not handoff._tasks  # answered reads leave the bound
    assert handoff.stats() == {"in_flight": 0, "max_in_flight": 8, "shed": 12, "failed": 0, "timed_out": 0}


def test_reads_a_reader_never_answers_give_their_slots_back() -> None:
    """A reader replica gone or wedged (its calls never answered) must not hold the bound for good."""
    from deployments.screen_reader import ScreenHandOff

    sent: list[dict] = []

    class _Method:
        def remote(self, **kwargs):
            sent.append(kwargs)
            return asyncio.Event().wait()  # never answered

    class _Handle:
        read = _Method()

    async def scenario() -> ScreenHandOff:
        handoff = ScreenHandOff(_Handle(), margin=12, max_in_flight=2, read_timeout_s=0.05)  # type: ignore[arg-type]
        frame = _frame(3, 640).repeat(6, axis=0)
        box = [10, 10, 100, 20]
        for i in range(4):
            handoff.offer("s", frame, {"send": True, "reason": "region", "box": box, "ts": float(i)})
        assert len(sent) == 2 and handoff.shed == 2
        await asyncio.sleep(0.2)
        handoff.offer("s", frame, {"send": True, "reason": "region", "box": box, "ts": 9.0})
        await asyncio.sleep(0)
        return handoff

    handoff = asyncio.run(scenario())
    assert handoff.timed_out == 2 and len(sent) == 3  # the slots came back: the next read went out


def test_the_hand_off_bound_leaves_half_the_readers_slots_free_however_many_dedup_replicas() -> None:
    from deployments.screen_reader import reads_in_flight
    from serve_app.settings import DeploymentResources

    reader = DeploymentResources(max_ongoing_requests=64)
    for replicas, each in [(1, 16), (2, 16), (4, 8), (8, 4), (64, 2)]:
        assert reads_in_flight(reader, DeploymentResources(num_replicas=replicas)) == each
        assert replicas * each <= 32 or each == 2  # half of the reader's 64 slots (2 each at least)
    two_readers = DeploymentResources(max_ongoing_requests=64, num_replicas=2)
    assert reads_in_flight(two_readers, DeploymentResources(num_replicas=4)) == 16
