"""backends: each operation on memory:// vs redis://, and our overhead over raw redis-py.

Suites:

- ``backends-sync`` / ``backends-async``: one call of each operation, memory vs Redis
  (the ratio shows what a network round trip to a local Redis costs).
- ``backends-vs-redis-py``: the same single command (GET, SET with TTL, INCR) through
  our backend and through a bare redis-py client on an equally sized blocking pool,
  sync and async; the ratio is our overhead (argument building, error mapping).
- ``backends-rate-limits``: our rate-limit window updates vs the ``limits`` library's
  limiters on the same storage (memory and Redis).

Redis is ``REDIS_URL`` (default ``redis://127.0.0.1:6379/15``); every key lives under a
per-run prefix, deleted at the end. Without Redis, only the memory cases run.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from benchmarks._harness import Suite
from gennet_toolkit.backends import Backend, from_url

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
PREFIX = f"gnbench:{uuid.uuid4().hex[:8]}:"
BIG = 10**9  # a limit never reached: the benchmarks time the allowed path
TWO_LIMITS = ((BIG, 60.0), (BIG, 86400.0))  # one key, a minute and a day


def redis_available() -> bool:
    """Whether the benchmark Redis accepts connections."""
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


def sync_ops(b: Backend) -> dict[str, Callable[[], Any]]:
    """One call of each operation through the sync form."""
    s = b.sync
    s.set("get", "value")
    s.set("cas", "a")
    lock = s.lock("bench", ttl=30)

    def lock_cycle() -> None:
        lock.acquire()
        lock.release()

    held = s.lock("bench-held", ttl=30)
    held.acquire()
    batch = {f"m{i}": "v" for i in range(10)}

    def delete_cycle() -> None:
        s.set("del", "v")
        s.delete("del")

    def prefix_cycle() -> None:
        s.set_many({"dp:a": "1", "dp:b": "2"})
        s.delete_prefix("dp:")

    def cas_swap() -> None:
        if not s.compare_and_set("cas", "a", "b"):
            s.compare_and_set("cas", "b", "a")

    return {
        "get": lambda: s.get("get"),
        "set ttl": lambda: s.set("set", "value", ttl=60),
        "set nx": lambda: s.set("get", "value", nx=True),
        "get_many(10)": lambda: s.get_many([f"m{i}" for i in range(10)]),
        "set_many(10) (Lua)": lambda: s.set_many(batch, ttl=60),
        "ttl": lambda: s.ttl("get"),
        "expire": lambda: s.expire("get", 3600),
        "set+delete": delete_cycle,
        "set_many(2)+delete_prefix": prefix_cycle,
        "incr": lambda: s.incr("incr"),
        "incr ttl (Lua)": lambda: s.incr("incr-ttl", ttl=60),
        "compare_and_set (Lua)": cas_swap,
        "lock acquire+release": lock_cycle,
        "lock extend (Lua)": held.extend,
        "publish (0 subscribers)": lambda: s.publish("nobody", "x"),
        "fixed_window (Lua)": lambda: s.fixed_window("fw", BIG, 60),
        "sliding_window (Lua)": lambda: s.sliding_window("sw", BIG, 60),
        "gcra (Lua)": lambda: s.gcra("gcra", BIG, 60),
    }


def async_ops(b: Backend) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of the main operations through the async form."""

    async def get() -> Any:
        return await b.get("get")

    async def incr() -> Any:
        return await b.incr("incr")

    async def set_ttl() -> Any:
        return await b.set("set", "value", ttl=60)

    async def sliding() -> Any:
        return await b.sliding_window("sw", BIG, 60)

    async def gcra() -> Any:
        return await b.gcra("gcra", BIG, 60)

    return {"get": get, "set ttl": set_ttl, "incr": incr, "sliding_window": sliding, "gcra": gcra}


def memory_vs_redis(memory: Backend, redis: Backend | None) -> None:
    """Suites ``backends-sync`` and ``backends-async``."""
    sync = Suite("backends-sync", description="one call per operation, sync form", rounds=9)
    for name, fn in sync_ops(memory).items():
        sync.add(f"memory {name}", fn)
    if redis is not None:
        for name, fn in sync_ops(redis).items():
            sync.add(f"redis {name}", fn)
            sync.compare(f"memory {name}", f"redis {name}")
    sync.run()

    asuite = Suite("backends-async", description="one call per operation, async form", rounds=9)
    for name, afn in async_ops(memory).items():
        asuite.add(f"memory {name}", afn)
    if redis is not None:
        for name, afn in async_ops(redis).items():
            asuite.add(f"redis {name}", afn)
            asuite.compare(f"memory {name}", f"redis {name}")
    asuite.run()


