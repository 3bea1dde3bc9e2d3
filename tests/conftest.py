"""Shared fixtures. One Ray cluster + Serve graph for the whole run (`graph`), started on first use."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from serve_app.runtime import RunningGraph, local_graph, quiet_ray_env
from serve_app.settings import Settings, load_settings

quiet_ray_env()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def graph_settings() -> Settings:
    """Two FrameDedup replicas (sticky routing is observable), small CPU shares for 2 cores."""
    return load_settings(
        None,
        http={"port": free_port()},
        dedup={"max_batch_size": 16, "batch_wait_timeout_s": 0.02},
        serve={
            "ray_num_cpus": 2,
            "frame_dedup": {"num_replicas": 2, "num_cpus": 0.25},
            "ingress": {"num_cpus": 0.25},
        },
    )


@pytest.fixture(scope="session")
def graph(graph_settings: Settings) -> Iterator[RunningGraph]:
    with local_graph(graph_settings) as running:
        yield running
