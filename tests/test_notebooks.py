"""Notebooks run top to bottom in CI (nbclient), so they never rot."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("SUPPORTGRAPH_DATASETS", ROOT.parent / "shared" / "datasets"))


def executed(name: str) -> tuple[str, list[dict]]:
    """Run a notebook top to bottom; its printed text and its outputs (none of them an error)."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return "".join(o.get("text", "") for o in outputs), outputs


@pytest.mark.parametrize("name", ["routing_weights.ipynb"])
def test_notebook_executes(name: str, tmp_path: Path) -> None:
    if not (DATASETS / "routellm").is_dir():
        pytest.skip(f"datasets not found at {DATASETS} (set SUPPORTGRAPH_DATASETS)")
    text, outputs = executed(name)
    assert "best saved on the test curve" in text
    assert "guaranteed threshold" in text and "resplits" in text
    assert "threshold at 5% wrong" in text and "test replies:" in text  # the answers' risk-coverage part
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plots were drawn


def test_reranker_ab_notebook_executes() -> None:
    """Simulated logged outcomes, read daily: needs no dataset."""
    text, outputs = executed("reranker_ab.ipynb")
    assert "learned vs none: resolution +" in text and "A/A false positives" in text
    assert "A/B (+10 pts): sequential test significant from 2026-" in text
    assert "A/A with tenant units, flagged at p < 0.05: {'per request': " in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
