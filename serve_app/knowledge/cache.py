"""In-process LRU cache of query embeddings, with hit-rate counters."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from serve_app.costs.pricing import estimate_tokens
from serve_app.costs.usage import Usage
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
        return self._lookup(texts)[0]

    def embed_billed(self, texts: list[str]) -> tuple[np.ndarray, Usage | None]:
        """Vectors, and what the inner embedder billed for the cache misses (None: nothing billed)."""
        out, usage, _ = self._lookup(texts)
        return out, usage

    def embed_each(self, texts: list[str]) -> tuple[np.ndarray, list[Usage | None]]:
        """Vectors, and each text's share of the bill: a batch's tokens split over the texts it embedded
        in proportion to their estimated tokens; None for cache hits and repeats within the batch."""
        out, usage, missed = self._lookup(texts)
        each: list[Usage | None] = [None] * len(texts)
        if usage is not None:
            firsts = [rows[0] for rows in missed.values()]
            shares = usage.split([estimate_tokens(text) for text in missed])
            for row, share in zip(firsts, shares, strict=True):
                each[row] = share
        return out, each

    def _lookup(self, texts: list[str]) -> tuple[np.ndarray, Usage | None, dict[str, list[int]]]:
        usage = None
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
            if hasattr(self.inner, "embed_billed"):
                fresh, usage = self.inner.embed_billed(list(missing))
            else:
                fresh = self.inner.embed(list(missing))
            for (text, rows), vector in zip(missing.items(), fresh, strict=True):
                out[rows] = vector
                self._cache[text] = vector
            while len(self._cache) > self.maxsize:
                self._cache.popitem(last=False)
        return out, usage, missing

    def stats(self) -> dict[str, float]:
        return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hit_rate, "size": len(self._cache)}
