"""Rendezvous ownership: deterministic, balanced, and minimal movement when replicas change."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from deployments.stream_affinity import owner, stream_key

STREAMS = [f"tenant_t{i % 7}_room-{i}" for i in range(3000)]


def test_owner_is_deterministic_and_balanced() -> None:
    replicas = ["r-a", "r-b", "r-c"]
    first = [owner(s, replicas) for s in STREAMS]
    assert first == [owner(s, list(reversed(replicas))) for s in STREAMS]
    share = Counter(first)
    assert all(800 < share[r] < 1200 for r in replicas), share


def test_only_the_streams_of_a_removed_replica_move() -> None:
    before = {s: owner(s, ["r-a", "r-b", "r-c"]) for s in STREAMS}
    after = {s: owner(s, ["r-a", "r-c"]) for s in STREAMS}
    moved = {s for s in STREAMS if before[s] != after[s]}
    assert moved == {s for s in STREAMS if before[s] == "r-b"}


def test_a_new_replica_takes_only_its_share() -> None:
    before = {s: owner(s, ["r-a", "r-b"]) for s in STREAMS}
    after = {s: owner(s, ["r-a", "r-b", "r-new"]) for s in STREAMS}
    moved = [s for s in STREAMS if before[s] != after[s]]
    assert all(after[s] == "r-new" for s in moved) and 800 < len(moved) < 1200


def test_stream_key_reads_keyword_or_first_argument() -> None:
    assert stream_key(SimpleNamespace(args=[], kwargs={"stream_id": "tenant_a_b"})) == "tenant_a_b"
    assert stream_key(SimpleNamespace(args=["tenant_a_b", 1], kwargs={})) == "tenant_a_b"
    assert stream_key(SimpleNamespace(args=[3], kwargs={})) is None
    assert stream_key(None) is None
