"""circuit_breaker on Redis: state shared by OS processes, exact half-open trials across
them, one round trip per successful call, and the fallback while Redis is down."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from gennet_toolkit.backends import Backend, from_url
from gennet_toolkit.circuit_breaker import CircuitBreaker, CircuitOpenError, State
from tests.services import RedisServer, closed_port_url

pytestmark = pytest.mark.redis


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


def ok() -> str:
    return "ok"


@pytest.fixture
def backend(redis_url: str, redis_prefix: str) -> Iterator[Backend]:
    b = from_url(redis_url, prefix=redis_prefix)
    yield b
    b.sync.close()


# A worker process: opens the breaker, reports its state, or joins a half-open trial.
WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, threading, time
    import redis
    from gennet_toolkit.backends import from_url
    from gennet_toolkit.circuit_breaker import CircuitBreaker, CircuitOpenError

    url, prefix, mode, offset, calls, permits = sys.argv[1:7]
    offset, calls, permits = float(offset), int(calls), int(permits)
    backend = from_url(url, prefix=prefix)
    raw = redis.Redis.from_url(url)
    breaker = CircuitBreaker("shared", fail_max=2, reset_timeout=60, backend=backend,
                             half_open_max_calls=permits, clock=lambda: time.time() + offset)

    def boom():
        raise RuntimeError("down")

    if mode == "open":
        for _ in range(2):
            try:
                breaker.call(boom)
            except RuntimeError:
                pass
        print(json.dumps({"state": str(breaker.state)}))
        sys.exit(0)
    if mode == "state":
        print(json.dumps({"state": str(breaker.state)}))
        sys.exit(0)

    total = int(sys.argv[7])

    def wait_for_everyone():
        # Hold the trial permit until every caller in every process has tried.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done = int(raw.get(prefix + "t:entered") or 0) + int(raw.get(prefix + "t:refused") or 0)
            if done >= total:
                return
            time.sleep(0.005)

    print("ready", flush=True)
    while not raw.exists(prefix + "t:go"):
        time.sleep(0.005)
    results = []
    if mode == "async":
        async def probe():
            raw.incr(prefix + "t:entered")
            await asyncio.to_thread(wait_for_everyone)
            raise RuntimeError("still down")

        async def one():
            try:
                await breaker.acall(probe)
            except CircuitOpenError:
                raw.incr(prefix + "t:refused")
                return "refused"
            except RuntimeError:
                return "ran"

        async def main():
            out = await asyncio.gather(*(one() for _ in range(calls)))
            await backend.aclose()
            return out

        results = asyncio.run(main())
    else:
        def probe():
            raw.incr(prefix + "t:entered")
            wait_for_everyone()
            raise RuntimeError("still down")

        def one():
            try:
                breaker.call(probe)
            except CircuitOpenError:
                raw.incr(prefix + "t:refused")
                results.append("refused")
            except RuntimeError:
                results.append("ran")

        threads = [threading.Thread(target=one) for _ in range(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    print(json.dumps({"ran": results.count("ran"), "refused": results.count("refused")}))
    """
)


def worker(
    url: str, prefix: str, mode: str, *args: Any, offset: float = 0
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-c", WORKER, url, prefix, mode, str(offset), *map(str, args)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_a_breaker_opened_by_one_process_is_open_in_another(
    redis_url: str, redis_prefix: str
) -> None:
    assert result(worker(redis_url, redis_prefix, "state", 0, 1, 0)) == {"state": "closed"}
    assert result(worker(redis_url, redis_prefix, "open", 0, 1, 0)) == {"state": "open"}
    assert result(worker(redis_url, redis_prefix, "state", 0, 1, 0)) == {"state": "open"}
    # A process whose clock is past reset_timeout sees the same record as half-open.
    assert result(worker(redis_url, redis_prefix, "state", 0, 1, 0, offset=61)) == {
        "state": "half_open"
    }


@pytest.mark.parametrize("permits", [1, 2])
def test_half_open_admits_exactly_n_trials_across_processes(
    redis_url: str, redis_prefix: str, permits: int
) -> None:
    result(worker(redis_url, redis_prefix, "open", 0, 1, permits))
    calls = 12
    # Clocks 61 s ahead: for these processes the open period is over.
    procs = [
        worker(redis_url, redis_prefix, mode, calls, permits, 2 * calls, offset=61)
        for mode in ("async", "threads")
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    redis.Redis.from_url(redis_url).set(redis_prefix + "t:go", 1)
    outcomes = [result(proc) for proc in procs]
    assert sum(o["ran"] for o in outcomes) == permits
    assert sum(o["refused"] for o in outcomes) == 2 * calls - permits


@pytest.mark.anyio
async def test_async_tasks_on_redis_take_exactly_the_permits(backend: Backend) -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        "tasks", fail_max=1, half_open_max_calls=2, backend=backend, clock=clock
    )
    try:
        with pytest.raises(Boom):
            await breaker.acall(_araise)
        clock.advance(30)
        release = asyncio.Event()
        entered = 0

        async def probe() -> None:
            nonlocal entered
            entered += 1
            await release.wait()

        refused = 0
        everyone_refused = asyncio.Event()

        async def attempt() -> None:
            nonlocal refused
            try:
                await breaker.acall(probe)
            except CircuitOpenError:
                refused += 1
                if refused == 28:
                    everyone_refused.set()
                raise

        tasks = [asyncio.create_task(attempt()) for _ in range(30)]
        await asyncio.wait_for(everyone_refused.wait(), 10)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert entered == 2
        assert sum(isinstance(r, CircuitOpenError) for r in results) == 28
        assert await breaker.astate() is State.CLOSED
    finally:
        await backend.aclose()


