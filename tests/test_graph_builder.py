"""The graph builder binds every deployment by keyword, and every keyword is a constructor parameter."""

from __future__ import annotations

import inspect
from typing import Any

from ray.serve import Application

from deployments.graph import build_app
from serve_app.settings import load_settings


def _bound(app: Application, seen: dict[str, Any]) -> dict[str, Any]:
    """Every deployment of the graph under `app`, by name (each with its bound arguments)."""
    deployment = app._bound_deployment
    seen[deployment.name] = deployment
    children = list(deployment.init_args) + list(deployment.init_kwargs.values())
    for child in children:
        for nested in child.values() if isinstance(child, dict) else [child]:
            if isinstance(nested, Application):
                _bound(nested, seen)
    return seen


def test_every_deployment_is_bound_by_keyword_to_its_constructor() -> None:
    graph = _bound(build_app(load_settings(None, screen={"enabled": True})), {})
    assert {"Ingress", "FrameDedup", "KnowledgeBase", "Embeddings", "Reranker", "Router"} <= set(graph)
    assert "ScreenReader" in graph and any(name.startswith("LLM-") for name in graph)
    for name, deployment in graph.items():
        assert deployment.init_args == (), f"{name} is bound by position"
        inspect.signature(deployment.func_or_class).bind(**deployment.init_kwargs)  # TypeError if not
