"""Query-embedding caches: an in-process LRU in front, optionally Redis behind it (shared by every
replica, kept across restarts), with hit-rate counters."""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np

from serve_app.costs.pricing import estimate_tokens
from serve_app.costs.usage import Usage
from serve_app.knowledge.embedders import Embedder
from serve_app.lru import LRU
from serve_app.metrics import Metrics

log = logging.getLogger(__name__)


class RedisVectors:
    """Query vectors in Redis: key = prefix, a digest of the model's name and a digest of the text;
    value = the float32 bytes; every entry expires `ttl_s` after it was written. Redis is only a cache:
    when it fails or times out, lookups miss and writes are dropped (counted in `errors`, logged at most
    once a minute), queries are embedded as usual, and Redis is left alone for `pause_s` so a dead one
    costs one timeout per pause, not one per batch."""

    def __init__(
        self,
        url: str,
        model: str,
        dim: int,
        ttl_s: int = 7 * 86_400,
        prefix: str = "supportgraph:emb",
        timeout_s: float = 0.25,
        pause_s: float = 5.0,
    ):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.dim, self.ttl_s = dim, ttl_s
        self.namespace = f"{prefix}:{hashlib.sha256(model.encode()).hexdigest()[:16]}:"
        self.errors = 0
        self.pause_s = pause_s
        self._paused_until = -np.inf
        self._logged_at = -np.inf
        self._error_types: tuple[type[Exception], ...] = (redis.RedisError, OSError)

    def key(self, text: str) -> str:
        return self.namespace + hashlib.sha256(text.encode()).hexdigest()

    @property
    def paused(self) -> bool:
        return time.monotonic() < self._paused_until

    def get_many(self, texts: list[str]) -> dict[str, np.ndarray]:
        if self.paused:
            return {}
        try:
            values = self.client.mget([self.key(t) for t in texts])
        except self._error_types as exc:
            self._failed("read", exc)
            return {}
        return {  # a value of another size (another dim, a foreign writer) is a miss, overwritten later
            text: np.frombuffer(value, np.float32).copy()
            for text, value in zip(texts, values, strict=True)
            if value is not None and len(value) == 4 * self.dim
        }

    def set_many(self, items: list[tuple[str, np.ndarray]]) -> None:
        if self.paused:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for text, vector in items:
                    pipe.set(self.key(text), np.asarray(vector, np.float32).tobytes(), ex=self.ttl_s)
                pipe.execute()
        except self._error_types as exc:
            self._failed("write", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        self.errors += 1
        self._paused_until = time.monotonic() + self.pause_s
        if time.monotonic() - self._logged_at > 60:
            self._logged_at = time.monotonic()
            log.warning(
                "redis embedding cache %s failed (%d so far), embedding without it: %s",
                what,
                self.errors,
                exc,
            )


class CachedEmbedder:
    """Wraps an Embedder: repeated texts (queries) are served from an LRU of `maxsize` vectors, then from
    `shared` (Redis) when given; what neither has is embedded and written to both."""

    def __init__(self, inner: Embedder, maxsize: int = 10_000, shared: RedisVectors | None = None):
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.maxsize = maxsize
        self.shared = shared
        self._cache: LRU[str, np.ndarray] = LRU(maxsize)
        self.hits = 0  # from the LRU or from Redis
        self.shared_hits = 0
        self.misses = 0  # embedded
        self.metrics: Metrics | None = None

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def embed(self, texts: list[str]) -> tuple[np.ndarray, Usage | None]:
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
        """Vectors, what embedding the misses was billed, and the missed texts (-> their rows)."""
        usage = None
        out = np.empty((len(texts), self.dim), np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            vector = self._cache.lookup(text)
            if vector is None:
                missing.setdefault(text, []).append(i)
            else:
                out[i] = vector
        if missing and self.shared is not None:
            for text, vector in self.shared.get_many(list(missing)).items():
                rows = missing.pop(text)
                out[rows] = vector
                self._remember(text, vector)
                self.shared_hits += len(rows)
        hits = len(texts) - sum(len(v) for v in missing.values())
        self.hits += hits
        self.misses += len(texts) - hits
        if self.metrics is not None:
            self.metrics.inc("supportgraph_embedding_lookups", len(texts), model=self.name)
            self.metrics.inc("supportgraph_embedding_cache_hits", hits, model=self.name)
        if missing:
            fresh, usage = self.inner.embed(list(missing))
            for (text, rows), vector in zip(missing.items(), fresh, strict=True):
                out[rows] = vector
                self._remember(text, vector)
            if self.shared is not None:
                self.shared.set_many(list(zip(missing, fresh, strict=True)))
        return out, usage, missing

    def _remember(self, text: str, vector: np.ndarray) -> None:
        self._cache.put(text, vector)

    def stats(self) -> dict[str, float]:
        out = {"hits": self.hits, "misses": self.misses, "hit_rate": self.hit_rate, "size": len(self._cache)}
        if self.shared is not None:
            out |= {"redis_hits": self.shared_hits, "redis_errors": self.shared.errors}
        return out
