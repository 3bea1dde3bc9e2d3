"""The sentence embedder the answer model was fitted with: the bundled MiniLM, loaded once per process,
behind an LRU cache (the same passages' units recur across questions)."""

from __future__ import annotations

import functools
import threading

import numpy as np

from serve_app.answers.evidence import Embed

MODEL = "all-MiniLM-L6-v2"
CACHE = 50_000  # units and questions kept (~80 MB of float32 vectors at most)


@functools.lru_cache(maxsize=1)
def local_embed() -> tuple[Embed, str]:
    """(embed, the embedder's name): texts -> L2-normalised float32 rows; safe to call from threads."""
    from serve_app.knowledge.factory import build_embedder
    from serve_app.settings import EmbedderSettings

    embedder = build_embedder(EmbedderSettings(model=MODEL, cache_size=CACHE))
    lock = threading.Lock()

    def embed(texts: list[str]) -> np.ndarray:
        with lock:  # one model, one batch at a time
            return np.asarray(embedder.embed(texts)[0], dtype=np.float32)

    return embed, embedder.name


def local_space() -> str:
    """The vector space of `local_embed`'s vectors (`EmbedderSettings.space()`): a knowledge base whose
    embedder is the same model takes them for its queries."""
    from serve_app.settings import EmbedderSettings

    return EmbedderSettings(model=MODEL).space()