def ours_vs_redis_py(ours: Backend) -> None:
    """Suite ``backends-vs-redis-py``: the same single command, ours vs bare redis-py."""
    import redis
    import redis.asyncio as aredis

    raw = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(REDIS_URL))
    araw = aredis.Redis(connection_pool=aredis.BlockingConnectionPool.from_url(REDIS_URL))
    raw.set(PREFIX + "get", "value")
    s = ours.sync

    async def ours_get() -> Any:
        return await ours.get("get")

    async def raw_get() -> Any:
        return await araw.get(PREFIX + "get")

    async def ours_incr() -> Any:
        return await ours.incr("incr")

    async def raw_incr() -> Any:
        return await araw.incr(PREFIX + "incr")

    suite = Suite(
        "backends-vs-redis-py",
        description="one command through our Redis backend vs a bare redis-py client",
        rounds=9,
    )
    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("sync GET", lambda: s.get("get"), lambda: raw.get(PREFIX + "get")),
        (
            "sync SET PX",
            lambda: s.set("set", "v", ttl=60),
            lambda: raw.set(PREFIX + "set", "v", px=60_000),
        ),
        ("sync INCR", lambda: s.incr("incr"), lambda: raw.incr(PREFIX + "incr")),
        ("async GET", ours_get, raw_get),
        ("async INCR", ours_incr, raw_incr),
    ]
    for name, mine, theirs in cases:
        suite.add(f"ours {name}", mine)
        suite.add(f"redis-py {name}", theirs)
        suite.compare(f"ours {name}", f"redis-py {name}")
    suite.run()
    raw.close()
    # The harness closed its loop: the async pool's sockets go with the process.


def ours_vs_limits(memory: Backend, redis_backend: Backend | None) -> None:
    """Suite ``backends-rate-limits``: our window updates vs ``limits`` on the same store."""
    from limits import RateLimitItemPerDay, RateLimitItemPerMinute
    from limits.storage import storage_from_string
    from limits.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter

    item = RateLimitItemPerMinute(BIG)
    day = RateLimitItemPerDay(BIG)
    suite = Suite(
        "backends-rate-limits",
        description="one allowed hit of a per-minute limit, sync form, vs the limits library",
        rounds=9,
    )
    stores: list[tuple[str, Backend, str]] = [("memory", memory, "memory://")]
    if redis_backend is not None:
        stores.append(("redis", redis_backend, REDIS_URL))
    for label, ours, url in stores:
        options = {"key_prefix": PREFIX + "limits"} if label == "redis" else {}
        storage = storage_from_string(url, **options)
        fixed = FixedWindowRateLimiter(storage)
        sliding = SlidingWindowCounterRateLimiter(storage)
        s = ours.sync
        suite.add(f"ours {label} fixed", lambda s=s: s.fixed_window("lfw", BIG, 60))
        suite.add(f"limits {label} fixed", lambda f=fixed: f.hit(item, "lfw"))
        suite.add(f"ours {label} sliding", lambda s=s: s.sliding_window("lsw", BIG, 60))
        suite.add(f"limits {label} sliding", lambda w=sliding: w.hit(item, "lsw"))
        suite.add(f"ours {label} gcra", lambda s=s: s.gcra("lgcra", BIG, 60))

        def hit_and_stats(f: Any = fixed) -> Any:
            # What our single call returns (remaining, reset) takes limits a second call.
            f.hit(item, "lfw2")
            return f.get_window_stats(item, "lfw2")

        suite.add(f"limits {label} fixed hit+stats", hit_and_stats)
        # Two limits of one key: ours in one atomic call (nothing spent on a refusal),
        # limits one hit per limit (earlier limits already spent when a later refuses).
        suite.add(
            f"ours {label} sliding rate_limits(2)",
            lambda s=s: s.rate_limits("sliding_window", "l2", TWO_LIMITS),
        )
        suite.add(
            f"limits {label} sliding 2 hits",
            lambda w=sliding: all(w.hit(i, "l2") for i in (item, day)),
        )
        suite.compare(f"ours {label} fixed", f"limits {label} fixed")
        suite.compare(f"ours {label} fixed", f"limits {label} fixed hit+stats")
        suite.compare(f"ours {label} sliding", f"limits {label} sliding")
        suite.compare(f"ours {label} sliding rate_limits(2)", f"limits {label} sliding 2 hits")
    suite.note("limits' hit() returns only a bool; hit+stats adds get_window_stats() for the")
    suite.note("remaining/reset figures our call returns in the same round trip.")
    suite.note("limits has no GCRA; its row is absent rather than made up.")
    suite.run()


def main() -> None:
    """Run the suites and write benchmarks/results/backends*.{json,md}."""
    # Every key (ours and limits') lives under PREFIX, so one delete_prefix cleans up.
    memory = from_url("memory://")
    redis_backend = from_url(REDIS_URL, prefix=PREFIX) if redis_available() else None
    try:
        memory_vs_redis(memory, redis_backend)
        if redis_backend is not None:
            ours_vs_redis_py(redis_backend)
        ours_vs_limits(memory, redis_backend)
    finally:
        if redis_backend is not None:
            redis_backend.sync.delete_prefix("")
            redis_backend.close()


if __name__ == "__main__":
    main()
