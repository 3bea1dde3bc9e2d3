"""Shared fixtures. One Ray cluster + Serve graph for the whole run (`graph`), started on first use."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from serve_app.db.database import Database, stop_embedded
from serve_app.runtime import RunningGraph, local_graph, quiet_ray_env
from serve_app.settings import Settings, load_settings
from tests.wire import KnowledgeWire, serving

quiet_ray_env()
T = TypeVar("T")
# The graph's billed Cohere arm (served by a local KnowledgeWire) reads its key from here. Set before
# the session's Ray starts, so its replicas inherit it.
GRAPH_COHERE_KEY_ENV = "GRAPH_TEST_COHERE_KEY"
GRAPH_ARMS = {"learned": 1.0, "cohere": 0.02}  # a few tenants (graph-billed-23) land on Cohere


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def graph_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Two FrameDedup replicas (sticky routing is observable), small CPU shares for 2 cores, an
    embedded Postgres of its own in a temporary folder, and a billed Cohere arm on a local server."""
    os.environ.setdefault(GRAPH_COHERE_KEY_ENV, "graph-test-key")
    with serving(KnowledgeWire) as wire_url:
        yield load_settings(
            None,
            state_dir=tmp_path_factory.mktemp("graph-state"),
            http={"port": free_port()},
            auth={"mode": "off"},  # keys are tested on their own (test_auth.py) and by the demo
            # a stream is forgotten after 60 s without frames, not 5: on a loaded CI machine a test that
            # walks 32 streams round by round can leave one longer than 5 s between its frames
            dedup={"max_batch_size": 16, "batch_wait_timeout_s": 0.02, "stream_resume_gap_s": 60},
            serve={
                "ray_num_cpus": 2,
                "metrics_port": free_port(),
                "frame_dedup": {"num_replicas": 2, "num_cpus": 0.25},
                "ingress": {"num_cpus": 0.25},
            },
            knowledge={
                "rerankers": {
                    "learned": {"backend": "learned"},
                    "none": {},
                    "adapted": {"backend": "adapted"},  # no traffic share: asked for by name
                    "cohere": {
                        "backend": "cohere",
                        "base_url": wire_url,
                        "api_key_env": GRAPH_COHERE_KEY_ENV,
                    },
                },
                "ab_weights": GRAPH_ARMS,
            },
        )


@pytest.fixture(scope="session")
def graph(graph_settings: Settings) -> Iterator[RunningGraph]:
    from supportgraph_tools.handoff.demo import demo_livekit_env

    demo_livekit_env()  # as `make demo` does: the Router mints handoff room tokens with them
    with local_graph(graph_settings) as running:
        yield running
    stop_embedded(graph_settings.state_dir / "pgdata")


@pytest.fixture(scope="session")
def kb_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings whose embedded Postgres lives in a fresh temporary folder for this test run."""
    settings = load_settings(None, state_dir=tmp_path_factory.mktemp("state"))
    yield settings
    stop_embedded(settings.state_dir / "pgdata")


@pytest.fixture(scope="session")
def embedder():
    from serve_app.knowledge.factory import build_embedder
    from serve_app.settings import EmbedderSettings

    return build_embedder(EmbedderSettings())


@dataclass
class LiveDB:
    """A started Database (migrated, pooled as the app role) and the event loop its pool lives on."""

    db: Database
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


@pytest.fixture()
def live_db(kb_settings: Settings) -> Iterator[LiveDB]:
    loop = asyncio.new_event_loop()
    live = LiveDB(loop.run_until_complete(Database.of(kb_settings).start()), loop)
    yield live
    loop.run_until_complete(live.db.close())
    loop.close()
