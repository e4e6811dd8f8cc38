"""cache: cached-call hit cost and stampede behaviour vs cashews and aiocache.

Suites:

- ``cache-hit-memory``: one call of a cached function whose entry is present, in-process
  store. Ours (async and sync decorators), cashews ``@cache(ttl=...)`` on ``mem://``,
  aiocache ``@cached`` on ``SimpleMemoryCache``, and ``functools.lru_cache`` as the
  floor (no TTL, no serialization: not a like-for-like peer).
- ``cache-hit-redis``: the same with the entries on local Redis. Library defaults:
  ours JSON, cashews pickle, aiocache JSON.
- ``cache-stampede-memory`` / ``cache-stampede-redis``: one op = drop the entry, then 50
  concurrent cold calls of a coroutine that sleeps 20 ms. Time per burst, and (notes)
  how many times the function ran per burst. Ours: in-process single-flight (+ the
  Redis lock on Redis); cashews: default (in-process) and ``lock=True``; aiocache:
  ``@cached`` and ``@cached_stampede``.

Peers come from the ``bench`` extra: cashews, aiocache. Redis is ``REDIS_URL`` (default
``redis://127.0.0.1:6379/15``); keys live under a per-run prefix deleted at the end.
Without Redis only the memory suites run.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import os
import socket
import uuid
import warnings
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from benchmarks._harness import Suite
from gennet_toolkit.backends import from_url
from gennet_toolkit.cache import Cache

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
PREFIX = f"gnbench:{uuid.uuid4().hex[:8]}:"
CALLERS = 50


def redis_available() -> bool:
    """Whether the benchmark Redis accepts connections."""
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


def have(name: str) -> bool:
    """Whether a peer library is installed."""
    return importlib.util.find_spec(name) is not None


async def gene(symbol: str) -> dict[str, Any]:
    return {"symbol": symbol, "organism": "ecoli", "length": 3075}


def gene_sync(symbol: str) -> dict[str, Any]:
    return {"symbol": symbol, "organism": "ecoli", "length": 3075}


def _redis_parts() -> tuple[str, int, int]:
    parts = urlsplit(REDIS_URL)
    db = int((parts.path or "/0").lstrip("/") or 0)
    return parts.hostname or "127.0.0.1", parts.port or 6379, db


def hit_suite(kind: str) -> Suite:
    """Hit cost on ``memory`` or ``redis``."""
    suite = Suite(
        f"cache-hit-{kind}",
        description=f"one cached call whose entry is present ({kind} store)",
    )
    if kind == "memory":
        ours = Cache("memory://")
    else:
        ours = Cache(from_url(REDIS_URL, prefix=PREFIX + "ours:"))
    ours_async = ours.cached(ttl=600)(gene)
    ours_sync = ours.cached(ttl=600)(gene_sync)

    async def ours_async_case() -> None:
        await ours_async("lacZ")

    suite.add("ours-async", ours_async_case)
    suite.add("ours-sync", lambda: ours_sync("lacZ"))
    if kind == "memory":
        floor = functools.lru_cache(maxsize=None)(gene_sync)
        suite.add("functools.lru_cache (floor)", lambda: floor("lacZ"))
    if have("cashews"):
        import cashews

        cc = cashews.Cache()
        if kind == "memory":
            cc.setup("mem://")
        else:
            cc.setup(REDIS_URL)
        cfn = cc(ttl="10m", key=PREFIX + "cashews:{symbol}")(gene)

        async def cashews_case() -> None:
            await cfn("lacZ")

        suite.add("cashews", cashews_case)
        suite.compare("ours-async", "cashews")
    if have("aiocache"):
        from aiocache import RedisCache, SimpleMemoryCache, cached

        if kind == "memory":
            afn = cached(ttl=600, cache=SimpleMemoryCache)(gene)
        else:
            host, port, db = _redis_parts()
            afn = cached(
                ttl=600,
                cache=RedisCache,
                endpoint=host,
                port=port,
                db=db,
                namespace=PREFIX + "aiocache",
            )(gene)

        async def aiocache_case() -> None:
            await afn("lacZ")

        suite.add("aiocache", aiocache_case)
        suite.compare("ours-async", "aiocache")
    return suite


class Burst:
    """50 concurrent cold calls of a 20 ms coroutine; counts function runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.bursts = 0
        self.errors = 0

    async def slow(self, symbol: str) -> dict[str, Any]:
        self.runs += 1
        await asyncio.sleep(0.02)
        return {"symbol": symbol}

    def case(
        self, fn: Callable[[str], Awaitable[Any]], drop: Callable[[], Awaitable[Any]]
    ) -> Callable[[], Awaitable[None]]:
        async def op() -> None:
            await drop()
            self.bursts += 1
            results = await asyncio.gather(
                *[fn("lacZ") for _ in range(CALLERS)], return_exceptions=True
            )
            self.errors += sum(isinstance(r, BaseException) for r in results)

        return op

    def summary(self, label: str) -> str:
        per = self.runs / max(1, self.bursts)
        return (
            f"{label}: the function ran {per:.2f}× per burst of {CALLERS} cold callers"
            f" ({self.errors} caller errors over {self.bursts} bursts)"
        )


