"""Self-hosted cross-encoder (e.g. BAAI/bge-reranker-v2-m3) by hub name or local path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from serve_app.costs.usage import Usage
    from serve_app.knowledge.rerankers import Candidate, Ranking


class CrossEncoderReranker:
    def __init__(
        self,
        model: str = "BAAI/bge-reranker-v2-m3",
        device: str = "cpu",
        max_length: int = 512,
        batch_size: int = 16,
    ):
        from serve_app.knowledge.embedders.local import quiet_transformers

        quiet_transformers()
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(model, device=device, max_length=max_length)
        self.name = f"cross-encoder:{model}"
        self.batch_size = batch_size

    def rerank(self, query: str, candidates: list[Candidate], top_n: int) -> tuple[Ranking, Usage | None]:
        """The ranking; a self-hosted model bills nothing."""
        documents = [c.text for c in candidates]
        if not documents:
            return [], None
        scores = np.asarray(
            self.model.predict(
                [(query, d) for d in documents], batch_size=self.batch_size, show_progress_bar=False
            ),
            dtype=np.float64,
        ).reshape(len(documents), -1)[:, -1]
        order = np.argsort(-scores, kind="stable")[:top_n]
        return [(int(i), float(scores[i])) for i in order], None
