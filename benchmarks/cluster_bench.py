"""The graph on a multi-node Ray cluster: `serve deploy`, placement, stream affinity, node loss, autoscaling.

    python benchmarks/cluster_bench.py [--workers 2] [--placement-only] [--load-s 20] [--delay-divisor 5]

Starts a Ray cluster of processes on this machine with `ray.cluster_utils.Cluster` (what Ray's own tests
use): a head (the Serve controller, the one HTTP proxy and the CPU deployments) and `--workers` worker nodes
that offer no CPU to Ray's accounting but a custom resource `gpu_node`, standing in for the GPU pods of
cluster.yaml. The Serve config is `configs/production.yaml` cut to fit (`bench_config`): FrameDedup's
`num_gpus` and the LLM tier become a share of `gpu_node`, the other deployments get a tenth of their CPUs,
replica bounds shrink, the autoscaling delays are divided by `--delay-divisor`, the proxy runs on the
head only (every node is on 127.0.0.1) and the embedded Postgres lives in a temporary folder. It goes to
the cluster with the `serve deploy` CLI against the head's dashboard, and the bench waits for RUNNING.

Phases (`--placement-only` stops after the first):
1. placement: every FrameDedup and LLM replica on a `gpu_node` node, every other replica on the head
   (from Serve's status API and `ray.util.state.list_nodes`).

Ports (GCS, dashboard, dashboard agent, Serve HTTP) are picked free and Ray's temp dir is a folder of its
own (RAY_TMPDIR), so other Ray clusters on the machine are neither disturbed nor joined; the cluster and
the embedded Postgres are torn down on exit, errors and SIGTERM included.
Prints a table per phase, then one JSON line.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ROOT / "configs" / "production.yaml"
APP = "supportgraph"
GPU_RESOURCE = "gpu_node"
# what a worker node offers; a replica on it asks GPU_SHARE, so a node holds four of them
GPU_PER_NODE = 1.0
GPU_SHARE = 0.25
CPU_SCALE = 0.1  # CPU deployments get a tenth of their production CPUs (Ray's accounting only)
HEAD_CPUS = 2
# replica bounds in the bench (min, max); every other deployment runs one replica
BOUNDS = {"FrameDedup": (2, 3), "LLM": (1, 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_gpu_deployment(name: str) -> bool:
    """FrameDedup and the self-hosted LLM tiers: the deployments production places on GPU pods."""
    return name == "FrameDedup" or name.startswith("LLM-")


def bench_config(
    production: dict[str, Any],
    *,
    http_port: int,
    state_dir: Path,
    delay_divisor: float = 5.0,
    frame_dedup_replicas: tuple[int, int] = BOUNDS["FrameDedup"],
) -> dict[str, Any]:
    """The production Serve config cut to fit this machine, in the same format (see the module doc)."""
    config = copy.deepcopy(production)
    config["proxy_location"] = "HeadOnly"  # one proxy: every node shares 127.0.0.1, so one port
    config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    app = config["applications"][0]
    app["args"] = {
        **app["args"],
        "state_dir": str(state_dir),
        "dedup": {"device": "cpu"},
        "screen": {"enabled": False},  # OCR of every sent frame would take the 2 cores from the rest
    }
    kept = []
    for d in app["deployments"]:
        name = d["name"]
        if name == "ScreenReader":
            continue
        scaling = d["autoscaling_config"]
        if is_gpu_deployment(name):
            d["ray_actor_options"] = {"num_cpus": 0, "resources": {GPU_RESOURCE: GPU_SHARE}}
            low, high = frame_dedup_replicas if name == "FrameDedup" else BOUNDS["LLM"]
        else:
            cpus = d["ray_actor_options"]["num_cpus"]
            d["ray_actor_options"] = {"num_cpus": round(cpus * CPU_SCALE, 3)}
            low = high = 1
        scaling.update(min_replicas=low, max_replicas=high)
        for key in ("upscale_delay_s", "downscale_delay_s"):
            scaling[key] = round(scaling[key] / delay_divisor, 3)
        kept.append(d)
    app["deployments"] = kept
    return config


@dataclass
class BenchCluster:
    """A head and worker nodes as processes of this machine, with ports and a temp dir of their own."""

    root: Path
    head: Any = None
    cluster: Any = None
    workers: list[Any] = field(default_factory=list)
    dashboard_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, workers: int) -> None:
        # Ray's temp dir (sessions, sockets, the "last cluster" address file that a bare ray.init() reads)
        # under our folder: other Ray users on this machine never see or join this cluster
        os.environ["RAY_TMPDIR"] = str(self.root)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # the replicas import deployments/ and serve_app/ from this checkout
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        )
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": HEAD_CPUS,
                "gcs_server_port": free_port(),
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": self.dashboard_port,
                "dashboard_agent_listen_port": free_port(),
                "metrics_export_port": free_port(),
                "object_store_memory": 200 * 1024**2,
            },
        )
        self.head = self.cluster.head_node
        for _ in range(workers):
            self.add_worker()
        self.wait_dashboard()

    def add_worker(self) -> Any:
        node = self.cluster.add_node(
            num_cpus=0,
            resources={GPU_RESOURCE: GPU_PER_NODE},
            object_store_memory=100 * 1024**2,
            metrics_export_port=free_port(),
        )
        self.workers.append(node)
        return node

    def kill(self, node: Any) -> None:
        """The node dies at once: its raylet and every process on it, no graceful shutdown."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def wait_dashboard(self, timeout_s: float = 60.0) -> None:
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.dashboard}/api/version", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"dashboard at {self.dashboard} did not answer in {timeout_s:.0f} s")

    def shutdown(self) -> None:
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.shutdown()
            self.cluster = None


