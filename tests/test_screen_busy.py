"""What changed leads (Ray-free): on a busy screen a turn is grounded on the lines of the change since
the last turn (a toast's, newest and most alert-like first), never on the whole screen; the reply says
which lines it used and when they were read, or that the screen is still being read."""

from __future__ import annotations

import asyncio
import time
import uuid

from serve_app.routing.providers.base import Completion, LLMProvider, Message, Prompt
from serve_app.routing.service import STILL_READING, ChatRequest, ChatService
from serve_app.screen.context import grounded_query, grounding, query_lines
from serve_app.screen.reader import Reading, ScreenLine
from serve_app.screen.state import ScreenContext, ScreenStore
from serve_app.settings import load_settings

STREAM = "tenant_acme_room-1.screen"
TOAST = ["Sync failed", "Error 0x80070005: access denied"]
# a busy screen: editor and dashboard text with alert words of its own, a chat sidebar, a clock
BUSY = [
    "File Edit View Go Run Terminal Help",
    "def handle_error(self, retry): raise TimeoutError('access denied by policy')",
    "if status == 'failed': log.warning('sync error, unable to retry')",
    "return invoice.export(limit=500)",
    "Farah: is the dashboard slow for anyone else",
    "error #6781 to error retry 0.26",
    "12:00:51 GET /api/tickets 200",
    "13:52",
]


def _lines(texts: list[str], top: int) -> list[ScreenLine]:
    return [ScreenLine(t, (10, top + 20 * n, 400, 14), 0.9) for n, t in enumerate(texts)]


def _landed(store: ScreenStore, texts: list[str], box: tuple, whole: bool, ts: float) -> None:
    store.landed(Reading(_lines(texts, box[1]), region=box, whole_frame=whole, stream_id="s", ts=ts), False)


def test_the_change_leads_over_a_busy_screen_and_newest_reads_come_first() -> None:
    store = ScreenStore()
    _landed(store, BUSY, (0, 0, 1280, 720), True, 0.0)  # the stream's first frame: all of it is new
    _landed(store, TOAST, (980, 600, 280, 70), False, 1.0)  # the toast's changed box
    _landed(store, ["Jun: lgtm, merging now"], (1040, 500, 240, 40), False, 2.0)  # a chat line after it
    context = asyncio.run(store.turn("s", 0))
    # newest read first, each read's lines in screen order
    assert context.appeared[:3] == ["Jun: lgtm, merging now", *TOAST]
    assert [c.ts for c in context.changes] == [2.0, 1.0, 0.0]
    used = grounding(context, 300)
    assert used.lines == TOAST and used.source == "change" and used.change is context.changes[1]
    assert used.change.read_at > 0 and used.change.box == (980, 600, 280, 70)
    question = "What does this error mean and how do I fix it?"
    assert grounded_query(question, used.lines) == f"{question} {' '.join(TOAST)}"
    # the next turn: nothing new, the screen's few most alert-like lines, never all of it
    later = asyncio.run(store.turn("s", 0))
    assert later.changes == [] and 0 < len(query_lines(later, 300)) <= 4
    assert "13:52" not in query_lines(later, 300) and "return invoice.export(limit=500)" not in query_lines(
        later
    )


def test_without_an_alert_the_newest_changed_box_leads_and_a_lone_code_outranks_alert_words() -> None:
    store = ScreenStore()
    _landed(store, BUSY, (0, 0, 1280, 720), True, 0.0)
    _landed(store, ["Saved", "Your changes were saved."], (980, 600, 280, 70), False, 3.0)
    _landed(store, ["Ivo: who owns the billing export"], (1040, 500, 240, 40), False, 4.0)
    assert query_lines(asyncio.run(store.turn("s", 0))) == ["Ivo: who owns the billing export"]
    _landed(store, ["warning: unable to retry, failed, error"], (0, 300, 900, 20), False, 5.0)
    _landed(store, ["Upload failed", "Storage quota exceeded (E-2207)"], (980, 600, 280, 70), False, 4.5)
    assert query_lines(asyncio.run(store.turn("s", 0))) == [
        "Upload failed",
        "Storage quota exceeded (E-2207)",
    ]


class Recording(LLMProvider):
    provider = "recording"
    model = "recording"

    def __init__(self) -> None:
        self.prompts: list[Prompt] = []

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        self.prompts.append(prompt)
        return Completion("Lumen cannot write to its notes folder [1]. Confidence: 0.9", 10, 5, "recording")


def _service(screen) -> tuple[ChatService, Recording, list[str]]:
    settings = load_settings(None, routing={"policy": {"threshold": 0.0}})
    queries: list[str] = []

    async def retrieve(tenant: str, query: str, k: int, request_id: uuid.UUID) -> list[str]:
        queries.append(query)
        return ["## Error 0x80070005\nLumen cannot write to its notes folder."]

    recording = Recording()
    names = [t.name for t in settings.routing.tiers]
    service = ChatService.create(settings, retrieve, None, {n: recording for n in names})
    service.screen = screen
    return service, recording, queries


