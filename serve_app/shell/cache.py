"""A bounded LRU of recommendation results for the ingress.

Keys are ``(query, bundle version)``; the query carries the effective weights, k,
diversity and seeds, so a key names exactly one answer: a weight change or a bundle
switch makes new keys, never a stale hit. The owner still clears the cache on both
events to free the memory at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from cachetools import LRUCache


class ResultCache:
    """``await cache.get(key, compute)``: the cached value, or ``compute()``'s, stored."""

    def __init__(self, size: int) -> None:
        self._lru: LRUCache = LRUCache(maxsize=size)
        self.hits = 0
        self.misses = 0

    async def get(
        self, key: Hashable, compute: Callable[[], Awaitable[Any]], keep: Callable[[Any], bool] = lambda value: True
    ) -> Any:
        """The cached value, or ``compute()``'s, stored when ``keep(value)``."""
        try:
            value = self._lru[key]
        except KeyError:
            self.misses += 1
            value = await compute()
            if keep(value):
                self.put(key, value)
            return value
        self.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` (a warm-up's answer) without counting a lookup."""
        if self._lru.maxsize > 0:
            self._lru[key] = value

    @property
    def size(self) -> int:
        return int(self._lru.maxsize)

    def resize(self, size: int) -> None:
        """A new bound (emptying the cache when it changes)."""
        if size != self.size:
            self._lru = LRUCache(maxsize=size)

    def clear(self) -> None:
        self._lru.clear()

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._lru), "hits": self.hits, "misses": self.misses}
