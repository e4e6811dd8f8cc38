"""advanced_cache: per-operation cost of our caches next to cachetools, policy by policy.

Suites:

- ``advanced_cache-get-hit``: ``cache[key]`` on a full cache of 1,000 items, keys cycling
  over all of them (every call a hit), ours vs cachetools for LRU, LFU, FIFO and TTL.
- ``advanced_cache-set-evict``: ``cache[new_key] = value`` on a full cache (every call
  evicts one item), same pairs.
- ``advanced_cache-tiered``: ``TieredCache.get`` answered by L1, and by L2 on memory://
  (L1 missed), next to a bare ``LRUCache`` hit.

Ours take a lock on writes and on LFU hits (hits on LRU/FIFO/TTL are lock-free) and count
hits, misses and evictions; cachetools takes no lock and counts nothing, so the comparison
is "thread-safe with stats" against "bare". ``cachetools LFU + Lock`` shows the LFU hit
with the lock a threaded cachetools user has to add.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

import cachetools

from benchmarks._harness import Suite
from gennet_toolkit.advanced_cache import FIFOCache, LFUCache, LRUCache, TieredCache, TTLCache

SIZE = 1000


def pairs() -> list[tuple[str, MutableMapping[int, int], MutableMapping[int, int]]]:
    """Fresh (policy, ours, cachetools) triples."""
    return [
        ("LRU", LRUCache(SIZE), cachetools.LRUCache(SIZE)),
        ("LFU", LFUCache(SIZE), cachetools.LFUCache(SIZE)),
        ("FIFO", FIFOCache(SIZE), cachetools.FIFOCache(SIZE)),
        ("TTL", TTLCache(SIZE, 3600), cachetools.TTLCache(SIZE, 3600)),
    ]


def get_hit(cache: MutableMapping[int, int]) -> Callable[[], Any]:
    """One hit per call, cycling over every key of a full cache."""
    for i in range(SIZE):
        cache[i] = i
    keys = itertools.cycle(range(SIZE))
    return lambda: cache[next(keys)]


def locked_get_hit(cache: MutableMapping[int, int]) -> Callable[[], Any]:
    """A hit through a ``threading.Lock`` held around the call, as thread-safe cachetools use
    needs (``cachetools.cached(lock=...)`` does the same)."""
    for i in range(SIZE):
        cache[i] = i
    keys = itertools.cycle(range(SIZE))
    lock = threading.Lock()

    def op() -> int:
        with lock:
            return cache[next(keys)]

    return op


def set_evict(cache: MutableMapping[int, int]) -> Callable[[], Any]:
    """One insert of a new key per call into a full cache (so one eviction per call)."""
    for i in range(SIZE):
        cache[i] = i
    counter = itertools.count(SIZE)

    def op() -> None:
        k = next(counter)
        cache[k] = k

    return op


def tiered_suite() -> Suite:
    """TieredCache hits in L1 and in L2 (memory://) next to a bare LRUCache hit."""
    suite = Suite("advanced_cache-tiered", description="one TieredCache.get per call")
    bare: LRUCache[str, int] = LRUCache(SIZE)
    bare["k"] = 1
    l1_tier = TieredCache(LRUCache(SIZE), "memory://", invalidate=False)
    l2_tier = TieredCache(LRUCache(SIZE), "memory://", invalidate=False)
    asyncio.run(l1_tier.set("k", {"id": 1}))
    asyncio.run(l2_tier.set("k", {"id": 1}))

    async def l1_hit() -> Any:
        return await l1_tier.get("k")

    async def l2_hit() -> Any:
        l2_tier.l1.clear()
        return await l2_tier.get("k")

    suite.add("LRUCache hit", lambda: bare["k"])
    suite.add("tiered L1 hit (async)", l1_hit)
    suite.add("tiered L1 hit (sync)", lambda: l1_tier.sync.get("k"))
    suite.add("tiered L2 hit memory:// (async)", l2_hit)
    suite.compare("tiered L1 hit (async)", "LRUCache hit")
    return suite


def main() -> None:
    """Run every suite; print Markdown tables and write benchmarks/results/."""
    gets = Suite("advanced_cache-get-hit", description="cache[key], a hit, full cache of 1000")
    for name, ours, theirs in pairs():
        gets.add(f"ours {name}", get_hit(ours))
        gets.add(f"cachetools {name}", get_hit(theirs))
        gets.compare(f"ours {name}", f"cachetools {name}")
    # Our LFU locks every hit (a use moves the key between buckets); cachetools does not
    # lock at all, so also compare with cachetools behind the lock threads would need.
    gets.add("cachetools LFU + Lock", locked_get_hit(cachetools.LFUCache(SIZE)))
    gets.compare("ours LFU", "cachetools LFU + Lock")
    gets.run()

    sets = Suite("advanced_cache-set-evict", description="cache[new] = v, one eviction per call")
    for name, ours, theirs in pairs():
        sets.add(f"ours {name}", set_evict(ours))
        sets.add(f"cachetools {name}", set_evict(theirs))
        sets.compare(f"ours {name}", f"cachetools {name}")
    sets.run()

    tiered_suite().run()


if __name__ == "__main__":
    main()
