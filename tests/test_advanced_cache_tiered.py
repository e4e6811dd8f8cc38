"""TieredCache: read-through and write-through on memory:// and redis://, L1 invalidation
across instances and processes, L2 outages (fail open / 503) and recovery, serializers."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gennet_toolkit.advanced_cache import (
    LFUCache,
    LRUCache,
    SerializationError,
    SignedPickleSerializer,
    TieredCache,
    TTLCache,
    cached,
    warm,
)
from gennet_toolkit.backends import Backend, from_url
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable
from tests.services import closed_port_url

ROOT = Path(__file__).resolve().parent.parent


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until ``check()`` holds (bounded): for effects that travel through pub/sub."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """One memory:// backend, or redis:// under the test's own prefix."""
    if request.param == "memory":
        b = from_url("memory://")
    else:
        url = request.getfixturevalue("redis_url")
        b = from_url(url, prefix=request.getfixturevalue("redis_prefix"))
    yield b
    await b.aclose()


# -- read-through / write-through -------------------------------------------------------


@pytest.mark.anyio
async def test_write_through_then_read_from_l1_then_from_l2(backend: Backend) -> None:
    tiered = TieredCache(LRUCache(10), backend, namespace="genes:")
    await tiered.set("lacZ", {"id": "b0344", "len": 3075})
    assert "lacZ" in tiered.l1
    raw = await backend.get("genes:lacZ")
    assert raw is not None
    assert json.loads(raw) == {"id": "b0344", "len": 3075}
    assert await tiered.get("lacZ") == {"id": "b0344", "len": 3075}
    tiered.l1.clear()
    assert await tiered.get("lacZ") == {"id": "b0344", "len": 3075}  # from L2, refills L1
    assert "lacZ" in tiered.l1
    assert await tiered.get("nope", "dflt") == "dflt"
    s = tiered.stats()
    assert (s.l1_hits, s.l2_hits, s.misses) == (1, 1, 1)
    assert s.hit_ratio == pytest.approx(2 / 3)
    await tiered.delete("lacZ")
    assert await tiered.get("lacZ") is None
    assert await backend.get("genes:lacZ") is None


@pytest.mark.anyio
async def test_l2_entries_carry_the_ttl(backend: Backend) -> None:
    tiered = TieredCache(LRUCache(10), backend, ttl=30)
    await tiered.set("a", 1)
    await tiered.set("b", 2, ttl=5)
    ttl_a, ttl_b = await backend.ttl("a"), await backend.ttl("b")
    assert ttl_a is not None
    assert 25 < ttl_a <= 30
    assert ttl_b is not None
    assert 0 < ttl_b <= 5


