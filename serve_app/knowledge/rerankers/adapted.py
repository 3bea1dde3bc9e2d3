"""The `adapted` reranker: each tenant's own cross-encoder (`supportgraph adapt`), loaded per tenant.

A tenant's model lives in `<models>/<tenant>/reranker/` (knowledge/adapt.py writes it). The reranker
keeps the last `max_models` tenants' models loaded (least recently used goes first) and reloads a
tenant's model when its `adapted.json` changes (a new `adapt` run), so a served replica picks up a
retrained model on the tenant's next search.

A tenant without a model falls back: its candidates are ranked by the learned evidence reranker (the
default arm's model) when they carry retrieval evidence, else kept in the fused order. The ranking says
which happened in `last_source` (for tests and stats); nothing fails.

In the graph the Reranker deployment loads models through `@serve.multiplexed` (one model id per
tenant, so Serve routes a tenant's searches to a replica that has its model) and calls `rerank_with`;
in-process callers (CLI, evaluation) call `rerank_for`, which loads through the same LRU.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from serve_app.knowledge.pairs import as_read
from serve_app.knowledge.rerankers.cross_encoder import CrossEncoderReranker
from serve_app.knowledge.rerankers.learned import LearnedFusionReranker
from serve_app.tenancy import validate_tenant_id

if TYPE_CHECKING:
    from serve_app.costs.usage import Usage
    from serve_app.knowledge.rerankers import Candidate, Ranking

META = "adapted.json"  # written by knowledge/adapt.py beside the model


class NoAdaptedModel(LookupError):
    """The tenant has no trained reranker (`supportgraph adapt --tenant T` makes one)."""


class TenantModel:
    """One tenant's cross-encoder and the version (its report's mtime) it was loaded from."""

    def __init__(self, folder: Path, device: str, batch_size: int):
        self.folder, self.device, self.batch_size = folder, device, batch_size
        self._read()

    def _read(self) -> None:
        meta = self.folder / META
        if not meta.exists():
            raise NoAdaptedModel(f"no adapted reranker at {self.folder}")
        self.version = meta.stat().st_mtime_ns
        max_length = int(json.loads(meta.read_text())["config"]["max_length"])
        self.cross_encoder = CrossEncoderReranker(
            str(self.folder), device=self.device, max_length=max_length, batch_size=self.batch_size
        )

    def stale(self) -> bool:
        meta = self.folder / META
        return not meta.exists() or meta.stat().st_mtime_ns != self.version

    def refreshed(self) -> TenantModel:
        """Itself, read again first when a newer model was published in its folder since."""
        if self.stale():
            self._read()
        return self

    def rerank(self, query: str, candidates: list[Candidate], top_n: int) -> Ranking:
        """Scores the candidates in the form the model was trained on (`pairs.passage_text`)."""
        read = [replace(c, text=as_read(c.text)) for c in candidates]
        return self.cross_encoder.rerank(query, read, top_n)[0]


class AdaptedReranker:
    """Per-tenant cross-encoders under `models` (default: `<state_dir>/models`)."""

    name = "adapted"

    def __init__(
        self,
        models: str | Path,
        device: str = "cpu",
        max_models: int = 4,
        batch_size: int = 32,
        candidates: int = 20,
    ):
        """`candidates`: the model scores the first this many (its cost grows with each: see
        benchmarks/rerank_bench.py); the rest keep their order below them."""
        self.models = Path(models).expanduser()
        self.candidates = candidates
        self.device, self.batch_size, self.max_models = device, batch_size, max_models
        self.loaded: OrderedDict[str, TenantModel] = OrderedDict()
        self.fallback = LearnedFusionReranker()
        self.last_source = ""  # "model" or "fallback": what ranked the last call

    def folder(self, tenant_id: str) -> Path:
        return self.models / validate_tenant_id(tenant_id) / "reranker"

    def has_model(self, tenant_id: str) -> bool:
        return (self.folder(tenant_id) / META).exists()

    def load(self, tenant_id: str) -> TenantModel:
        """The tenant's model, freshly read (raises NoAdaptedModel where it has none)."""
        return TenantModel(self.folder(tenant_id), self.device, self.batch_size)

    def model_for(self, tenant_id: str) -> TenantModel | None:
        """The tenant's model from the LRU (loaded or reloaded as needed), or None where it has none."""
        model = self.loaded.get(tenant_id)
        if model is None or model.stale():
            self.loaded.pop(tenant_id, None)
            if not self.has_model(tenant_id):
                return None
            model = self.load(tenant_id)
            self.loaded[tenant_id] = model
            while len(self.loaded) > self.max_models:
                self.loaded.popitem(last=False)
        self.loaded.move_to_end(tenant_id)
        return model

    def rerank_with(
        self, model: TenantModel | None, query: str, candidates: list[Candidate], top_n: int
    ) -> tuple[Ranking, Usage | None]:
        """Rank with `model`, or by the fallback when there is none; a self-hosted model bills nothing."""
        if model is not None:
            self.last_source = "model"
            head = candidates[: self.candidates]
            ranking = model.rerank(query, head, len(head))
            floor = min((score for _, score in ranking), default=0.0)
            tail = [(i, floor - (i - len(head) + 1) * 1e-6) for i in range(len(head), len(candidates))]
            return (ranking + tail)[:top_n], None
        self.last_source = "fallback"
        if candidates and all(c.evidence is not None for c in candidates):
            return self.fallback.rerank(query, candidates, top_n)
        return [(i, 1.0 / (1 + i)) for i in range(min(top_n, len(candidates)))], None

    def rerank_for(
        self, tenant_id: str, query: str, candidates: list[Candidate], top_n: int
    ) -> tuple[Ranking, Usage | None]:
        return self.rerank_with(self.model_for(tenant_id), query, candidates, top_n)

    def rerank(self, query: str, candidates: list[Candidate], top_n: int) -> tuple[Ranking, Usage | None]:
        raise TypeError("the adapted reranker is per tenant: call rerank_for(tenant_id, ...)")
