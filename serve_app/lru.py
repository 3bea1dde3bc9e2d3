"""One small least-recently-used mapping, for the bounded caches and stream tables of the replicas.

`get` reads without touching the order (like `dict.get`); `lookup` is a cache read (a hit becomes the
most recently used); `put` stores as the most recently used and forgets the least recently used keys
past `maxsize`. Not thread-safe: owners that share one across threads hold their own lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A mapping of at most `maxsize` keys (the least recently used forgotten first)."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value, or `default`; the order is not touched."""
        return self._items.get(key, default)

    def lookup(self, key: K) -> V | None:
        """A cache read: the value (now the most recently used), or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def touch(self, key: K) -> None:
        """Mark `key` as the most recently used."""
        self._items.move_to_end(key)

    def put(self, key: K, value: V) -> None:
        """Store `value` as the most recently used; forget the least recently used past `maxsize`."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def pop(self, key: K, default: V | None = None) -> V | None:
        return self._items.pop(key, default)