@pytest.mark.anyio
async def test_get_or_load_calls_the_loader_once_for_concurrent_callers(
    backend: Backend,
) -> None:
    tiered = TieredCache(LFUCache(10), backend)
    calls = 0

    async def load() -> list[str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return ["lacY", "lacA"]

    results = await asyncio.gather(*(tiered.get_or_load("operon", load) for _ in range(20)))
    assert results == [["lacY", "lacA"]] * 20
    assert calls == 1
    assert tiered.stats().coalesced == 19
    assert tiered.stats().loads == 1
    other = TieredCache(LRUCache(10), backend)  # a second instance finds it in L2
    assert await other.get_or_load("operon", load) == ["lacY", "lacA"]
    assert calls == 1


@pytest.mark.anyio
async def test_sync_twin_shares_l1_and_l2(backend: Backend) -> None:
    tiered = TieredCache(LRUCache(10), backend)

    def work() -> Any:
        tiered.sync.set("k", [1, 2])
        tiered.l1.clear()
        got = tiered.sync.get("k")
        loaded = tiered.sync.get_or_load("other", lambda: {"x": 1})
        tiered.sync.delete("k")
        return got, loaded, tiered.sync.get("k", "gone")

    assert await asyncio.to_thread(work) == ([1, 2], {"x": 1}, "gone")
    assert await tiered.get("other") == {"x": 1}


@pytest.mark.anyio
async def test_negative_results_cached_for_negative_ttl_or_not_at_all(backend: Backend) -> None:
    calls = 0

    def load() -> None:
        nonlocal calls
        calls += 1

    never = TieredCache(LRUCache(10), backend, negative_ttl=0, namespace="n0:")
    assert await never.get_or_load("missing", load) is None
    assert await never.get_or_load("missing", load) is None
    assert calls == 2

    short = TieredCache(LRUCache(10), backend, negative_ttl=2, namespace="n2:")
    assert await short.get_or_load("missing", load) is None
    assert await short.get_or_load("missing", load) is None
    assert calls == 3
    ttl = await backend.ttl("n2:missing")
    assert ttl is not None
    assert ttl <= 2
    with pytest.raises(ConfigurationError):
        TieredCache(LRUCache(1), backend, negative_ttl=-1)


@pytest.mark.anyio
async def test_l1_ttl_bounds_staleness_without_invalidation(backend: Backend) -> None:
    now = [0.0]
    l1: TTLCache[str, Any] = TTLCache(10, ttl=5, timer=lambda: now[0])
    reader = TieredCache(l1, backend, invalidate=False)
    writer = TieredCache(LRUCache(10), backend, invalidate=False)
    await writer.set("k", "v1")
    assert await reader.get("k") == "v1"
    await writer.set("k", "v2")
    assert await reader.get("k") == "v1"  # stale in L1, as documented
    now[0] += 5
    assert await reader.get("k") == "v2"


@pytest.mark.anyio
async def test_any_l1_forgets_entries_when_their_l2_ttl_runs_out(backend: Backend) -> None:
    now = [0.0]
    reader = TieredCache(LRUCache(10), backend, ttl=30, invalidate=False, timer=lambda: now[0])
    writer = TieredCache(LRUCache(10), backend, invalidate=False)
    await writer.set("k", "v1")
    assert await reader.get("k") == "v1"  # from L2: kept in L1 at most ttl=30 s
    await writer.set("k", "v2")
    now[0] += 29
    assert await reader.get("k") == "v1"
    now[0] += 1
    assert await reader.get("k") == "v2"
    await reader.set("short", 1, ttl=2)  # a per-item TTL bounds its L1 life too
    now[0] += 2
    assert reader.sync.get("short") == 1  # L1's copy expired; L2 (real clock) still has it
    assert reader.stats().l2_hits == 3
    assert reader.stats().l1_hits == 1


@pytest.mark.anyio
async def test_l1_ttl_caps_how_long_l1_serves_without_l2() -> None:
    now = [0.0]
    tiered = TieredCache(
        LRUCache(10), "memory://", ttl=300, l1_ttl=5, invalidate=False, timer=lambda: now[0]
    )
    await tiered.set("k", 1)
    await tiered.l2.delete("k")  # changed behind L1's back, no invalidation
    now[0] += 4
    assert await tiered.get("k") == 1
    now[0] += 1
    assert await tiered.get("k") is None
    with pytest.raises(ConfigurationError):
        TieredCache(LRUCache(1), "memory://", l1_ttl=0)
    await tiered.aclose()


# -- invalidation -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_writes_invalidate_other_instances_l1(backend: Backend) -> None:
    a = TieredCache(LRUCache(10), backend)
    b = TieredCache(LRUCache(10), backend)
    async with a, b:
        await a.set("k", 1)
        assert await b.get("k") == 1
        await a.set("k", 2)
        await eventually(lambda: "k" not in b.l1)
        assert await b.get("k") == 2
        await a.delete("k")
        await eventually(lambda: "k" not in b.l1)
        assert await b.get("k") is None
        await b.set("x", 1)
        assert await a.get("x") == 1
        await b.clear_local(everywhere=True)
        await eventually(lambda: len(a.l1) == 0)
        # Each instance counts the others' messages, never its own.
        assert (a.stats().invalidations, b.stats().invalidations) == (2, 3)


@pytest.mark.anyio
async def test_sync_listener_thread_invalidates_l1(backend: Backend) -> None:
    a = TieredCache(LRUCache(10), backend)
    b = TieredCache(LRUCache(10), backend)
    await asyncio.to_thread(b.sync.start)
    try:
        await a.set("k", 1)
        assert await b.get("k") == 1
        await asyncio.to_thread(a.sync.set, "k", 2)
        await eventually(lambda: "k" not in b.l1)
        assert await b.get("k") == 2
    finally:
        await asyncio.to_thread(b.sync.stop)


CHILD = """
import sys
from gennet_toolkit.advanced_cache import LRUCache, TieredCache
from gennet_toolkit.backends import from_url
url, prefix = sys.argv[1], sys.argv[2]
tiered = TieredCache(LRUCache(10), from_url(url, prefix=prefix), namespace="g:")
tiered.sync.set("lacZ", {"version": 2})
"""


@pytest.mark.redis
@pytest.mark.anyio
async def test_write_in_another_process_invalidates_l1_here(
    redis_url: str, redis_prefix: str
) -> None:
    backend = from_url(redis_url, prefix=redis_prefix)
    tiered = TieredCache(LRUCache(10), backend, namespace="g:")
    try:
        async with tiered:
            await tiered.set("lacZ", {"version": 1})
            assert await tiered.get("lacZ") == {"version": 1}
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            proc = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", CHILD, redis_url, redis_prefix],
                env=env,
                capture_output=True,
                timeout=60,
            )
            assert proc.returncode == 0, proc.stderr.decode()
            await eventually(lambda: "lacZ" not in tiered.l1)
            assert await tiered.get("lacZ") == {"version": 2}
    finally:
        await backend.aclose()


