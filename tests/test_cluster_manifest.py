"""cluster.yaml: rendered from configs/ (one source of truth), valid against KubeRay's RayService CRD with no
field the CRD does not know, its serveConfigV2 valid against Ray Serve's schema with no field Serve would
silently ignore, autoscaling on every deployment, and locked-down pods."""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel
from ray.serve.schema import ServeDeploySchema

from deployments.graph import self_hosted_name
from serve_app.manifest import render
from serve_app.settings import RoutingPolicySettings, Settings

ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("SUPPORTGRAPH_DATASETS", ROOT.parent / "shared" / "datasets"))
CRD = DATASETS / "kuberay-crds" / "ray.io_rayservices.yaml"


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def serve_config(manifest: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(manifest["spec"]["serveConfigV2"])


def test_cluster_yaml_is_the_rendering_of_configs() -> None:
    assert (ROOT / "cluster.yaml").read_text() == render(), (
        "run `supportgraph manifest` after editing configs/"
    )


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of `value` that the (structural) schema does not declare, where it does not allow extras."""
    found: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        open_ended = schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema
        for key, item in value.items():
            if props is not None and key in props:
                found += unknown_fields(item, props[key], f"{path}.{key}")
            elif props is not None and not open_ended:
                found.append(f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += unknown_fields(item, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{n}]")
    return found


def test_manifest_matches_the_rayservice_crd(manifest: dict[str, Any]) -> None:
    if not CRD.is_file():
        pytest.skip(f"KubeRay CRD not found at {CRD} (set SUPPORTGRAPH_DATASETS)")
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == manifest["apiVersion"].split("/")[1])
    schema = version["schema"]["openAPIV3Schema"]
    jsonschema.validate(manifest, schema)
    assert unknown_fields(manifest, schema) == []
    # the checker does catch a misspelt field
    typo = yaml.safe_load(yaml.safe_dump(manifest))
    typo["spec"]["rayClusterConfig"]["enableInTreeAutoscalling"] = True
    assert unknown_fields(typo, schema) == [".spec.rayClusterConfig.enableInTreeAutoscalling"]


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like Optional[X], List[X] or Union[Dict, X, None]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (model := model_of(arg)) is not None:
            return model
    return None


def ignored_by_serve(value: Any, model: type[BaseModel], path: str = "") -> list[str]:
    """Keys Ray Serve's schema would accept silently without a field for them."""
    found: list[str] = []
    for key, item in value.items():
        field = model.model_fields.get(key)
        if field is None:
            found.append(f"{path}.{key}")
            continue
        inner = model_of(field.annotation)
        if inner is None or key in ("user_config", "args"):
            continue
        for n, element in enumerate(item if isinstance(item, list) else [item]):
            if isinstance(element, dict):
                found += ignored_by_serve(element, inner, f"{path}.{key}[{n}]")
    return found


def test_serve_config_is_strictly_valid(serve_config: dict[str, Any]) -> None:
    ServeDeploySchema.model_validate(serve_config)
    assert ignored_by_serve(serve_config, ServeDeploySchema) == []
    old_name = yaml.safe_load(yaml.safe_dump(serve_config))
    old_name["applications"][0]["deployments"][0]["autoscaling_config"][
        "target_num_ongoing_requests_per_replica"
    ] = 4
    assert ignored_by_serve(old_name, ServeDeploySchema) == [
        ".applications[0].deployments[0].autoscaling_config[0].target_num_ongoing_requests_per_replica"
    ]


def test_serve_config_matches_the_code(serve_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTGRAPH_DB__DSN", "postgresql://app@db/supportgraph")
    monkeypatch.setenv("SUPPORTGRAPH_DB__ADMIN_DSN", "postgresql://owner@db/supportgraph")
    app = serve_config["applications"][0]
    assert app["import_path"] == "deployments.graph:build_app"
    settings = Settings(**app["args"])
    deployments = {d["name"]: d for d in app["deployments"]}
    expected = {"FrameDedup", "Ingress", "Embeddings", "Reranker", "KnowledgeBase", "Router", "ScreenReader"}
    expected |= {self_hosted_name(t.name) for t in settings.routing.tiers if t.backend == "gguf"}
    assert set(deployments) == expected
    local = yaml.safe_load((ROOT / "configs/local.yaml").read_text())
    assert {d["name"] for d in local["applications"][0]["deployments"]} == expected
    policy = deployments["Router"]["user_config"]
    assert RoutingPolicySettings(**policy).model_dump(mode="json") == policy
    for name, d in deployments.items():
        scaling = d["autoscaling_config"]
        assert "num_replicas" not in d, name
        assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"], name
        assert scaling["target_ongoing_requests"] <= d["max_ongoing_requests"], name
        assert scaling["upscale_delay_s"] < scaling["downscale_delay_s"], name
    assert deployments["FrameDedup"]["ray_actor_options"]["num_gpus"] > 0


def containers(manifest: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [(g["template"]["spec"], c) for g in groups for c in g["template"]["spec"]["containers"]]


def test_pods_are_locked_down_and_scaled_by_ray(manifest: dict[str, Any]) -> None:
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True and cluster["rayVersion"] == "2.60.0"
    security = [cluster["autoscalerOptions"]["securityContext"]]
    for pod, container in containers(manifest):
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # Ray writes under /tmp
        security.append(container["securityContext"])
    for ctx in security:
        assert ctx["readOnlyRootFilesystem"] and not ctx["allowPrivilegeEscalation"]
        assert ctx["capabilities"]["drop"] == ["ALL"] and ctx["seccompProfile"]["type"] == "RuntimeDefault"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert groups["gpu"]["minReplicas"] == 0 < groups["gpu"]["maxReplicas"]
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2 and " AS build" in stages[0]
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    assert any(line.startswith("COPY --from=build") for line in lines)


def test_upgrades_are_blue_green_and_outlast_requests_in_flight(manifest: dict[str, Any]) -> None:
    """Pods change with a NewCluster upgrade; the old cluster outlives the slowest tier's timeout."""
    spec = manifest["spec"]
    assert spec["upgradeStrategy"]["type"] == "NewCluster"
    app = yaml.safe_load(spec["serveConfigV2"])["applications"][0]
    slowest = max(t.timeout_s for t in Settings(**app["args"]).routing.tiers)
    assert spec["rayClusterDeletionDelaySeconds"] > slowest


def test_llm_replicas_run_on_nodes_of_their_own(manifest: dict[str, Any], serve_config: dict) -> None:
    """Every self-hosted LLM deployment asks for the `llm` resource, which only the `llm` worker group
    offers, with CPUs that one replica fills (nothing interactive shares them); the other deployments
    do not ask for it; workers start at nice 0 so background work has room below them."""
    import json

    deployments = serve_config["applications"][0]["deployments"]
    llm = [d for d in deployments if d["name"].startswith("LLM-")]
    assert llm and all(d["ray_actor_options"]["resources"] == {"llm": 1} for d in llm)
    assert all(
        "llm" not in d.get("ray_actor_options", {}).get("resources", {}) for d in deployments if d not in llm
    )
    cluster = manifest["spec"]["rayClusterConfig"]
    offering = [
        g
        for g in cluster["workerGroupSpecs"]
        if "llm" in json.loads(json.loads(g["rayStartParams"].get("resources", '"{}"')))
    ]
    assert [g["groupName"] for g in offering] == ["llm"]
    pod_cpus = float(offering[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert all(
        d["ray_actor_options"]["num_cpus"] == pod_cpus == float(offering[0]["rayStartParams"]["num-cpus"])
        for d in llm
    )
    for _, container in containers(manifest):
        assert {"name": "RAY_worker_niceness", "value": "0"} in container["env"]
