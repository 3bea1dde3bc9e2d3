"""Sticky routing: every request that names a stream goes to the same FrameDedup replica.

A stream's dedup state (last sampled time, last processed hash) lives in one replica's memory, so the
handle must not spread a stream over replicas. `StreamAffinityRequestRouter` ranks replicas by rendezvous
(highest-random-weight) hashing of (stream id, replica id) with blake2b, which is stable across
processes (unlike `hash()`), and offers only the winner: a busy owner makes the request wait (backoff)
rather than go elsewhere.

When replicas change, only the streams of the replica that left or the share taken by a new one move.
A moved stream starts fresh on its new replica: its first frame there is processed (sent) even if it
matches the last one sent before, so each move costs at most one extra frame and the counters restart.
When a replica dies its streams move to survivors, and some move again to each replacement Serve
starts (a new replica takes its share from every replica), or back to a replica they had left: a node
that held k replicas moves a stream up to 1 + k times, each move sending one more frame, and a fresh
start may decide a later frame differently too (README "Multi-node cluster" has the measured extra
frames per moved stream). A stream that comes back to a replica it left starts fresh there as well: a
replica forgets a stream it has not seen for `stream_resume_gap_s` (5 s), rather than compare its
frames with the one it sent before the stream went away. A stream's frames never split.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica


def stream_key(pending_request: PendingRequest | None) -> str | None:
    """The stream id a request is for: the `stream_id` keyword, or a leading string argument."""
    if pending_request is None:
        return None
    key: Any = pending_request.kwargs.get("stream_id")
    if key is None and pending_request.args and isinstance(pending_request.args[0], str):
        key = pending_request.args[0]
    return key if isinstance(key, str) else None


def owner_score(stream_id: str, replica_id: str) -> int:
    digest = hashlib.blake2b(f"{stream_id}\x00{replica_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(stream_id: str, replica_ids: list[str]) -> str:
    """The replica id that owns a stream among `replica_ids` (rendezvous hashing)."""
    return max(replica_ids, key=lambda rid: owner_score(stream_id, rid))


class StreamAffinityRequestRouter(RequestRouter):
    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        key = stream_key(pending_request)
        if key is None:  # not stream-scoped: any replica, least loaded first is the base behaviour
            return [candidate_replicas]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        return [[by_id[owner(key, list(by_id))]]]