# -- L2 down ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_unreachable_l2_fails_open_serving_l1_and_loader_logging_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "gennet_toolkit.advanced_cache")
    tiered = TieredCache(LRUCache(10), closed_port_url(), fail_open=True)
    async with tiered:
        assert await tiered.get("k") is None
        await tiered.set("k", {"a": 1})  # L2 refused: kept in L1
        assert await tiered.get("k") == {"a": 1}
        assert await tiered.get_or_load("g", lambda: 42) == 42
        await tiered.delete("k")
        assert await tiered.get("k") is None
        assert tiered.sync.get_or_load("s", lambda: "sync") == "sync"
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1
    assert tiered.stats().l2_errors >= 5


@pytest.mark.anyio
async def test_unreachable_l2_with_fail_open_false_raises_503() -> None:
    tiered = TieredCache(LRUCache(10), closed_port_url(), fail_open=False)
    try:
        with pytest.raises(ServiceUnavailable) as info:
            await tiered.get_or_load("k", lambda: 1)
        assert info.value.status_code == 503
        with pytest.raises(ServiceUnavailable):
            tiered.sync.set("k", 1)
        assert "k" not in tiered.l1
    finally:
        await tiered.aclose()


def _app(tiered: TieredCache, framework: str) -> Any:
    from gennet_toolkit.error_handler import install_error_handlers

    async def load_gene(symbol: str) -> dict[str, str]:
        return {"symbol": symbol}

    async def gene(symbol: str) -> dict[str, Any]:
        return await tiered.get_or_load(f"gene:{symbol}", lambda: load_gene(symbol))

    if framework == "fastapi":
        from fastapi import FastAPI

        api = FastAPI()
        api.get("/genes/{symbol}")(gene)
        install_error_handlers(api)
        return api
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse(await gene(request.path_params["symbol"]))

    app = Starlette(routes=[Route("/genes/{symbol}", endpoint)])
    install_error_handlers(app)
    return app


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
@pytest.mark.anyio
async def test_app_behind_a_dead_l2_answers_200_or_503_never_500(framework: str) -> None:
    for fail_open, status in ((True, 200), (False, 503)):
        tiered = TieredCache(LRUCache(10), closed_port_url(), fail_open=fail_open)
        transport = httpx.ASGITransport(app=_app(tiered, framework))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            resp = await client.get("/genes/lacZ")
        await tiered.aclose()
        assert resp.status_code == status
        if status == 503:
            assert resp.headers["content-type"].startswith("application/problem+json")
            assert resp.json()["status"] == 503
            assert "Traceback" not in resp.text
            assert "127.0.0.1" not in resp.text
        else:
            assert resp.json() == {"symbol": "lacZ"}


