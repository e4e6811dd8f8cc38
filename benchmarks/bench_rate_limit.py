"""rate_limit: per-check cost vs ``limits``, and requests/s through the middleware vs slowapi.

Suites:

- ``rate_limit-check-memory``: one allowed check of a per-minute limit on in-process
  storage. Ours (``RateLimiter.hit_sync`` / ``await RateLimiter.hit``) vs ``limits``'
  ``FixedWindowRateLimiter`` / ``SlidingWindowCounterRateLimiter`` ``hit()`` with the same
  strategy, sync and async (``limits.aio``). ``hit+stats`` adds ``get_window_stats()``,
  the call limits needs for the remaining/reset figures our single call returns.
- ``rate_limit-check-redis``: the same on Redis (``limits`` with redis-py, sync and
  async); the notes give the Redis commands one check sends, counted with MONITOR.
- ``rate_limit-middleware`` / ``rate_limit-middleware-redis``: one GET through a
  30-route Starlette app, driven in-process (no HTTP client): bare, with our
  ``RateLimitMiddleware``, with slowapi's ``SlowAPIMiddleware`` (BaseHTTPMiddleware) and
  ``SlowAPIASGIMiddleware``, and with each library's per-route decorator. Both emit
  rate-limit headers (slowapi ``headers_enabled=True``).
- ``rate_limit-concurrency-redis``: 20 concurrent requests through each middleware with
  Redis behind a loopback proxy adding 2 ms each way, and the longest event-loop stall
  meanwhile (slowapi calls the blocking ``limits`` storage from async code).

Redis is ``REDIS_URL`` (default ``redis://127.0.0.1:6379/15``); keys live under a per-run
prefix deleted at the end. Without Redis only the memory suites run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from benchmarks._asgi import make_scope, request_driver, thirty_route_app
from benchmarks._harness import Suite
from gennet_toolkit.rate_limit import RateLimiter, RateLimitMiddleware, Rule, parse_limits

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
PREFIX = f"gnbench:{uuid.uuid4().hex[:8]}:"
BIG = "1000000000/minute"  # never reached: the benchmarks time the allowed path
TWO = "1000000000/minute;1000000000/day"


def redis_available() -> bool:
    """Whether the benchmark Redis accepts connections."""
    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- per check


def check_suite(name: str, description: str, ours_url: str, limits_uri: str) -> None:
    """Ours vs limits, one allowed check per call, sync and async, fixed and sliding."""
    from limits import parse
    from limits.aio import strategies as aio_strategies
    from limits.storage import storage_from_string
    from limits.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter

    redis = limits_uri.startswith("redis")
    options: dict[str, Any] = {"key_prefix": PREFIX + "limits"} if redis else {}
    aio_options: dict[str, Any] = {**options, "implementation": "redispy"} if redis else {}
    store = storage_from_string(limits_uri, **options)
    astore = storage_from_string("async+" + limits_uri, **aio_options)
    item = parse(BIG)
    limit = parse_limits(BIG)[0]
    suite = Suite(name, description=description, rounds=9)
    ours: dict[str, RateLimiter] = {}
    for strategy, peer_cls, aio_cls in (
        ("fixed_window", FixedWindowRateLimiter, aio_strategies.FixedWindowRateLimiter),
        (
            "sliding_window",
            SlidingWindowCounterRateLimiter,
            aio_strategies.SlidingWindowCounterRateLimiter,
        ),
    ):
        short = strategy.split("_")[0]
        mine = ours[strategy] = RateLimiter(ours_url, strategy=strategy, prefix=PREFIX)  # type: ignore[arg-type]
        peer = peer_cls(store)
        apeer = aio_cls(astore)

        async def ours_async(m: RateLimiter = mine) -> Any:
            return await m.hit(limit, "user:1")

        async def peer_async(p: Any = apeer) -> Any:
            return await p.hit(item, "user", "2")

        def peer_stats(p: Any = peer) -> Any:
            p.hit(item, "user", "3")
            return p.get_window_stats(item, "user", "3")

        suite.add(f"ours {short} sync", lambda m=mine: m.hit_sync(limit, "user:1"))
        suite.add(f"limits {short} sync", lambda p=peer: p.hit(item, "user", "2"))
        suite.add(f"limits {short} sync hit+stats", peer_stats)
        suite.add(f"ours {short} async", ours_async)
        suite.add(f"limits {short} async", peer_async)
        suite.compare(f"ours {short} sync", f"limits {short} sync")
        suite.compare(f"ours {short} sync", f"limits {short} sync hit+stats")
        suite.compare(f"ours {short} async", f"limits {short} async")
    gcra = RateLimiter(ours_url, strategy="token_bucket", prefix=PREFIX)
    suite.add("ours token bucket sync", lambda: gcra.hit_sync(limit, "user:1"))
    # A rule with two limits: ours checks both in one atomic call; limits (and slowapi)
    # hit them one by one.
    two = Rule(TWO, key="user:1")
    two_items = [parse(text) for text in TWO.split(";")]
    two_peer = SlidingWindowCounterRateLimiter(store)
    suite.add(
        "ours sliding sync, 2-limit rule", lambda: ours["sliding_window"].check_sync(two, "user:1")
    )
    suite.add(
        "limits sliding sync, 2 limits",
        lambda: all(two_peer.hit(i, "user", "4") for i in two_items),
    )
    suite.compare("ours sliding sync, 2-limit rule", "limits sliding sync, 2 limits")
    suite.note("limits has no token bucket/GCRA; that row has no peer.")
    suite.note("ours returns remaining/reset/retry with every check; limits' hit() a bool.")
    if redis:
        for line in round_trips(ours["fixed_window"], ours["sliding_window"], store):
            suite.note(line)
    suite.run()
    for mine in (*ours.values(), gcra):
        mine.close()


def round_trips(fixed: RateLimiter, sliding: RateLimiter, store: Any) -> list[str]:
    """Redis commands one check sends (client commands only, from MONITOR)."""
    import redis
    from limits import parse
    from limits.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter

    item = parse(BIG)
    limit = parse_limits(BIG)[0]
    cases = {
        "ours fixed": lambda: fixed.hit_sync(limit, "rt"),
        "ours sliding": lambda: sliding.hit_sync(limit, "rt"),
        "limits fixed hit": lambda: FixedWindowRateLimiter(store).hit(item, "rt"),
        "limits sliding hit": lambda: SlidingWindowCounterRateLimiter(store).hit(item, "rt"),
        "limits fixed hit+stats": lambda: (
            FixedWindowRateLimiter(store).hit(item, "rt"),
            FixedWindowRateLimiter(store).get_window_stats(item, "rt"),
        ),
        "ours sliding 2-limit rule": lambda: sliding.check_sync(Rule(TWO, key="rt"), "rt"),
        "limits sliding 2 limits": lambda: [
            SlidingWindowCounterRateLimiter(store).hit(parse(t), "rt") for t in TWO.split(";")
        ],
    }
    for fn in cases.values():
        fn()  # connect and load scripts first
    marker = redis.Redis.from_url(REDIS_URL)
    marker.ping()
    lines = []
    for label, fn in cases.items():
        watcher = redis.Redis.from_url(REDIS_URL)
        with watcher.monitor() as monitor:
            fn()
            marker.echo("gnbench-end")
            names = []
            while True:
                cmd = monitor.next_command()
                if "gnbench-end" in cmd["command"]:
                    break
                if cmd["client_type"] != "lua":
                    names.append(cmd["command"].split(" ", 1)[0].upper())
        watcher.close()
        lines.append(f"Redis commands per check, {label}: {len(names)} ({' '.join(names)})")
    marker.close()
    return lines


# --------------------------------------------------------------------------- middleware


def middleware_suite(name: str, description: str, ours_url: str, slowapi_uri: str) -> None:
    """Requests through a Starlette app: bare, ours, slowapi middleware and decorators."""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded as SlowAPIExceeded
    from slowapi.middleware import SlowAPIASGIMiddleware, SlowAPIMiddleware
    from slowapi.util import get_remote_address
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from gennet_toolkit.rate_limit import rate_limited

    limiters: list[RateLimiter] = []

    def slowapi_app(middleware: Any | None, decorated: bool = False) -> Any:
        options: dict[str, Any] = (
            {"key_prefix": PREFIX + "slowapi"} if "redis" in slowapi_uri else {}
        )
        limiter = Limiter(
            key_func=get_remote_address,
            default_limits=[] if decorated else [BIG],
            headers_enabled=True,
            storage_uri=slowapi_uri,
            storage_options=options,
            strategy="fixed-window",
        )
        extra = []
        if decorated:

            @limiter.limit(BIG)
            async def limited(request: Request) -> JSONResponse:
                return JSONResponse({"id": "7"})

            extra = [Route("/limited/{item_id}", limited)]
        app = thirty_route_app(extra)
        app.state.limiter = limiter
        app.add_exception_handler(SlowAPIExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
        if middleware is not None:
            app.add_middleware(middleware)
        return app

    def ours_app(decorated: bool = False) -> Any:
        limiter = RateLimiter(ours_url, strategy="fixed_window", prefix=PREFIX)
        limiters.append(limiter)
        extra = []
        if decorated:

            @rate_limited(BIG, limiter=limiter)
            async def limited(request: Request) -> JSONResponse:
                return JSONResponse({"id": "7"})

            extra = [Route("/limited/{item_id}", limited)]
            return thirty_route_app(extra)
        app = thirty_route_app()
        app.add_middleware(RateLimitMiddleware, limiter=limiter, rules=[Rule(BIG)])
        return app

    scope = make_scope("/items/7")
    limited_scope = make_scope("/limited/7")
    suite = Suite(name, description=description, rounds=9, baseline="bare app")
    suite.add("bare app", request_driver(thirty_route_app(), scope))
    suite.add("ours middleware", request_driver(ours_app(), scope))
    suite.add("slowapi SlowAPIMiddleware", request_driver(slowapi_app(SlowAPIMiddleware), scope))
    suite.add("slowapi ASGI middleware", request_driver(slowapi_app(SlowAPIASGIMiddleware), scope))
    suite.add("ours decorator", request_driver(ours_app(decorated=True), limited_scope))
    suite.add("slowapi decorator", request_driver(slowapi_app(None, decorated=True), limited_scope))
    suite.compare("ours middleware", "slowapi SlowAPIMiddleware")
    suite.compare("ours middleware", "slowapi ASGI middleware")
    suite.compare("ours decorator", "slowapi decorator")
    suite.note("fixed window on both sides; both emit rate-limit headers on every response.")
    if "redis" in slowapi_uri:
        suite.note("slowapi calls the sync limits storage from async code: it blocks the loop.")
    results = suite.run()
    for label, r in results.items():
        print(f"{label}: {1 / r.median:,.0f} requests/s")
    for limiter in limiters:
        limiter.close()


class LatencyProxy:
    """A loopback TCP proxy to Redis adding ``delay`` seconds each way (a remote Redis)."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.host, self.target_port, self.delay = host, port, delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await asyncio.sleep(self.delay)
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except asyncio.CancelledError:
            # Shutdown: end quietly (asyncio's stream callback reports a cancelled handler).
            writer.close()
            up_writer.close()

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        self._started.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        # Connections the benchmark left open end here, before the loop stops.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def concurrency_suite(delay: float = 0.002, concurrency: int = 20) -> None:
    """Concurrent requests through a Redis with real latency: does the limiter block?"""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded as SlowAPIExceeded
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    parts = urlsplit(REDIS_URL)
    with LatencyProxy(parts.hostname or "127.0.0.1", parts.port or 6379, delay) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}{parts.path or '/0'}"
        ours_limiter = RateLimiter(url, strategy="fixed_window", prefix=PREFIX)
        ours = thirty_route_app()
        ours.add_middleware(RateLimitMiddleware, limiter=ours_limiter, rules=[Rule(BIG)])
        slow = thirty_route_app()
        slow.state.limiter = Limiter(
            key_func=get_remote_address,
            default_limits=[BIG],
            headers_enabled=True,
            storage_uri=url,
            storage_options={"key_prefix": PREFIX + "slowapi"},
            strategy="fixed-window",
        )
        slow.add_exception_handler(SlowAPIExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
        slow.add_middleware(SlowAPIASGIMiddleware)
        scope = make_scope("/items/7")

        def batch_of(app: Any) -> Any:
            one = request_driver(app, scope)

            async def batch() -> None:
                await asyncio.gather(*(one() for _ in range(concurrency)))

            return batch

        suite = Suite(
            "rate_limit-concurrency-redis",
            description=(
                f"{concurrency} concurrent GETs through a 30-route Starlette app, Redis "
                f"behind a proxy adding {delay * 1e3:.0f} ms each way, vs slowapi"
            ),
            rounds=5,
        )
        suite.add("ours middleware", batch_of(ours))
        suite.add("slowapi ASGI middleware", batch_of(slow))
        suite.compare("ours middleware", "slowapi ASGI middleware")
        for label, batch in (("ours", batch_of(ours)), ("slowapi", batch_of(slow))):
            p95, worst = asyncio.run(_stalls(batch, ours_limiter))
            suite.note(
                f"{label}: event-loop stall while batches run (a 1 ms sleep's overshoot): "
                f"p95 {p95 * 1e3:.1f} ms, max {worst * 1e3:.1f} ms"
            )
        suite.note("slowapi runs the sync limits storage on the event loop, one request at a time.")
        results = suite.run()
        for label, r in results.items():
            print(f"{label}: {concurrency / r.median:,.0f} requests/s")
        ours_limiter.close()


async def _stalls(batch: Any, limiter: RateLimiter, batches: int = 3) -> tuple[float, float]:
    """How far a 1 ms sleep overshoots while ``batch`` runs: (95th percentile, max)."""
    overshoots: list[float] = []
    done = False

    async def probe() -> None:
        while not done:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            overshoots.append(time.perf_counter() - start - 0.001)

    await batch()  # warm-up: connections, scripts
    task = asyncio.create_task(probe())
    for _ in range(batches):
        await batch()
    done = True
    await task
    await limiter.aclose()  # this loop's connections end with it
    overshoots.sort()
    return overshoots[int(len(overshoots) * 0.95)], overshoots[-1]


def cleanup() -> None:
    """Delete every key this run wrote."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=PREFIX + "*", count=1000))
        # limits/slowapi put their prefix after their own namespace.
        keys += list(client.scan_iter(match="*" + PREFIX + "*", count=1000))
        if keys:
            client.delete(*set(keys))
    finally:
        client.close()


def main() -> None:
    """Run the suites and write benchmarks/results/rate_limit*.{json,md}."""
    check_suite(
        "rate_limit-check-memory",
        "one allowed check of a per-minute limit, in-process storage, vs limits' hit()",
        "memory://",
        "memory://",
    )
    middleware_suite(
        "rate_limit-middleware",
        "one GET through a 30-route Starlette app, memory storage, vs slowapi",
        "memory://",
        "memory://",
    )
    if redis_available():
        try:
            check_suite(
                "rate_limit-check-redis",
                "one allowed check of a per-minute limit on local Redis, vs limits' hit()",
                REDIS_URL,
                REDIS_URL,
            )
            middleware_suite(
                "rate_limit-middleware-redis",
                "one GET through a 30-route Starlette app, Redis storage, vs slowapi",
                REDIS_URL,
                REDIS_URL,
            )
            concurrency_suite()
        finally:
            cleanup()
    # Closed loops leave nothing behind for the next suite.
    asyncio.set_event_loop(None)


if __name__ == "__main__":
    main()
