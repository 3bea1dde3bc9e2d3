"""The Ray-free screen reader: OCR of changed regions, normalization, bad input, per-stream state."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

from serve_app.screen.normalize import Vocabulary, normalize_line
from serve_app.screen.reader import ReaderLimits, Reading, ReadRequest, ScreenLine, ScreenReader, crop_box
from serve_app.screen.state import ScreenStore
from supportgraph_tools.screen.screens import ERRORS, error_screen


@pytest.fixture(scope="module")
def reader() -> ScreenReader:
    return ScreenReader()


def test_spacing_restored_codes_and_case_kept() -> None:
    vocab = Vocabulary()
    assert normalize_line("Syncfailed", vocab) == "Sync failed"
    assert normalize_line("Error0x80070005:accessdenied", vocab) == "Error 0x80070005: access denied"
    assert normalize_line("Storagefull(E-2207)", vocab) == "Storage full (E-2207)"
    # a hex code with a word glued on, the colon lost: the word's hex letters (a, c, e) are given back
    assert normalize_line("Error0x80070005accessdenied", vocab) == "Error 0x80070005 access denied"
    assert normalize_line("Error0x8007000Adenied", vocab) == "Error 0x8007000A denied"
    assert normalize_line("0xDEADBEEF", vocab) == "0xDEADBEEF"
    assert normalize_line("Yoursessionexpired.Signinagain", vocab) == "Your session expired. Sign in again"
    assert normalize_line("Scheduled maintenance 22:00-23:00 UTC.", vocab) == (
        "Scheduled maintenance 22:00-23:00 UTC."
    )
    assert normalize_line("  Lumen   S-403  ", vocab) == "Lumen S-403"
    # a tenant's own terms become words
    assert normalize_line("Openthequuxpanel", vocab) == "Openthequuxpanel"
    assert normalize_line("Openthequuxpanel", vocab.add(["Open the quux panel"])) == "Open the quux panel"


def test_reads_the_changed_region_of_a_generated_screen(reader: ScreenReader) -> None:
    shot = error_screen(ERRORS[0], seed=7, surface="toast")
    reading = reader.read(ReadRequest(shot.after, shot.box, stream_id="s", reason="region"))
    assert reading.error is None and not reading.whole_frame
    toast = [line for line in reading.lines if "Sync" in line.text or "Error" in line.text]
    assert [line.text for line in toast] == ["Sync failed", "Error 0x80070005: access denied"]
    x, y, w, h = shot.box
    for line in toast:  # boxes in frame pixels, inside the toast (plus the margin)
        lx, ly, lw, lh = line.box
        assert x - 12 <= lx and lx + lw <= x + w + 12 and y - 12 <= ly and ly + lh <= y + h + 12
        assert line.confidence > 0.8
    assert reading.region == crop_box(shot.after.shape, shot.box, 12)


def test_huge_frames_are_scaled_down_and_read(reader: ScreenReader) -> None:
    shot = error_screen(ERRORS[3], seed=3, surface="toast")
    x, y, w, h = shot.box
    crop = shot.after[y - 10 : y + h + 10, x - 10 : x + w + 10]
    big = np.ascontiguousarray(np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1))  # text 2x as large
    small = ScreenReader(engine=reader.engine, limits=ReaderLimits(max_side=crop.shape[1]))
    reading = small.read(ReadRequest(big))
    assert reading.whole_frame and reading.error is None
    assert "Storage quota exceeded (E-2207)" in reading.text
    assert all(lx + lw <= big.shape[1] + 2 for lx, _, lw, _ in (ln.box for ln in reading.lines))


class _Exploding:
    def read(self, images: list[np.ndarray], areas: list | None = None) -> list:
        raise RuntimeError("onnxruntime fell over")


def test_bad_input_gives_an_empty_reading_and_is_counted() -> None:
    def no_engine() -> None:
        raise AssertionError("nothing here needs OCR")

    reader = ScreenReader(engine_factory=no_engine, limits=ReaderLimits(max_pixels=4000 * 3000))
    blank = np.full((720, 1280, 3), 245, np.uint8)
    readings = reader.read_batch(
        [
            ReadRequest(blank),  # blank: nothing to read, no error
            ReadRequest(blank, box=(100, 100, 0, 0)),  # an empty box: a margin's worth, still blank
            ReadRequest(np.zeros((3001, 4000, 3), np.uint8)),  # huge: refused
            ReadRequest(np.zeros((10, 10), np.float32)),  # not RGB uint8
            ReadRequest(b"\xff\xd8 corrupt"),
            ReadRequest(None),
        ]
    )
    assert all(isinstance(r, Reading) and r.lines == [] for r in readings)
    assert [r.error is not None for r in readings] == [False, False, True, True, True, True]
    assert reader.stats() == {"reads": 6, "errors": 4, "empty": 6, "cache_hits": 0}
    # OCR itself failing: empty readings, counted, nothing raised
    broken = ScreenReader(engine=_Exploding())  # type: ignore[arg-type]
    shot = error_screen(ERRORS[1], seed=1, surface="toast")
    (reading,) = broken.read_batch([ReadRequest(shot.after, shot.box)])
    assert reading.lines == [] and "onnxruntime fell over" in (reading.error or "")
    assert broken.errors == 1


def test_the_reader_never_imports_opencv() -> None:
    """opencv-python's cv2 needs libGL.so.1, absent on slim images: the reader must not need it."""
    code = (
        "import sys; sys.modules['cv2'] = None\n"
        "from serve_app.screen.ocr import OcrEngine\n"
        "import numpy as np\n"
        "e = OcrEngine(threads=1)\n"
        "print(e.read([np.full((40, 120, 3), 255, np.uint8)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cv2" not in out.stderr


def _reading(
    stream: str, lines: list[tuple[str, tuple]], region: tuple | None, whole: bool = False
) -> Reading:
    return Reading(
        [ScreenLine(t, b, 0.9) for t, b in lines], region=region, whole_frame=whole, stream_id=stream
    )


def test_screen_state_current_text_and_what_appeared_since_the_last_turn() -> None:
    store = ScreenStore()
    store.landed(
        _reading("s", [("Inbox", (0, 0, 50, 10)), ("Notes", (0, 20, 50, 10))], (0, 0, 100, 100), True), False
    )
    first = asyncio.run(store.turn("s", 0))
    assert first.current == ["Inbox", "Notes"] and first.appeared == ["Inbox", "Notes"]
    # a toast over the lower part: lines it overlaps are replaced, the rest stays
    store.landed(_reading("s", [("Sync failed", (0, 22, 60, 10))], (0, 15, 100, 30)), False)
    second = asyncio.run(store.turn("s", 0))
    assert second.current == ["Inbox", "Sync failed"] and second.appeared == ["Sync failed"]
    # the toast closes before the next question: it is gone from the screen, not from "appeared"
    store.landed(_reading("s", [("Sync failed", (0, 22, 60, 10))], (0, 15, 100, 30)), False)
    store.landed(_reading("s", [], (0, 15, 100, 30)), False)
    third = asyncio.run(store.turn("s", 0))
    assert third.current == ["Inbox"] and third.appeared == []
    # a failed reading changes nothing
    bad = _reading("s", [], None)
    bad.error = "corrupt"
    store.landed(bad, False)
    assert store.peek("s").current == ["Inbox"]
    assert not asyncio.run(store.turn("unknown", 0))


def test_a_turn_waits_at_most_wait_s_for_a_running_read() -> None:
    async def scenario() -> tuple[float, float, list[str]]:
        store = ScreenStore()
        store.started("s")
        slow = await store.turn("s", 0.05)  # nothing lands: waited about 50 ms, empty context
        store.landed(Reading(stream_id="s", error="timed out"))  # every hand-off lands, failed or not
        store.started("s")

        async def land() -> None:
            await asyncio.sleep(0.02)
            store.landed(_reading("s", [("Error 0x1234abcd", (0, 0, 10, 10))], (0, 0, 20, 20)))

        asyncio.get_running_loop().create_task(land())
        fast = await store.turn("s", 5.0)
        return slow.waited_ms, fast.waited_ms, fast.appeared

    slow_ms, fast_ms, appeared = asyncio.run(scenario())
    assert 40 <= slow_ms < 1000
    assert fast_ms < 2000 and appeared == ["Error 0x1234abcd"]


def test_eval_screen_path_scores_the_grounded_query(reader: ScreenReader) -> None:
    """eval-screen's loop on one case, with a stand-in ranker: the screen's error code finds the article."""
    from supportgraph_tools.screen import evaluate

    async def rank(query: str) -> list[str]:
        return ["error-storage-full", "billing"] if "E-2207" in query else ["billing", "error-storage-full"]

    cases = evaluate.cases([ERRORS[3]], per_error=1, seed=5)
    result = asyncio.run(evaluate.evaluate_screen(rank, reader, cases))
    assert result["with_screen"] == {"R@1": 1.0, "R@5": 1.0, "MRR@10": 1.0}
    assert result["question_only"] == {"R@1": 0.0, "R@5": 1.0, "MRR@10": 0.5}
    assert result["ocr_char_accuracy"] > 0.9
    assert evaluate.levenshtein("Syncfailed", "Sync failed") == 1


def test_recognition_groups_lines_of_like_width() -> None:
    from serve_app.screen.ocr import width_groups

    widths = [640, 64, 72, 600, 80, 320]
    groups = width_groups(widths, max_batch=8, waste=0.15)
    assert sorted(i for g in groups for i in g) == list(range(6))
    for group in groups:  # padding to the widest stays within 15% of the group's pixels
        assert max(widths[i] for i in group) * len(group) <= 1.15 * sum(widths[i] for i in group)
    assert [sorted(g) for g in groups] == [[1, 2, 4], [5], [0, 3]]
    assert width_groups([100] * 10, max_batch=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert width_groups([]) == []


class _Counting:
    """An engine that counts what it is asked to read."""

    def __init__(self, engine) -> None:
        self.engine, self.images = engine, 0

    def read(self, images: list[np.ndarray], areas: list | None = None) -> list:
        self.images += len(images)
        return self.engine.read(images, areas)


def test_lines_of_the_margin_are_not_read_and_a_crop_seen_before_is_not_read_again(
    reader: ScreenReader,
) -> None:
    shot = error_screen(ERRORS[2], seed=11, surface="toast")
    x, y, w, h = shot.box
    # a changed box holding only the toast's second line: the title above lies in the margin
    lines = reader.engine.read([shot.after[y : y + h, x : x + w]])[0]
    assert [ln.text for ln in lines][:2] == ["Payment declined", "Card issuer refused the charge (P-402)"]
    second = lines[1].box
    box = (x + second[0], y + second[1], second[2], second[3])
    counting = _Counting(reader.engine)
    only = ScreenReader(engine=counting, limits=ReaderLimits(margin=second[1] + 2))  # type: ignore[arg-type]
    reading = only.read(ReadRequest(shot.after, box))
    assert reading.text == "Card issuer refused the charge (P-402)"
    assert "Payment" in ScreenReader(engine=reader.engine).read(ReadRequest(shot.after, (x, y, w, h))).text
    # the same pixels again (a toast that shows again): the reading comes from the cache
    again = only.read(ReadRequest(shot.after.copy(), box, stream_id="other"))
    assert again.text == reading.text and [ln.box for ln in again.lines] == [ln.box for ln in reading.lines]
    assert counting.images == 1 and only.stats()["cache_hits"] == 1
    moved = np.roll(shot.after, 3, axis=1)  # other pixels: read
    only.read(ReadRequest(moved, box))
    assert counting.images == 2


def test_warming_runs_detection_and_recognition(reader: ScreenReader) -> None:
    fresh = ScreenReader(engine=reader.engine)
    assert fresh.warm() > 0
    assert reader.engine.stages["det_infer"] > 0 and reader.engine.stages["rec_infer"] > 0


def test_execution_providers_fall_back_to_the_cpu() -> None:
    import onnxruntime as ort

    from serve_app.screen.ocr import default_threads, providers_for

    assert providers_for("cpu") == ["CPUExecutionProvider"]
    assert providers_for("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert providers_for("auto")[0] == ("CUDAExecutionProvider" if has_cuda else "CPUExecutionProvider")
    assert 1 <= default_threads() <= 4
