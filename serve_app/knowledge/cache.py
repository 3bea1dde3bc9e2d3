"""In-process LRU cache of query embeddings, with hit-rate counters."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from serve_app.knowledge.embedders import Embedder
from serve_app.metrics import Metrics


class CachedEmbedder:
    """Wraps an Embedder: repeated texts (queries) are served from an LRU of `maxsize` vectors."""

    def __init__(self, inner: Embedder, maxsize: int = 10_000):
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.maxsize = maxsize
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.metrics: Metrics | None = None

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            vector = self._cache.get(text)
            if vector is None:
                missing.setdefault(text, []).append(i)
            else:
                self._cache.move_to_end(text)
                out[i] = vector
        hits = len(texts) - sum(len(v) for v in missing.values())
        self.hits += hits
        self.misses += len(texts) - hits
        if self.metrics is not None:
            self.metrics.inc("supportgraph_embedding_lookups", len(texts), model=self.name)
            self.metrics.inc("supportgraph_embedding_cache_hits", hits, model=self.name)
        if missing:
            fresh = self.inner.embed(list(missing))
            for (text, rows), vector in zip(missing.items(), fresh, strict=True):
                out[rows] = vector
                self._cache[text] = vector
            while len(self._cache) > self.maxsize:
                self._cache.popitem(last=False)
        return out

    def stats(self) -> dict[str, float]:
        return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hit_rate, "size": len(self._cache)}
