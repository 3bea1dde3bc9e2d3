"""What a knowledge query may be: the search modes, the length limit, and the checks that turn a bad
query into `QueryError` (HTTP 422) before any backend sees it. Shared by the Retriever, the HTTP layer
(request validation) and the router (which trims questions to the limit)."""

from __future__ import annotations

from typing import Literal

from serve_app.errors import QueryError

Mode = Literal["bm25", "dense", "hybrid", "hybrid_rerank"]
MODES: tuple[str, ...] = ("bm25", "dense", "hybrid", "hybrid_rerank")
MAX_QUERY_CHARS = 2000


def check_query(query: str) -> str:
    """The query's text, stripped; QueryError when it is empty, too long or holds a NUL."""
    text = (query or "").strip()
    if not text:
        raise QueryError("query is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"query is {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
    if "\x00" in text:
        raise QueryError("query contains a NUL character")
    return text


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise QueryError(f"unknown mode {mode!r} ({', '.join(MODES)})")