@pytest.mark.redis
@pytest.mark.anyio
async def test_redis_outage_serves_l1_then_recovers_and_resubscribes(
    redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "gennet_toolkit.advanced_cache")
    backend_a = from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    backend_b = from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    a = TieredCache(LRUCache(10), backend_a)
    b = TieredCache(LRUCache(10), backend_b)
    try:
        await a.start()
        await b.set("hot", "v1")
        assert await a.get("hot") == "v1"

        await asyncio.to_thread(redis_server.stop)
        assert await a.get("hot") == "v1"  # L1 answers during the outage
        assert await a.get_or_load("cold", lambda: "computed") == "computed"
        await a.set("during", 1)  # L2 refused: kept in L1 only
        assert await a.get("during") == 1

        await asyncio.to_thread(redis_server.start)
        # b's idle pooled connection predates the restart (the backend's first call on it
        # fails): wait until b reaches Redis.
        for _ in range(50):
            try:
                await backend_b.ping()
                break
            except ServiceUnavailable:
                await asyncio.sleep(0.1)
        # The listener resubscribes and drops L1 (invalidations may have been missed).
        await eventually(lambda: "hot" not in a.l1, within=15)
        await b.set("hot", "v2")
        # At most a call or two fail on connections opened before the restart.
        for _ in range(5):
            if await a.get("hot") == "v2":
                break
        assert await a.get("hot") == "v2"
        await b.set("hot", "v3")
        await eventually(lambda: "hot" not in a.l1)
        assert await a.get("hot") == "v3"
        messages = [r.getMessage() for r in caplog.records]
        assert any("reachable again" in m for m in messages)
    finally:
        await a.aclose()
        await backend_a.aclose()
        await backend_b.aclose()


# -- serializers ------------------------------------------------------------------------


class Gene:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol


@pytest.mark.parametrize(
    "value",
    [Gene("lacZ"), {1, 2}, b"bytes", math.nan, {"k": object()}, {1: "int key"}, (1, 2)],
)
@pytest.mark.anyio
async def test_json_serializer_refuses_values_it_cannot_store_faithfully(value: Any) -> None:
    tiered = TieredCache(LRUCache(10), "memory://")
    with pytest.raises(SerializationError) as info:
        await tiered.set("k", value)
    assert isinstance(info.value, TypeError)
    assert info.value.status_code == 500
    assert "k" not in tiered.l1
    await tiered.aclose()


def test_pickle_by_name_is_refused_and_needs_a_real_secret() -> None:
    with pytest.raises(ConfigurationError, match="SignedPickleSerializer"):
        TieredCache(LRUCache(1), "memory://", serializer="pickle")
    with pytest.raises(ConfigurationError):
        TieredCache(LRUCache(1), "memory://", serializer="yaml")
    with pytest.raises(ConfigurationError):
        SignedPickleSerializer("short")


@pytest.mark.anyio
async def test_signed_pickle_round_trips_and_rejects_forged_payloads(backend: Backend) -> None:
    import pickle

    ser = SignedPickleSerializer("a-secret-of-decent-length")
    tiered = TieredCache(LRUCache(10), backend, serializer=ser)
    await tiered.set("g", Gene("lacZ"))
    tiered.l1.clear()
    got = await tiered.get("g")
    assert isinstance(got, Gene)
    assert got.symbol == "lacZ"

    # An attacker with write access to L2 but not the secret: treated as a miss.
    await backend.set("evil", pickle.dumps(Gene("evil")))
    await backend.set("forged", b"gnp1" + b"\0" * 32 + pickle.dumps(Gene("evil")))
    assert await tiered.get("evil", "miss") == "miss"
    assert await tiered.get("forged", "miss") == "miss"


@pytest.mark.anyio
async def test_corrupt_l2_value_is_a_miss_not_an_error(backend: Backend) -> None:
    tiered = TieredCache(LRUCache(10), backend)
    await backend.set("bad", b"\xff{not json")
    assert await tiered.get("bad", "miss") == "miss"
    assert await tiered.get_or_load("bad", lambda: "fresh") == "fresh"


