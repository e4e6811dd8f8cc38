"""An application cache over a backend URL: ``memory://`` by default, Redis when shared.

::

    from gennet_toolkit.cache import Cache

    cache = Cache("redis://127.0.0.1:6379/0", namespace="grn")

    @cache.cached(ttl="10m", key="gene:{symbol}", tags=["organism:{organism}"])
    async def gene(symbol: str, organism: str) -> dict: ...

    await cache.invalidate("gene:*")          # prefix, by SCAN
    await cache.invalidate_tags("organism:ecoli")  # O(1): a generation token per tag

Sync functions work too (they use the backend's sync form). One loader call per key at
a time: in-process single-flight for coroutines and threads, plus a Redis lock across
processes. JSON by default; pickle only with ``secret=`` (signed). See docs/cache.md.
"""

from __future__ import annotations

from gennet_toolkit.cache._common import MISS, CacheStats
from gennet_toolkit.cache._core import Cache
from gennet_toolkit.cache._decorator import AsyncCachedFunction, SyncCachedFunction
from gennet_toolkit.cache._serializers import (
    JsonSerializer,
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
    UnsafeValueError,
)
from gennet_toolkit.cache._sync import SyncCache

__all__ = [
    "MISS",
    "AsyncCachedFunction",
    "Cache",
    "CacheStats",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "SyncCache",
    "SyncCachedFunction",
    "UnsafeValueError",
]
