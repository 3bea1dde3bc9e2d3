"""The one LRU mapping: bounded, a read refreshes a key, a peek does not."""

from __future__ import annotations

from serve_app.lru import LRU


def test_the_least_recently_used_key_goes_first() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.lookup("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert list(cache) == ["a", "c"] and "b" not in cache and len(cache) == 2


def test_a_peek_keeps_the_order_and_a_rewrite_refreshes() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1 and cache.get("zz", 7) == 7 and cache.lookup("zz") is None
    cache.put("b", 3)  # rewriting b refreshes it; a stays the oldest
    cache.put("c", 4)
    assert list(cache) == ["b", "c"] and cache.pop("b") == 3 and cache.pop("b") is None
    cache.touch("c")
    assert list(cache) == ["c"]
