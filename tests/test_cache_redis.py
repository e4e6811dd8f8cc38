"""gennet_toolkit.cache on Redis: one loader call across OS processes, and the failure
policy while Redis is down, restarting, and back (fail open, 503 problem+json)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gennet_toolkit.backends import from_url
from gennet_toolkit.cache import Cache
from gennet_toolkit.error_handler import ErrorHandlerMiddleware, install_error_handlers
from gennet_toolkit.exceptions import ServiceUnavailable
from gennet_toolkit.types import Receive, Scope, Send
from tests.services import RedisServer, closed_port_url

pytestmark = pytest.mark.redis

WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    import redis
    from gennet_toolkit.backends import from_url
    from gennet_toolkit.cache import Cache

    url, prefix, mode, start_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    counter = redis.Redis.from_url(url)
    cache = Cache(from_url(url, prefix=prefix), lock_wait=10)

    def load_sync(symbol):
        counter.incr(prefix + "loader-calls")
        time.sleep(0.4)
        return {"symbol": symbol, "pid": 0}

    async def load_async(symbol):
        counter.incr(prefix + "loader-calls")
        await asyncio.sleep(0.4)
        return {"symbol": symbol, "pid": 0}

    time.sleep(max(0.0, start_at - time.time()))
    if mode == "sync":
        f = cache.cached(ttl=60, key="gene:{symbol}")(load_sync)
        print(f("lacZ")["symbol"])
    else:
        f = cache.cached(ttl=60, key="gene:{symbol}")(load_async)
        async def main():
            results = await asyncio.gather(*[f("lacZ") for _ in range(20)])
            await cache.aclose()
            await cache.backend.aclose()
            return results
        print(asyncio.run(main())[0]["symbol"])
    cache.backend.sync.close()
    counter.close()
    """
)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_three_processes_share_one_loader_call(
    redis_url: str, redis_prefix: str, mode: str
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    start_at = time.time() + 1.5  # all three start their cold call together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url, redis_prefix, mode, str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert [o.strip() for o in outs] == ["lacZ"] * 3
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.get(redis_prefix + "loader-calls") == b"1"
    finally:
        client.close()


@pytest.mark.anyio
async def test_a_waiter_loads_itself_when_the_lock_holder_takes_too_long(
    redis_url: str, redis_prefix: str
) -> None:
    backend = from_url(redis_url, prefix=redis_prefix)
    cache = Cache(backend, lock_wait=0.2)
    # Another process holds the loading lock and never finishes.
    held = backend.lock("v1:l:v1:k:slow", ttl=30)
    assert await held.acquire()
    calls = 0

    @cache.cached(key="slow")
    async def slow() -> int:
        nonlocal calls
        calls += 1
        return 5

    try:
        assert await slow() == 5
        assert calls == 1
    finally:
        await held.release()
        await backend.aclose()


@pytest.mark.anyio
async def test_redis_down_fails_open_calls_the_function_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = Cache(closed_port_url(), retry_interval=0)
    calls = 0

    @cache.cached(ttl=60)
    async def gene(symbol: str) -> str:
        nonlocal calls
        calls += 1
        return symbol.upper()

    @cache.cached(ttl=60)
    def gene_sync(symbol: str) -> str:
        nonlocal calls
        calls += 1
        return symbol.upper()

    with caplog.at_level(logging.WARNING, logger="gennet_toolkit.cache"):
        assert [await gene("lacz") for _ in range(3)] == ["LACZ"] * 3
        assert [gene_sync("lacy") for _ in range(3)] == ["LACY"] * 3
        assert await cache.get("x", "default") == "default"
        assert await cache.set("x", 1) is False
    assert calls == 6
    assert cache.stats().errors >= 6
    warnings = [r for r in caplog.records if r.name == "gennet_toolkit.cache"]
    assert len(warnings) == 1
    assert "unavailable" in warnings[0].getMessage()
    assert "127.0.0.1" not in warnings[0].getMessage()
    # Invalidation never fails silently: serving stale data would be the result.
    with pytest.raises(ServiceUnavailable):
        await cache.invalidate_tags("t")
    with pytest.raises(ServiceUnavailable):
        await cache.invalidate("gene:*")
    await cache.aclose()


@pytest.mark.anyio
async def test_redis_down_with_fail_open_false_raises_service_unavailable() -> None:
    cache = Cache(closed_port_url(), fail_open=False)
    calls = 0

    @cache.cached()
    async def gene() -> int:
        nonlocal calls
        calls += 1
        return 1

    with pytest.raises(ServiceUnavailable) as info:
        await gene()
    with pytest.raises(ServiceUnavailable):
        await gene()  # within retry_interval: refused at once, no connection attempt
    assert calls == 0
    assert info.value.status_code == 503
    await cache.aclose()


@pytest.mark.anyio
async def test_redis_down_with_fail_open_false_is_a_503_problem_response() -> None:
    cache = Cache(closed_port_url(), fail_open=False)

    @cache.cached(key="gene:{symbol}")
    async def gene(symbol: str) -> dict[str, str]:
        return {"symbol": symbol}

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse(await gene(request.path_params["symbol"]))

    starlette_app = Starlette(routes=[Route("/genes/{symbol}", endpoint)])
    install_error_handlers(starlette_app)

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        body = json.dumps(await gene("lacZ")).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    for app in (starlette_app, ErrorHandlerMiddleware(bare)):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/genes/lacZ")
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["status"] == 503
        assert "127.0.0.1" not in response.text
        assert "lacZ" not in body["detail"]
    await cache.aclose()


def test_cache_survives_a_redis_restart_and_resumes_caching(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(redis_server.url, retry_interval=0)
    calls = 0

    @cache.cached(ttl=60, key="gene:{symbol}")
    def gene(symbol: str) -> str:
        nonlocal calls
        calls += 1
        return symbol

    with caplog.at_level(logging.WARNING, logger="gennet_toolkit.cache"):
        gene("lacZ")
        gene("lacZ")
        assert calls == 1
        redis_server.stop()
        gene("lacZ")
        gene("lacZ")
        assert calls == 3  # down: called directly, never an error
        redis_server.start()
        gene("lacZ")  # empty dataset after the restart: a miss, cached again
        gene("lacZ")
        assert calls == 4
    messages = [r.getMessage() for r in caplog.records if r.name == "gennet_toolkit.cache"]
    assert len(messages) == 2
    assert "unavailable" in messages[0]
    assert "resumed" in messages[1]
    cache.sync.close()


@pytest.mark.anyio
async def test_async_cache_resumes_after_a_restart(redis_server: RedisServer) -> None:
    cache = Cache(redis_server.url, retry_interval=0)
    await cache.set("k", 1)
    redis_server.stop()
    assert await cache.get("k", "gone") == "gone"
    redis_server.start()
    assert await cache.set("k", 2) is True
    assert await cache.get("k") == 2
    await cache.aclose()


@pytest.mark.anyio
async def test_fifty_callers_in_one_process_use_few_redis_commands(
    redis_url: str, redis_prefix: str
) -> None:
    backend = from_url(redis_url, prefix=redis_prefix)
    cache = Cache(backend)
    calls = 0

    @cache.cached()
    async def slow() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return 1

    assert await asyncio.gather(*[slow() for _ in range(50)]) == [1] * 50
    assert calls == 1
    assert cache.stats().coalesced == 49
    await backend.aclose()


@pytest.mark.anyio
async def test_single_flight_still_holds_while_redis_is_down() -> None:
    cache = Cache(closed_port_url())
    calls = 0

    @cache.cached()
    async def slow() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return 3

    assert await asyncio.gather(*[slow() for _ in range(20)]) == [3] * 20
    assert calls == 1
    await cache.aclose()


def test_from_env_falls_back_to_the_shared_backend_url(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_prefix: str
) -> None:
    monkeypatch.delenv("GENNET_CACHE_URL", raising=False)
    monkeypatch.setenv("GENNET_BACKEND_URL", redis_url)
    cache = Cache.from_env(namespace=redis_prefix.rstrip(":").replace(":", "-"))
    try:
        assert type(cache.backend).__name__ == "RedisBackend"
        cache.sync.set("k", [1])
        assert cache.sync.get("k") == [1]
        assert cache.sync.clear() == 1
    finally:
        cache.sync.close()