@contextlib.contextmanager
def bench_cluster(workers: int) -> Iterator[BenchCluster]:
    """Started cluster; on the way out (return, error, SIGTERM, interpreter exit) it and Postgres stop."""
    root = Path(tempfile.mkdtemp(prefix="sgc-"))  # short: Unix socket paths live under it
    cluster = BenchCluster(root)
    state = root / "state"

    def teardown() -> None:
        cluster.shutdown()
        from serve_app.db.database import stop_embedded

        with contextlib.suppress(Exception):
            stop_embedded(state / "pgdata")
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(teardown)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cluster.start(workers)
        yield cluster
    finally:
        teardown()
        atexit.unregister(teardown)
        signal.signal(signal.SIGTERM, previous)


# Serve's status API (the dashboard's REST endpoint that `serve status` reads)


def serve_deploy(config: dict[str, Any], dashboard: str, folder: Path) -> None:
    path = folder / "serve-config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    serve = Path(sys.executable).parent / "serve"
    cmd = [str(serve), "deploy", str(path), "--address", dashboard]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"serve deploy failed ({done.returncode}): {done.stderr[-2000:]}")


def app_status(dashboard: str) -> dict[str, Any]:
    """The application's details: status, and per deployment its status, target and replicas."""
    body = httpx.get(f"{dashboard}/api/serve/applications/", timeout=10).json()
    return body.get("applications", {}).get(APP, {})


def wait_running(dashboard: str, timeout_s: float = 600.0) -> float:
    """Seconds until the application is RUNNING; raises on DEPLOY_FAILED or the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        app = app_status(dashboard)
        status = app.get("status")
        if status == "RUNNING":
            return time.monotonic() - started
        if status == "DEPLOY_FAILED":
            raise RuntimeError(f"deploy failed: {app.get('message', '')[-2000:]}")
        time.sleep(1.0)
    raise TimeoutError(f"application not RUNNING after {timeout_s:.0f} s: {app_status(dashboard)}")


def running_replicas(app: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [r for r in d.get("replicas", []) if r.get("state") == "RUNNING"]
        for name, d in app.get("deployments", {}).items()
    }


def gpu_nodes(dashboard: str) -> set[str]:
    """Alive nodes that offer the `gpu_node` resource, from `ray.util.state`."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    return {n.node_id for n in nodes if n.resources_total.get(GPU_RESOURCE, 0) > 0}


@dataclass
class Placement:
    ok: bool
    rows: list[tuple[str, str, int, int]]  # deployment, node, replicas there, wanted there (-1: none)
    problems: list[str]


def check_placement(app: dict[str, Any], head_id: str, gpu_ids: set[str], names: dict[str, str]) -> Placement:
    """FrameDedup and LLM replicas on `gpu_node` nodes only, spread over them; the rest on the head."""
    rows, problems = [], []
    for name, replicas in sorted(running_replicas(app).items()):
        by_node: dict[str, int] = {}
        for r in replicas:
            by_node[r["node_id"]] = by_node.get(r["node_id"], 0) + 1
        allowed = gpu_ids if is_gpu_deployment(name) else {head_id}
        for node_id, n in sorted(by_node.items(), key=lambda kv: names.get(kv[0], kv[0])):
            rows.append((name, names.get(node_id, node_id[:8]), n, 1 if node_id in allowed else 0))
            if node_id not in allowed:
                problems.append(f"{name}: {n} replica(s) on {names.get(node_id, node_id)}")
        if not replicas:
            problems.append(f"{name}: no RUNNING replica")
        if is_gpu_deployment(name) and len(replicas) >= 2 and len(by_node) < min(len(replicas), len(gpu_ids)):
            problems.append(f"{name}: {len(replicas)} replicas on only {len(by_node)} node(s)")
    return Placement(not problems, rows, problems)


def print_placement(placement: Placement) -> None:
    print(f"{'deployment':16s} {'node':10s} {'replicas':>8s}  placed")
    for name, node, n, ok in placement.rows:
        print(f"{name:16s} {node:10s} {n:8d}  {'yes' if ok else 'NO'}")
    for problem in placement.problems:
        print(f"placement problem: {problem}")


def node_names(cluster: BenchCluster) -> dict[str, str]:
    names = {cluster.head.node_id: "head"}
    names.update({w.node_id: f"worker-{n + 1}" for n, w in enumerate(cluster.workers)})
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker nodes with the gpu_node resource")
    parser.add_argument("--placement-only", action="store_true", help="stop after the placement check")
    parser.add_argument("--delay-divisor", type=float, default=5.0, help="autoscaling delays / this")
    parser.add_argument("--deploy-timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    production = yaml.safe_load(PRODUCTION.read_text())
    result: dict[str, Any] = {"bench": "cluster", "nodes": 1 + args.workers, "placement_ok": False}
    with bench_cluster(args.workers) as cluster:
        names = node_names(cluster)
        state = cluster.root / "state"
        from serve_app.db.database import start_embedded

        start_embedded(state / "pgdata")  # from here, not from a replica: a node's death must not take it
        config = bench_config(
            production, http_port=cluster.http_port, state_dir=state, delay_divisor=args.delay_divisor
        )
        started = time.monotonic()
        serve_deploy(config, cluster.dashboard, cluster.root)
        wait_running(cluster.dashboard, args.deploy_timeout_s)
        deploy_s = time.monotonic() - started
        print(f"cluster: head + {args.workers} workers; serve deploy to RUNNING in {deploy_s:.1f} s")
        placement = check_placement(
            app_status(cluster.dashboard), cluster.head.node_id, gpu_nodes(cluster.dashboard), names
        )
        print_placement(placement)
        result.update(placement_ok=placement.ok, deploy_s=round(deploy_s, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