def _request(text: str) -> ChatRequest:
    return ChatRequest("acme", (Message("user", text),), stream_id=STREAM)


def test_the_reply_names_the_lines_it_used_and_when_they_were_read() -> None:
    store, before = ScreenStore(), time.time()
    store.landed(Reading(_lines(BUSY, 0), (0, 0, 1280, 720), True, stream_id=STREAM, ts=0.0), False)
    store.landed(Reading(_lines(TOAST, 600), (980, 600, 280, 70), stream_id=STREAM, ts=1.0), False)

    async def screen(request: ChatRequest, wait_s: float) -> ScreenContext:
        return await store.turn(STREAM, wait_s)

    service, recording, queries = _service(screen)
    routed, _ = asyncio.run(service.answer(_request("What does this error mean and how do I fix it?")))
    assert queries == ["What does this error mean and how do I fix it? " + " ".join(TOAST)]
    assert recording.prompts[-1].screen_lines == tuple(TOAST)
    block = recording.prompts[-1].screen
    assert block.index("> Sync failed") < block.index("> Error 0x80070005") < block.index("> File Edit")
    report = routed.to_dict()["screen"]
    assert report["status"] == "read" and report["lines"] == TOAST and report["source"] == "change"
    assert report["frame_ts"] == 1.0 and before <= report["read_at"] <= time.time()
    assert report["asked_about_screen"] is True and report["box"] == [980, 600, 280, 70]


def test_a_question_about_the_screen_waits_for_the_read_or_says_it_is_still_reading() -> None:
    async def scenario(lands_after: float) -> tuple[dict, float]:
        store = ScreenStore()
        store.started(STREAM)

        async def land() -> None:
            await asyncio.sleep(lands_after)
            store.landed(Reading(_lines(TOAST, 600), (980, 600, 280, 70), stream_id=STREAM, ts=1.0))

        async def screen(request: ChatRequest, wait_s: float) -> ScreenContext:
            return await store.turn(STREAM, wait_s)

        service, _, _ = _service(screen)
        service.shown.turn_wait_s, service.shown.vague_wait_s = 0.05, 0.6
        task = asyncio.get_running_loop().create_task(land())
        started = time.perf_counter()
        reply = await service.reply(_request("what does this error mean?"))
        elapsed = time.perf_counter() - started
        await task
        return reply, elapsed

    # the read lands 0.2 s into the turn: longer than a turn waits, within what a question about the
    # screen waits: it is answered from the toast
    reply, elapsed = asyncio.run(scenario(0.2))
    assert reply["routing"]["screen"]["lines"] == TOAST and elapsed < 5
    # the read lands after the question's wait: the reply says the screen is still being read
    reply, elapsed = asyncio.run(scenario(3.0))
    assert reply["answer"] == STILL_READING and reply["routing"]["tier"] == "screen"
    assert reply["routing"]["screen"]["status"] == "reading" and reply["routing"]["screen"]["pending"] == 1
    # a question that names its subject does not wait for the screen, nor is it told to
    service, _, queries = _service(None)
    assert "screen" not in [
        asyncio.run(service.reply(_request("how do I export invoices?")))["routing"]["tier"]
    ]
    assert queries == ["how do I export invoices?"]


def test_a_phash_send_with_a_compact_box_is_also_read_alone_first() -> None:
    """The hand-off: a region send reads its box; a pHash send reads the whole frame, and first its
    changed box alone when the decision has a compact one (a toast on a busy screen)."""
    import numpy as np

    from deployments.screen_reader import ScreenHandOff

    calls: list[dict] = []

    class Read:
        def remote(self, **kwargs: object):
            calls.append(kwargs)
            return asyncio.sleep(0)

    class Handle:
        read = Read()

    async def offer(decision: dict) -> list[dict]:
        calls.clear()
        hand = ScreenHandOff(Handle(), margin=12)  # type: ignore[arg-type]
        hand.offer("tenant_acme_s.screen", np.zeros((720, 1280, 3), np.uint8), decision)
        await asyncio.sleep(0.01)
        return [dict(c) for c in calls]

    toast = {"send": True, "reason": "phash", "box": [986, 594, 269, 71], "ts": 1.0}
    first, whole = asyncio.run(offer(toast))
    assert (first["whole_frame"], first["origin"], first["box"]) == (False, (974, 582), (12, 12, 269, 71))
    assert whole["whole_frame"] is True and whole["frame"].shape == (720, 1280, 3)
    big = {**toast, "box": [0, 62, 1280, 628]}  # a tab switch: the whole frame only
    assert [c["whole_frame"] for c in asyncio.run(offer(big))] == [True]
    region = {**toast, "reason": "region"}
    assert [c["whole_frame"] for c in asyncio.run(offer(region))] == [False]
    assert asyncio.run(offer({**toast, "send": False})) == []