@pytest.mark.anyio
async def test_keys_must_be_strings_and_l1_must_be_one_of_ours() -> None:
    tiered = TieredCache(LRUCache(10), "memory://")
    with pytest.raises(TypeError):
        await tiered.get(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        TieredCache({}, "memory://")  # type: ignore[arg-type]
    await tiered.aclose()


# -- decorator, warm, env ---------------------------------------------------------------


@pytest.mark.anyio
async def test_cached_on_a_tiered_cache_uses_argument_digests(backend: Backend) -> None:
    tiered = TieredCache(LRUCache(10), backend)
    calls = 0

    @cached(tiered, ttl=60)
    async def network(name: str, *, depth: int = 1) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"name": name, "depth": depth}

    @cached(tiered)
    def count(name: str) -> int:
        return len(name)

    assert await network("lac", depth=2) == {"name": "lac", "depth": 2}
    assert await network("lac", depth=2) == {"name": "lac", "depth": 2}
    assert calls == 1
    (key,) = [k for k in tiered.l1 if "network" in k]
    assert key.startswith("tests.test_advanced_cache_tiered.")
    assert "lac" not in key
    assert await asyncio.to_thread(count, "lacZ") == 4
    with pytest.raises(SerializationError):
        await network(Gene("x"))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_cached_on_a_tiered_cache_keys_the_bound_arguments_with_their_types() -> None:
    tiered = TieredCache(LRUCache(10), "memory://")
    calls: list[Any] = []

    @cached(tiered)
    async def network(name: Any, depth: int = 1) -> str:
        calls.append((name, depth))
        return f"{name}:{depth}"

    assert await network("lac") == "lac:1"
    assert await network(name="lac") == "lac:1"
    assert await network("lac", depth=1) == "lac:1"
    assert len(calls) == 1  # defaults applied, keyword or positional: one entry
    assert await network({1: "a"}) == "{1: 'a'}:1"
    assert await network({"1": "a"}) == "{'1': 'a'}:1"  # JSON would merge these keys
    assert await network(True) == "True:1"
    assert await network(1) == "1:1"
    assert len(calls) == 5
    await tiered.aclose()


@pytest.mark.anyio
async def test_warm_fills_a_tiered_cache_from_async_and_sync_loaders(backend: Backend) -> None:
    tiered = TieredCache(LRUCache(100), backend, namespace="w:")

    async def aload(k: str) -> str:
        await asyncio.sleep(0)
        return k.upper()

    result = await warm(tiered, aload, ["a", "b", "c"], concurrency=2)
    assert result.loaded == 3
    sync_result = await asyncio.to_thread(warm, tiered, str.upper, ["d", "e"])
    assert sync_result.loaded == 2
    tiered.l1.clear()
    assert [await tiered.get(k) for k in "abcde"] == list("ABCDE")


def test_from_env_builds_l1_and_l2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_BACKEND_URL", "memory://")
    monkeypatch.setenv("APP_TIERED_L1_MAXSIZE", "5")
    monkeypatch.setenv("APP_TIERED_L1_TTL", "2")
    monkeypatch.setenv("APP_TIERED_TTL", "60")
    monkeypatch.setenv("APP_TIERED_FAIL_OPEN", "false")
    monkeypatch.setenv("APP_TIERED_NAMESPACE", "ns:")
    tiered = TieredCache.from_env("APP_")
    assert isinstance(tiered.l1, TTLCache)
    assert tiered.l1.maxsize == 5
    assert tiered.l1.ttl == 2
    assert (tiered.ttl, tiered.fail_open, tiered.namespace) == (60, False, "ns:")
    monkeypatch.setenv("APP_TIERED_FAIL_OPEN", "sometimes")
    with pytest.raises(ConfigurationError):
        TieredCache.from_env("APP_")


def test_sync_use_from_many_threads_keeps_l1_consistent() -> None:
    tiered = TieredCache(LRUCache(32), "memory://", invalidate=False)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(300):
                k = f"k{(n + i) % 50}"
                if i % 3:
                    tiered.sync.get_or_load(k, lambda k=k: k)
                else:
                    tiered.sync.set(k, k)
                assert len(tiered.l1) <= 32
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(tiered.l1.peek(k)[0] == k for k in tiered.l1)
