"""Background work yields the cores: nice values are raised relative to the current one, per thread or
for the whole process (threads started later inherit them), never set to an absolute value. Serve's
high-throughput mode reaches the graph's processes only, never the caller's."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from serve_app.priority import lower_process_priority, lower_thread_priority, thread_niceness

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")


def _in_thread(work) -> object:
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(work()))
    t.start()
    t.join()
    return out[0]


@linux_only
def test_a_thread_is_lowered_relative_to_its_own_value_and_alone() -> None:
    before = thread_niceness()

    def lowered() -> tuple[int, int]:
        start = thread_niceness()
        return start, lower_thread_priority(3)

    start, after = _in_thread(lowered)
    assert start == before
    assert after == min(19, start + 3)
    assert thread_niceness() == before  # the calling thread of the test is untouched


@linux_only
def test_the_value_is_capped_and_never_raised_above_the_current_one() -> None:
    assert _in_thread(lambda: lower_thread_priority(100)) == 19
    assert _in_thread(lambda: (lower_thread_priority(2), lower_thread_priority(-5))[1]) == min(
        19, thread_niceness() + 2
    )


@linux_only
def test_a_lowered_process_lowers_every_thread_and_those_started_later() -> None:
    """In a child process (a process's priority cannot be raised back without privileges)."""
    code = (
        "import threading\n"
        "from serve_app.priority import lower_process_priority, process_niceness, thread_niceness\n"
        "started = threading.Event(); stop = threading.Event()\n"
        "def idle(): started.set(); stop.wait()\n"
        "early = threading.Thread(target=idle); early.start(); started.wait()\n"
        "base = thread_niceness()\n"
        "lower_process_priority(4)\n"
        "late = []\n"
        "t = threading.Thread(target=lambda: late.append(thread_niceness())); t.start(); t.join()\n"
        "span = process_niceness(); stop.set(); early.join()\n"
        "print(base, span['min'], span['max'], late[0])\n"
    )
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    base, low, high, late = map(int, out.stdout.split())
    want = min(19, base + 4)
    assert (low, high, late) == (want, want, want)


def test_zero_leaves_the_process_as_it_is() -> None:
    assert lower_process_priority(0) == thread_niceness()


def test_serves_high_throughput_mode_goes_to_the_graphs_job_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from serve_app import runtime
    from serve_app.settings import load_settings

    before = os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED")

    def env(**serve: bool) -> dict[str, str]:
        return runtime.serve_env(load_settings(None, serve=serve))

    assert env() == {}  # the default: Serve's own mode
    assert env(throughput_optimized=True) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    haproxy = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
    assert env(throughput_optimized=False, haproxy=True) == haproxy  # HAProxy needs direct ingress
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv(runtime.HAPROXY_BINARY, raising=False)
    with pytest.raises(RuntimeError, match="haproxy"):
        env(haproxy=True)
    assert os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == before  # not this process's environment


@linux_only
def test_a_command_run_in_someone_elses_process_leaves_its_priority_as_it_was() -> None:
    """`supportgraph ingest` called in-process (a test, a notebook) lowers the process for the ingest
    only (in a child process: raising a priority back needs privileges, which root has)."""
    import subprocess

    code = (
        "from serve_app.priority import background, thread_niceness\n"
        "before = thread_niceness()\n"
        "with background(4) as inside:\n"
        "    print(inside - before)\n"
        "print(thread_niceness() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    inside, after = (int(x) for x in out.stdout.split())
    assert inside == min(4, 19 - thread_niceness())
    assert after == 0 if os.geteuid() == 0 else after in (0, inside)
