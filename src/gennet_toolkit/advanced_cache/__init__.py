"""Bounded in-memory caches (LRU, LFU, FIFO, TTL) and a two-level cache over a backend.

::

    from gennet_toolkit.advanced_cache import LRUCache, TTLCache, TieredCache, cached

    genes = LRUCache(maxsize=10_000)          # a thread-safe MutableMapping, O(1) ops
    genes["lacZ"] = {"id": "b0344"}
    genes.stats().hit_ratio

    @cached(TTLCache(maxsize=1024, ttl=60))   # sync or async, one call per key at a time
    async def load_network(network_id: int) -> dict: ...

    tiered = TieredCache(LRUCache(1024), "redis://127.0.0.1:6379/0", ttl=300)
    async with tiered:                        # listens for other processes' invalidations
        net = await tiered.get_or_load("net:1", lambda: load_network(1))

Every cache takes one lock per operation (compound operations included); see
``docs/advanced_cache.md`` for the eviction orders, the TTL rules and failure behaviour.
"""

from __future__ import annotations

from gennet_toolkit.advanced_cache._lfu import LFUCache
from gennet_toolkit.advanced_cache._policies import BaseCache, CacheStats, FIFOCache, LRUCache
from gennet_toolkit.advanced_cache._serializers import (
    JsonSerializer,
    SerializationError,
    Serializer,
    SignedPickleSerializer,
)
from gennet_toolkit.advanced_cache._tiered import SyncTieredCache, TieredCache, TieredStats
from gennet_toolkit.advanced_cache._tools import WarmResult, cached, hashkey, stats, warm
from gennet_toolkit.advanced_cache._ttl import TTLCache

__all__ = [
    "BaseCache",
    "CacheStats",
    "FIFOCache",
    "JsonSerializer",
    "LFUCache",
    "LRUCache",
    "SerializationError",
    "Serializer",
    "SignedPickleSerializer",
    "SyncTieredCache",
    "TTLCache",
    "TieredCache",
    "TieredStats",
    "WarmResult",
    "cached",
    "hashkey",
    "stats",
    "warm",
]