def stampede_suite(kind: str) -> tuple[Suite, dict[str, Burst]]:
    """50 concurrent cold callers on ``memory`` or ``redis``."""
    suite = Suite(
        f"cache-stampede-{kind}",
        description=f"drop the entry, then {CALLERS} concurrent cold calls of a 20 ms"
        f" coroutine ({kind} store); time per burst",
        rounds=9,
    )
    bursts: dict[str, Burst] = {}

    b = bursts["ours"] = Burst()
    if kind == "memory":
        ours = Cache("memory://")
    else:
        ours = Cache(from_url(REDIS_URL, prefix=PREFIX + "ours-st:"))
    ofn = ours.cached(ttl=600, key="stampede:{symbol}")(b.slow)
    suite.add("ours", b.case(ofn, lambda: ofn.invalidate("lacZ")))

    if have("cashews"):
        import cashews

        for lock in (False, True):
            label = "cashews lock=True" if lock else "cashews"
            b = bursts[label] = Burst()
            cc = cashews.Cache()
            cc.setup("mem://" if kind == "memory" else REDIS_URL)
            key = f"{PREFIX}cashews-st-{lock}:lacZ"
            cfn = cc(ttl="10m", key=key, lock=lock)(b.slow)
            suite.add(label, b.case(cfn, functools.partial(cc.delete, key)))
            suite.compare("ours", label)
    if have("aiocache"):
        from aiocache import RedisCache, SimpleMemoryCache, cached, cached_stampede

        for deco, label in ((cached, "aiocache"), (cached_stampede, "aiocache cached_stampede")):
            b = bursts[label] = Burst()
            opts: dict[str, Any] = {"ttl": 600, "key_builder": lambda f, *a, **k: "stampede"}
            if kind == "memory":
                opts["cache"] = SimpleMemoryCache
            else:
                host, port, db = _redis_parts()
                opts.update(cache=RedisCache, endpoint=host, port=port, db=db)
                opts["namespace"] = f"{PREFIX}{label.replace(' ', '-')}"
            if deco is cached_stampede:
                opts["lease"] = 2
            dec = deco(**opts)
            afn = dec(b.slow)
            suite.add(label, b.case(afn, functools.partial(dec.cache.delete, "stampede")))
            suite.compare("ours", label)
    return suite, bursts


def cleanup() -> None:
    """Delete the run's Redis keys."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=PREFIX + "*", count=1000))
        keys += list(client.scan_iter(match="*" + PREFIX + "*", count=1000))
        if keys:
            client.delete(*set(keys))
    finally:
        client.close()


def main() -> None:
    """Run the hit and stampede suites on memory, and on Redis when it answers."""
    # Peers' loggers and unclosed-connection warnings at loop close are noise here.
    logging.getLogger("cashews").setLevel(logging.CRITICAL)
    logging.getLogger("aiocache").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore", ResourceWarning)
    kinds = ["memory"] + (["redis"] if redis_available() else [])
    try:
        for kind in kinds:
            hit_suite(kind).run()
        for kind in kinds:
            suite, bursts = stampede_suite(kind)
            suite.run(write=False)  # warm-up and calibration bursts are counted too
            for label, burst in bursts.items():
                suite.note(burst.summary(label))
            print("\n".join(suite.notes))
            suite.write()
    finally:
        if "redis" in kinds:
            cleanup()


if __name__ == "__main__":
    main()
