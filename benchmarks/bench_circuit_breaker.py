"""circuit_breaker: closed-state cost per call vs pybreaker, aiobreaker and purgatory.

Suites:

- ``circuit_breaker-sync-memory``: one successful call of a trivial sync function
  through the breaker, in-process state. Bare call (baseline), ours as decorator and as
  ``with breaker:``, pybreaker's decorator, purgatory's ``SyncCircuitBreakerFactory``.
- ``circuit_breaker-async-memory``: the same for a trivial coroutine: ours (decorator,
  ``async with``), aiobreaker's decorator, purgatory's ``AsyncCircuitBreakerFactory``.
- ``circuit_breaker-redis``: the same with the state on local Redis: ours sync and
  async, ours with ``cache_ttl=0.5`` (a closed breaker skips the read for 0.5 s),
  pybreaker's ``CircuitRedisStorage``, purgatory's ``AsyncRedisUnitOfWork`` (its sync
  twin fails with redis-py 8, so it has no row).

Notes under the tables record behaviour, not speed: how many of 50 concurrent callers
reach a still-failing dependency once the open period ends (half-open discipline), and
the wall time of 8 threads each making one 20 ms call through one breaker (a lock
held around the call serializes them).

Peers come from the ``bench`` extra: pybreaker, aiobreaker, purgatory. Redis is
``REDIS_URL`` (default ``redis://127.0.0.1:6379/15``); keys live under a per-run prefix
deleted at the end. Without Redis only the memory suites run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from benchmarks._harness import Suite
from gennet_toolkit.backends import from_url
from gennet_toolkit.circuit_breaker import CircuitBreaker, CircuitOpenError

PEERS = ("pybreaker", "aiobreaker", "purgatory")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
PREFIX = f"gnbench:{uuid.uuid4().hex[:8]}:"


def redis_available() -> bool:
    """Whether the benchmark Redis accepts connections."""
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


def work(x: int) -> int:
    return x + 1


async def awork(x: int) -> int:
    return x + 1


# --------------------------------------------------------------------------- memory


def sync_memory_suite() -> None:
    """Closed-state overhead, sync, in-process state."""
    import pybreaker
    from purgatory import SyncCircuitBreakerFactory

    ours = CircuitBreaker("bench")
    ours_fn = ours(work)
    pyb_fn = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)(work)
    purgatory_fn = SyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)(circuit="bench")(
        work
    )

    def ours_with() -> int:
        with ours:
            return work(1)

    suite = Suite(
        "circuit_breaker-sync-memory",
        description="one successful sync call through a closed breaker, in-process state",
        baseline="bare call",
    )
    suite.add("bare call", lambda: work(1))
    suite.add("ours @breaker", lambda: ours_fn(1))
    suite.add("ours with breaker", ours_with)
    suite.add("pybreaker", lambda: pyb_fn(1))
    suite.add("purgatory", lambda: purgatory_fn(1))
    suite.compare("ours @breaker", "pybreaker")
    suite.compare("ours @breaker", "purgatory")
    suite.compare("ours with breaker", "pybreaker")
    suite.note(thread_serialization(ours, pybreaker.CircuitBreaker()))
    suite.run()


def thread_serialization(ours: CircuitBreaker, pyb: Any) -> str:
    """Wall time of 8 threads each making one 20 ms call through one breaker."""

    def timed(call: Any) -> float:
        threads = [threading.Thread(target=call) for _ in range(8)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    nap = 0.02
    ours_s = timed(lambda: ours.call(time.sleep, nap))
    pyb_s = timed(lambda: pyb.call(time.sleep, nap))
    return (
        f"8 threads x one 20 ms call through one breaker: ours {ours_s * 1e3:.0f} ms wall, "
        f"pybreaker {pyb_s * 1e3:.0f} ms (it holds a lock around the call)"
    )


def async_memory_suite() -> None:
    """Closed-state overhead, async, in-process state."""
    import aiobreaker
    from purgatory import AsyncCircuitBreakerFactory

    ours = CircuitBreaker("bench")
    ours_fn = ours(awork)
    aio_fn = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=30))(awork)
    purgatory_fn = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)(circuit="bench")(
        awork
    )

    async def bare() -> int:
        return await awork(1)

    async def ours_deco() -> int:
        return await ours_fn(1)

    async def ours_with() -> int:
        async with ours:
            return await awork(1)

    async def aio() -> int:
        return await aio_fn(1)

    async def purg() -> int:
        return int(await purgatory_fn(1))

    suite = Suite(
        "circuit_breaker-async-memory",
        description="one successful async call through a closed breaker, in-process state",
        baseline="bare await",
    )
    suite.add("bare await", bare)
    suite.add("ours @breaker", ours_deco)
    suite.add("ours async with", ours_with)
    suite.add("aiobreaker", aio)
    suite.add("purgatory", purg)
    suite.compare("ours @breaker", "aiobreaker")
    suite.compare("ours @breaker", "purgatory")
    suite.note(asyncio.run(half_open_discipline()))
    suite.run()


async def half_open_discipline() -> str:
    """How many of 50 concurrent callers reach a failing dependency after the open period."""
    import aiobreaker
    from purgatory import AsyncCircuitBreakerFactory

    reached = 0

    async def failing() -> None:
        nonlocal reached
        reached += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("still down")

    async def storm(fn: Any) -> int:
        nonlocal reached
        with_errors = [fn() for _ in range(50)]
        reached = 0
        await asyncio.gather(*with_errors, return_exceptions=True)
        return reached

    # Tripping logs "opened" on purpose; not wanted in the benchmark's output.
    logging.getLogger("gennet_toolkit.circuit_breaker").setLevel(logging.ERROR)
    counts = {}
    ours = CircuitBreaker("probe", fail_max=1, reset_timeout=0.05)
    aio = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=0.05))
    purg = AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=0.05)
    wrapped = {
        "ours": ours(failing),
        "aiobreaker": aio(failing),
        "purgatory": purg(circuit="probe")(failing),
    }
    for name, fn in wrapped.items():
        for _ in range(2):  # trip it (a breaker may raise its own error on the trip)
            try:
                await fn()
            except (RuntimeError, CircuitOpenError, aiobreaker.CircuitBreakerError):
                pass
            except Exception:  # purgatory raises its own open error
                pass
        await asyncio.sleep(0.06)
        counts[name] = await storm(fn)
    return (
        "50 concurrent callers after the open period, dependency still failing - calls that "
        "reached it: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    )


# --------------------------------------------------------------------------- Redis


def redis_suite() -> None:
    """Closed-state overhead with the state on Redis."""
    import pybreaker
    import redis
    from purgatory import AsyncCircuitBreakerFactory, AsyncRedisUnitOfWork

    backend = from_url(REDIS_URL, prefix=PREFIX)
    ours = CircuitBreaker("bench", backend=backend)
    ours_fn = ours(work)
    ours_afn = ours(awork)
    cached_fn = CircuitBreaker("bench-cached", backend=backend, cache_ttl=0.5)(work)
    client = redis.Redis.from_url(REDIS_URL)
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace=PREFIX + "pybreaker"
    )
    pyb_fn = pybreaker.CircuitBreaker(state_storage=storage)(work)
    async_cbf: list[Any] = []

    async def ours_async() -> int:
        return await ours_afn(1)

    async def purg_async() -> int:
        if not async_cbf:  # its client belongs to the harness's event loop
            cbf = AsyncCircuitBreakerFactory(uow=AsyncRedisUnitOfWork(REDIS_URL))
            await cbf.initialize()
            async_cbf.append(cbf(circuit=PREFIX + "purgatory-async")(awork))
        return int(await async_cbf[0](1))

    suite = Suite(
        "circuit_breaker-redis",
        description="one successful call through a closed breaker, state on local Redis",
    )
    suite.add("ours sync", lambda: ours_fn(1))
    suite.add("ours async", ours_async)
    suite.add("ours sync, cache_ttl=0.5", lambda: cached_fn(1))
    suite.add("pybreaker redis storage", lambda: pyb_fn(1))
    suite.add("purgatory async", purg_async)
    suite.compare("ours sync", "pybreaker redis storage")
    suite.compare("ours sync, cache_ttl=0.5", "pybreaker redis storage")
    suite.compare("ours async", "purgatory async")
    suite.note(
        "purgatory sync on Redis: n/a (3.0.1's SyncRedisUnitOfWork calls redis.asyncio "
        "without awaiting and fails with redis-py 8)"
    )
    suite.note(
        "ours: one GET per successful closed-state call (tested with INFO commandstats); "
        "a failure adds one GET + one compare-and-set"
    )
    try:
        suite.run()
    finally:
        backend.sync.close()
        client.close()


def cleanup() -> None:
    """Delete this run's keys."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=PREFIX + "*", count=1000))
        keys += list(client.scan_iter(match="*" + PREFIX + "purgatory*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def main() -> None:
    """Run the suites and write benchmarks/results/circuit_breaker*.{json,md}."""
    missing = [name for name in PEERS if importlib.util.find_spec(name) is None]
    if missing:
        print(f"circuit_breaker benchmarks skipped: {', '.join(missing)} not installed")
        return
    sync_memory_suite()
    async_memory_suite()
    if redis_available():
        try:
            redis_suite()
        finally:
            cleanup()
    asyncio.set_event_loop(None)


if __name__ == "__main__":
    main()
