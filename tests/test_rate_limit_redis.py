"""rate_limit on Redis: one round trip per check, exactness across processes, outages.

Round-trip counts come from ``INFO commandstats`` on a private redis-server that nothing
else talks to. Outage tests kill that server and start it again.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from typing import Any

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gennet_toolkit.backends.redis import RedisBackend
from gennet_toolkit.rate_limit import RateLimiter, RateLimitMiddleware, Rule, by_api_key
from tests.services import RedisServer

STRATEGIES = ["fixed_window", "sliding_window", "token_bucket"]


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def app_with(limiter: RateLimiter, limit: str = "2/minute", **options: Any) -> RateLimitMiddleware:
    starlette = Starlette(routes=[Route("/", ok)])
    return RateLimitMiddleware(starlette, limiter, rules=[Rule(limit, **options)])


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


class CommandLog:
    """Top-level commands clients send, read from Redis MONITOR.

    INFO commandstats cannot count round trips: it also counts the commands a script
    runs inside Redis. MONITOR tags those ``lua``, so they are left out here.
    """

    END = "gennet-rate-limit-monitor-end"

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._monitor = self._client.monitor()
        self._marker = redis.Redis.from_url(url)
        self._marker.ping()  # connect now, so its handshake is not logged

    def __enter__(self) -> CommandLog:
        self._monitor.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._monitor.__exit__(*exc)
        self._client.close()
        self._marker.close()

    def stop(self) -> list[str]:
        """The command names seen so far, in order (MONITOR buffers them server-side)."""
        return [line.split(" ", 1)[0].upper() for line in self.stop_full()]

    def stop_full(self) -> list[str]:
        """The commands seen so far with their arguments, space-separated."""
        self._marker.echo(self.END)
        lines: list[str] = []
        while True:
            cmd = self._monitor.next_command()
            if self.END in cmd["command"]:
                return lines
            if cmd["client_type"] != "lua":
                lines.append(cmd["command"])


# --------------------------------------------------------------------------- round trips


@pytest.mark.anyio
@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_every_check_is_one_redis_command(redis_server: RedisServer, strategy: str) -> None:
    limiter = RateLimiter(redis_server.url, strategy=strategy)  # type: ignore[arg-type]
    app = app_with(limiter, "1000/minute")
    try:
        async with client_for(app) as client:
            await client.get("/")  # warm-up: connect, SCRIPT LOAD
            limiter.hit_sync("1000/minute", "sync-warm-up")
            with CommandLog(redis_server.url) as log:
                for _ in range(25):
                    assert (await client.get("/")).status_code == 200
                for _ in range(10):
                    assert (await limiter.hit("1000/minute", "direct")) is not None
                    assert limiter.hit_sync("1000/minute", "direct") is not None
                commands = log.stop()
    finally:
        await limiter.aclose()
    assert commands == ["EVALSHA"] * 45


@pytest.mark.anyio
@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_a_rule_with_several_limits_is_one_redis_command_per_check(
    redis_server: RedisServer, strategy: str
) -> None:
    limiter = RateLimiter(redis_server.url, strategy=strategy)  # type: ignore[arg-type]
    app = app_with(limiter, "2/second;3/minute;50/day", key="everyone", name="r")
    try:
        async with client_for(app) as client:
            await limiter.check(Rule("1000/minute", key="x"), "warm-up")  # SCRIPT LOAD
            with CommandLog(redis_server.url) as log:
                codes = [(await client.get("/")).status_code for _ in range(6)]
                commands = log.stop_full()
            last = await client.get("/")
    finally:
        await limiter.aclose()
    assert codes[:2] == [200, 200]
    assert 429 in codes
    # One EVALSHA per request, carrying the rule's three keys, refused or not.
    assert len(commands) == 6
    assert all(c.split(" ")[0].upper() == "EVALSHA" for c in commands)
    assert all(c.split(" ")[2].strip('"') == "3" for c in commands)
    # The 429 names every limit of the rule; the day limit paid only for admissions.
    assert last.headers["RateLimit-Policy"].count(";q=") == 3
    admitted = codes.count(200) + (last.status_code == 200)
    assert f'"r-86400s";r={50 - admitted};' in last.headers["RateLimit"]


@pytest.mark.anyio
async def test_async_path_never_touches_the_blocking_client(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = RedisBackend(redis_url, prefix=redis_prefix)

    def blocked(self: RedisBackend) -> Any:
        raise AssertionError("the sync Redis client was used from async code")

    monkeypatch.setattr(RedisBackend, "sync", property(blocked))
    limiter = RateLimiter(backend, fail_open=False)
    try:
        async with client_for(app_with(limiter)) as client:
            codes = [(await client.get("/")).status_code for _ in range(3)]
    finally:
        await backend.aclose()
    assert codes == [200, 200, 429]


@pytest.mark.anyio
@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_scripts_get_no_client_timestamp(redis_server: RedisServer, strategy: str) -> None:
    # Time must come from Redis TIME inside the script: app hosts' clocks drift apart,
    # and a timestamp sent by the client would split one limit into skewed windows.
    limiter = RateLimiter(redis_server.url, strategy=strategy)  # type: ignore[arg-type]
    try:
        await limiter.hit("7/minute", "warm-up")  # connect, SCRIPT LOAD
        limiter.hit_sync("7/minute", "warm-up")
        with CommandLog(redis_server.url) as log:
            await limiter.hit("7/minute", "clock")
            limiter.hit_sync("7/minute", "clock")
            commands = log.stop_full()
    finally:
        await limiter.aclose()
        limiter.close()
    assert len(commands) == 2
    now = time.time()
    for command in commands:
        # EVALSHA <sha> <numkeys=1> <key> then the algorithm, the cost, the limit and
        # the period (ms).
        name, _sha, numkeys, _key, algorithm, *args = command.split(" ")
        assert (name.upper(), numkeys) == ("EVALSHA", "1")
        assert algorithm.strip('"') in {"fw", "sw", "gcra"}
        assert [float(a.strip('"')) for a in args] == [1, 7, 60_000]
        for arg in args:  # no epoch seconds, milliseconds or microseconds anywhere
            assert not any(
                abs(float(arg) / scale - now) < 10 * 365 * 86400 for scale in (1, 1e3, 1e6)
            )


@pytest.mark.anyio
@pytest.mark.redis
@pytest.mark.slow
async def test_sliding_window_on_redis_still_weighs_the_previous_window(
    redis_url: str, redis_prefix: str
) -> None:
    # The window boundary right after a full window: a fixed window (or a previous
    # window that expired with its own window) would admit a second full quota here.
    period_ms, limit = 4000, 100
    limiter = RateLimiter(redis_url, strategy="sliding_window", prefix=redis_prefix)
    clock = redis.Redis.from_url(redis_url)

    def until_boundary() -> float:
        seconds, micros = clock.time()
        now_ms = seconds * 1000 + micros / 1000
        return (period_ms - now_ms % period_ms) / 1000

    try:
        if until_boundary() < 1.5:  # fill the window well before it ends
            await asyncio.sleep(until_boundary() + 0.05)
        first = await asyncio.gather(*(limiter.hit("100/4s", "u") for _ in range(limit)))
        assert all(r is not None and r.allowed for r in first)
        await asyncio.sleep(until_boundary() + 0.05)
        second = await asyncio.gather(*(limiter.hit("100/4s", "u") for _ in range(limit)))
    finally:
        await limiter.aclose()
        clock.close()
    admitted = sum(1 for r in second if r is not None and r.allowed)
    # About limit * (fraction of the new window elapsed): a few early in the window.
    # The bound leaves 2 s of scheduling slack; a lost previous window admits all 100.
    assert admitted <= limit // 2


# --------------------------------------------------------------------------- storage


@pytest.mark.anyio
@pytest.mark.redis
async def test_stored_keys_are_per_algorithm_expiring_hash_tagged_and_hold_no_secret(
    redis_url: str, redis_prefix: str
) -> None:
    secret = "gnk_live_Sup3rSecretToken"
    limiters = [RateLimiter(redis_url, strategy=s, prefix=redis_prefix) for s in STRATEGIES]  # type: ignore[arg-type]
    try:
        for limiter in limiters:  # one key, every strategy: no WRONGTYPE
            app = app_with(limiter, "5/minute", key=by_api_key, name="k")
            async with client_for(app) as client:
                response = await client.get("/", headers={"X-API-Key": secret})
                assert response.status_code == 200
    finally:
        for limiter in limiters:
            await limiter.aclose()
    store = redis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in store.scan_iter(match=redis_prefix + "*")]
        ttls = [store.pttl(k) for k in keys]
    finally:
        store.close()
    assert {k.split("rl:")[1].split(":")[0] for k in keys} == {"fw", "sw", "gcra"}
    assert all("{" in k and "}" in k for k in keys)
    assert all(t > 0 for t in ttls)
    assert not any(secret in k or "Sup3r" in k for k in keys)


@pytest.mark.anyio
@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_memory_per_key_does_not_grow_with_hits(
    redis_url: str, redis_prefix: str, strategy: str
) -> None:
    limiter = RateLimiter(redis_url, strategy=strategy, prefix=redis_prefix)  # type: ignore[arg-type]
    client = redis.Redis.from_url(redis_url)

    def usage() -> int:
        return sum(
            int(client.memory_usage(k) or 0) for k in client.scan_iter(match=redis_prefix + "*")
        )

    try:
        # 10 hits first: a token bucket's key lives only as long as its debt.
        await asyncio.gather(*(limiter.hit("5000/hour", "user") for _ in range(10)))
        small = usage()
        await asyncio.gather(*(limiter.hit("5000/hour", "user") for _ in range(2000)))
        large = usage()
    finally:
        await limiter.aclose()
        client.close()
    assert small > 0
    assert large <= small + 16  # O(1): a counter or timestamp, never a log of hits


# --------------------------------------------------------------------------- exactness


def _hammer(url: str, prefix: str, barrier: Any, results: Any) -> None:
    """One worker process: per strategy, wait for the others, then 60 hits at once."""
    limiter_by = {
        s: RateLimiter(url, strategy=s, prefix=prefix)  # type: ignore[arg-type]
        for s in STRATEGIES
    }

    async def burst(limiter: RateLimiter) -> int:
        outcomes = await asyncio.gather(*(limiter.hit("100/hour", "shared") for _ in range(45)))
        await limiter.aclose()
        return sum(1 for r in outcomes if r is not None and r.allowed)

    # Two limits of one rule: the day limit (60) binds, so the hour one must end up
    # spent by exactly the admitted requests (a refusal spends nothing on either).
    rule = Rule("100/hour;60/day", key="multi")

    async def multi_burst(limiter: RateLimiter) -> int:
        outcomes = await asyncio.gather(*(limiter.check(rule, "multi") for _ in range(45)))
        await limiter.aclose()
        return sum(1 for d in outcomes if d.allowed and not d.degraded)

    for strategy, limiter in limiter_by.items():
        barrier.wait(timeout=60)
        allowed = asyncio.run(burst(limiter))
        allowed += sum(
            1
            for _ in range(15)
            if (r := limiter.hit_sync("100/hour", "shared")) is not None and r.allowed
        )
        results.put((strategy, allowed))
        barrier.wait(timeout=60)
        allowed = asyncio.run(multi_burst(limiter))
        allowed += sum(1 for _ in range(15) if limiter.check_sync(rule, "multi").allowed)
        results.put(("multi " + strategy, allowed))
    for limiter in limiter_by.values():
        limiter.backend.close()  # type: ignore[attr-defined]


@pytest.mark.redis
@pytest.mark.slow
def test_four_processes_sharing_one_limit_admit_exactly_the_limit(
    redis_url: str, redis_prefix: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_hammer, args=(redis_url, redis_prefix, barrier, results))
        for _ in range(4)
    ]
    for w in workers:
        w.start()
    totals = dict.fromkeys(STRATEGIES, 0) | dict.fromkeys([f"multi {s}" for s in STRATEGIES], 0)
    for _ in range(4 * len(totals)):
        strategy, allowed = results.get(timeout=120)
        totals[strategy] += allowed
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    # 4 processes x 60 attempts = 240 per strategy against a limit of 100 (60 for the
    # two-limit rule, whose day limit binds).
    assert {s: totals[s] for s in STRATEGIES} == dict.fromkeys(STRATEGIES, 100)
    assert {s: totals[f"multi {s}"] for s in STRATEGIES} == dict.fromkeys(STRATEGIES, 60)
    for strategy in STRATEGIES:
        limiter = RateLimiter(redis_url, strategy=strategy, prefix=redis_prefix)  # type: ignore[arg-type]
        hour = limiter.hit_sync("100/hour", "multi", cost=0)
        limiter.close()
        assert hour is not None
        assert hour.remaining == 40, strategy  # the 180 refusals spent nothing


# --------------------------------------------------------------------------- outages


@pytest.mark.anyio
@pytest.mark.slow
async def test_fail_open_passes_logs_once_and_limits_again_after_recovery(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gennet_toolkit.rate_limit")
    limiter = RateLimiter(redis_server.url, strategy="fixed_window", fail_open=True)
    app = app_with(limiter)
    try:
        async with client_for(app) as client:
            assert [(await client.get("/")).status_code for _ in range(3)] == [200, 200, 429]
            redis_server.stop()
            during = [await client.get("/") for _ in range(5)]
            redis_server.start()
            after = [(await client.get("/")).status_code for _ in range(3)]
    finally:
        await limiter.aclose()
    assert [r.status_code for r in during] == [200] * 5
    assert all("RateLimit" not in r.headers for r in during)  # nothing known, nothing claimed
    assert after == [200, 200, 429]  # the restarted (empty) server counts again
    messages = [r.getMessage() for r in caplog.records if r.name == "gennet_toolkit.rate_limit"]
    assert len([m for m in messages if "unavailable" in m]) == 1
    assert len([m for m in messages if "recovered" in m]) == 1
    assert str(redis_server.port) not in " ".join(r.text for r in during)


@pytest.mark.anyio
@pytest.mark.slow
async def test_fail_closed_answers_503_during_the_outage_and_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(redis_server.url, fail_open=False)
    app = app_with(limiter, "5/minute")
    try:
        async with client_for(app) as client:
            assert (await client.get("/")).status_code == 200
            redis_server.stop()
            during = [await client.get("/") for _ in range(4)]
            redis_server.start()
            back = await client.get("/")
    finally:
        await limiter.aclose()
    assert {r.status_code for r in during} == {503}
    assert all(r.headers["content-type"] == "application/problem+json" for r in during)
    assert all(r.json()["status"] == 503 for r in during)
    assert back.status_code == 200
    assert back.headers["RateLimit"].startswith('"default";r=4')
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


@pytest.mark.slow
def test_decorated_sync_function_on_redis_fails_open_then_limits_again(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    from gennet_toolkit.exceptions import RateLimitExceeded
    from gennet_toolkit.rate_limit import rate_limited

    limiter = RateLimiter(redis_server.url, strategy="token_bucket")

    @rate_limited("2/minute", key=lambda gene: gene, limiter=limiter)
    def annotate(gene: str) -> str:
        return gene.upper()

    try:
        assert [annotate("lacz"), annotate("lacz")] == ["LACZ", "LACZ"]
        with pytest.raises(RateLimitExceeded):
            annotate("lacz")
        redis_server.stop()
        assert [annotate("lacz") for _ in range(3)] == ["LACZ"] * 3
        redis_server.start()
        assert [annotate("lacz"), annotate("lacz")] == ["LACZ", "LACZ"]
        with pytest.raises(RateLimitExceeded):
            annotate("lacz")
    finally:
        limiter.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "unavailable" in m]) == 1
    assert len([m for m in messages if "recovered" in m]) == 1