async def _araise() -> None:
    raise Boom


def test_two_breakers_with_separate_clients_share_state(redis_url: str, redis_prefix: str) -> None:
    clock = Clock()
    a_backend, b_backend = (
        from_url(redis_url, prefix=redis_prefix),
        from_url(redis_url, prefix=redis_prefix),
    )
    try:
        a = CircuitBreaker("db", fail_max=2, backend=a_backend, clock=clock)
        b = CircuitBreaker("db", fail_max=2, backend=b_backend, clock=clock)
        with pytest.raises(Boom):
            a.call(boom)
        with pytest.raises(Boom):
            b.call(boom)  # consecutive failures add up across clients
        with pytest.raises(CircuitOpenError):
            a.call(ok)
        b.close()
        assert a.call(ok) == "ok"
    finally:
        a_backend.sync.close()
        b_backend.sync.close()


def test_a_successful_call_in_the_closed_state_costs_one_round_trip(
    redis_server: RedisServer,
) -> None:
    backend = from_url(redis_server.url)
    raw = redis.Redis.from_url(redis_server.url)
    try:
        breaker = CircuitBreaker("rtt", backend=backend)
        breaker.call(ok)  # connect first
        raw.config_resetstat()
        for _ in range(10):
            breaker.call(ok)
        stats = raw.info("commandstats")
        calls = sum(
            v["calls"]
            for k, v in stats.items()
            if k not in {"cmdstat_info", "cmdstat_config|resetstat"}
        )
        assert calls == 10
    finally:
        backend.sync.close()
        raw.close()


def test_garbage_under_the_key_reads_as_closed_and_is_overwritten(
    backend: Backend, redis_url: str, redis_prefix: str
) -> None:
    raw = redis.Redis.from_url(redis_url)
    try:
        raw.set(redis_prefix + "cb:junk", b"not a record")
        breaker = CircuitBreaker("junk", fail_max=1, backend=backend)
        assert breaker.state is State.CLOSED
        with pytest.raises(Boom):
            breaker.call(boom)
        assert breaker.state is State.OPEN
    finally:
        raw.close()


# --------------------------------------------------------------------------- Redis down


def test_redis_down_with_fail_open_uses_in_process_state_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gennet_toolkit.circuit_breaker")
    clock = Clock()
    backend = from_url(closed_port_url())
    breaker = CircuitBreaker("down", fail_max=2, backend=backend, clock=clock)
    try:
        assert breaker.call(ok) == "ok"
        for _ in range(2):
            with pytest.raises(Boom):
                breaker.call(boom)
        with pytest.raises(CircuitOpenError):  # the local state still protects
            breaker.call(ok)
        assert breaker.state is State.OPEN
        assert caplog.text.count("backend unavailable") == 1
    finally:
        backend.sync.close()


@pytest.mark.anyio
async def test_redis_down_with_fail_closed_refuses_calls(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gennet_toolkit.circuit_breaker")
    backend = from_url(closed_port_url())
    breaker = CircuitBreaker("down", backend=backend, fail_open=False)
    try:
        for _ in range(3):
            with pytest.raises(CircuitOpenError) as info:
                await breaker.acall(_aok)
            assert int(info.value.headers["Retry-After"]) >= 1
        assert caplog.text.count("backend unavailable") == 1
    finally:
        await backend.aclose()


async def _aok() -> str:
    return "ok"


@pytest.mark.anyio
async def test_redis_restart_keeps_protecting_and_recovers(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gennet_toolkit.circuit_breaker")
    clock = Clock()
    backend = from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1, retries=0)
    breaker = CircuitBreaker(
        "restart", fail_max=1, reset_timeout=30, backend=backend, clock=clock, recheck_interval=5
    )
    try:
        with pytest.raises(Boom):
            await breaker.acall(_araise)
        redis_server.stop()
        # Redis is gone: the last state seen (open) still holds in this process.
        with pytest.raises(CircuitOpenError):
            await breaker.acall(_aok)
        with pytest.raises(CircuitOpenError):
            breaker.call(ok)
        assert caplog.text.count("backend unavailable") == 1
        clock.advance(30)
        assert await breaker.acall(_aok) == "ok"  # the local trial closes it
        redis_server.start()
        clock.advance(5)  # the next recheck is due
        with pytest.raises(Boom):
            await breaker.acall(_araise)
        assert "backend available again" in caplog.text
        # Back on Redis: the failure above opened the shared state for everyone.
        other_backend = from_url(redis_server.url)
        try:
            other = CircuitBreaker("restart", backend=other_backend, clock=clock)
            assert await other.astate() is State.OPEN
        finally:
            await other_backend.aclose()
        assert caplog.text.count("backend unavailable") == 1
    finally:
        await backend.aclose()
