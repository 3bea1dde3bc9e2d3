"""OS priority of background work: the self-hosted LLM's replicas, the ScreenReader's whole-frame reads
and knowledge ingest yield the cores to interactive requests (chat, search, frame decisions).

Linux keeps a nice value per thread (`setpriority(PRIO_PROCESS, tid)` changes one thread) and a new
thread starts at its creator's value. `lower_thread_priority` raises the calling thread's value by an
increment; `lower_process_priority` raises every thread of the process (`/proc/self/task`), so the
threads its libraries start later (llama.cpp's, onnxruntime's, asyncio's executor) inherit it. Both
add to the current value, never set an absolute one: Ray starts its workers at nice 15 by default
(`RAY_worker_niceness`), and an absolute 5 would *raise* such a thread above every interactive replica.
Elsewhere than Linux, or where it is not allowed, priorities stay as they are (the calls return the
value unchanged).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

MAX_NICE = 19


def thread_niceness(tid: int | None = None) -> int:
    """The nice value of a thread (default: the calling one); 0 where priorities are unknown."""
    try:
        return os.getpriority(os.PRIO_PROCESS, tid if tid is not None else threading.get_native_id())
    except (AttributeError, OSError):
        return 0


def _lower(tid: int, increment: int) -> None:
    with contextlib.suppress(AttributeError, OSError):  # gone, not Linux, or not allowed
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, now + max(increment, 0)))


def lower_thread_priority(increment: int) -> int:
    """The calling thread's nice value raised by `increment` (capped at 19); returns the new value."""
    _lower(threading.get_native_id(), increment)
    return thread_niceness()


def _tasks() -> list[int]:
    try:
        return [int(p.name) for p in Path("/proc/self/task").iterdir() if p.name.isdigit()]
    except OSError:
        return [threading.get_native_id()]


def lower_process_priority(increment: int) -> int:
    """Every thread of this process raised by `increment` (capped at 19); returns the calling thread's
    new value. Threads started afterwards by any of them inherit it."""
    for tid in _tasks():
        _lower(tid, increment)
    return thread_niceness()


@contextlib.contextmanager
def background(increment: int) -> Iterator[int]:
    """This process's threads lowered by `increment` for the block, then put back where they were (a
    command run in someone else's process, a test's or a notebook's, must not leave it niced; where
    raising a priority again is not allowed, it stays lowered)."""
    before = {tid: thread_niceness(tid) for tid in _tasks()}
    caller = thread_niceness()
    try:
        yield lower_process_priority(increment)
    finally:  # threads started in the block (library pools that outlive it) go back to the caller's value
        for tid in _tasks():
            with contextlib.suppress(AttributeError, OSError):
                os.setpriority(os.PRIO_PROCESS, tid, before.get(tid, caller))


def process_niceness() -> dict[str, int]:
    """The lowest and highest nice values among this process's threads."""
    values = [thread_niceness(tid) for tid in _tasks()]
    return {"min": min(values), "max": max(values)}
