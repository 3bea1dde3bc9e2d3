"""The agent and the handle backends reach the graph without the HTTP layer: no FastAPI on their path;
no deployment (replica) imports the demo and evaluation tools; in the runtime package only the CLI does."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENT = [f"serve_app.agent.{p.stem}" for p in (ROOT / "serve_app" / "agent").glob("[!_]*.py")]
HTTP_FREE = ["serve_app.backends", "serve_app.handles", *AGENT]  # and everything they import
HTTP_LAYER = ("fastapi", "starlette", "serve_app.http", "serve_app.api")
REPLICAS = [f"deployments.{p.stem}" for p in (ROOT / "deployments").glob("[!_]*.py")]
TOOLS = "supportgraph_tools"


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside functions (TYPE_CHECKING blocks too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _project_closure(roots: list[str]) -> dict[str, set[str]]:
    """The serve_app modules reachable from `roots` through imports, each with what it imports."""
    seen: dict[str, set[str]] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen[name] = _imports(path)
        todo += [m for m in seen[name] if m.startswith(("serve_app", "deployments"))]
    return seen


def _is_http(module: str) -> bool:
    return any(module == layer or module.startswith(f"{layer}.") for layer in HTTP_LAYER)


def test_agent_and_handles_never_import_the_http_layer() -> None:
    closure = _project_closure(HTTP_FREE)
    assert {"serve_app.backends", "serve_app.handles", "serve_app.agent.worker"} <= set(closure)
    offenders = {name: sorted(filter(_is_http, imports)) for name, imports in closure.items()}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_importing_the_agent_and_backends_loads_no_fastapi() -> None:
    modules = ["serve_app.backends", "serve_app.agent.worker", "serve_app.agent.tokens"]
    code = (
        f"import sys\nfor m in {modules!r}: __import__(m)\n"
        "print(sorted(m for m in ('fastapi', 'starlette', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def _is_tool(module: str) -> bool:
    return module == TOOLS or module.startswith(f"{TOOLS}.")


def _tool_importers(imports_by: dict[str, set[str]]) -> dict[str, list[str]]:
    """Who imports the demo and evaluation tools, and which of them."""
    found = {name: sorted(filter(_is_tool, imports)) for name, imports in imports_by.items()}
    return {name: tools for name, tools in found.items() if tools}


def test_no_replica_imports_the_demo_or_evaluation_tools() -> None:
    closure = _project_closure(REPLICAS)
    assert {"deployments.graph", "deployments.router", "serve_app.routing.service"} <= set(closure)
    assert _tool_importers(closure) == {}


def test_in_the_runtime_package_only_the_cli_imports_the_tools() -> None:
    runtime = [p for p in (ROOT / "serve_app").rglob("*.py") if "cli" not in p.relative_to(ROOT).parts[1:2]]
    assert len(runtime) > 50
    assert _tool_importers({str(p.relative_to(ROOT)): _imports(p) for p in runtime}) == {}
    assert _tool_importers({"cli": _imports(ROOT / "serve_app" / "cli" / "run.py")})  # the CLI does
