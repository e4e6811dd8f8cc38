"""circuit_breaker in one process: the state machine on a fake clock, exclusions,
listeners, decorators and context managers, concurrency, configuration, HTTP errors."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gennet_toolkit import circuit_breaker
from gennet_toolkit.backends import MemoryBackend
from gennet_toolkit.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerListener,
    CircuitOpenError,
    State,
)
from gennet_toolkit.error_handler import install_error_handlers
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable

DOCS = Path(__file__).resolve().parents[1] / "docs" / "circuit_breaker.md"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Boom(Exception):
    pass


class Recorder(CircuitBreakerListener):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def state_change(self, breaker: CircuitBreaker, old: State, new: State) -> None:
        self.events.append(("state", old, new))

    def failure(self, breaker: CircuitBreaker, exc: BaseException) -> None:
        self.events.append(("failure", type(exc)))

    def success(self, breaker: CircuitBreaker) -> None:
        self.events.append(("success",))

    def rejected(self, breaker: CircuitBreaker, retry_after: float) -> None:
        self.events.append(("rejected", retry_after))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def fail(breaker: CircuitBreaker, times: int = 1, exc: type[BaseException] = Boom) -> None:
    for _ in range(times):
        with pytest.raises(exc):
            breaker.call(raise_, exc)


def raise_(exc: type[BaseException]) -> None:
    raise exc()


def ok() -> str:
    return "ok"


def make(clock: Clock, **options: Any) -> CircuitBreaker:
    options.setdefault("fail_max", 3)
    options.setdefault("reset_timeout", 30)
    return CircuitBreaker("upstream", clock=clock, **options)


# --------------------------------------------------------------------------- state machine


def test_breaker_opens_after_fail_max_consecutive_failures(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.state is State.CLOSED
    assert breaker.failure_count == 2
    fail(breaker)
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.status_code == 503
    assert info.value.headers["Retry-After"] == "30"


def test_retry_after_is_the_remaining_open_time_rounded_up(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(20.5)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.headers["Retry-After"] == "10"
    assert info.value.retry_after == 10


def test_a_success_resets_consecutive_failures(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.call(ok) == "ok"
    assert breaker.failure_count == 0
    fail(breaker, 2)
    assert breaker.state is State.CLOSED


def test_open_turns_half_open_after_reset_timeout(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(29.9)
    assert breaker.state is State.OPEN
    clock.advance(0.1)
    assert breaker.state is State.HALF_OPEN


def test_half_open_trial_success_closes(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(30)
    assert breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED
    assert breaker.failure_count == 0


def test_half_open_trial_failure_reopens_for_a_full_timeout(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(31)
    fail(breaker)
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after == 30


def test_success_threshold_needs_that_many_trial_successes(clock: Clock) -> None:
    breaker = make(clock, success_threshold=3)
    fail(breaker, 3)
    clock.advance(30)
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.state is State.HALF_OPEN
    breaker.call(ok)
    assert breaker.state is State.CLOSED


def test_failure_window_counts_only_failures_within_the_window(clock: Clock) -> None:
    breaker = make(clock, failure_window=10)
    fail(breaker, 2)
    breaker.call(ok)  # successes do not reset a windowed count
    assert breaker.failure_count == 2
    clock.advance(10)
    fail(breaker, 2)  # the old window ended: a new one starts with these two
    assert breaker.state is State.CLOSED
    fail(breaker)
    assert breaker.state is State.OPEN


def test_manual_open_close_and_half_open(clock: Clock) -> None:
    breaker = make(clock)
    breaker.open()
    assert breaker.state is State.OPEN
    breaker.close()
    assert breaker.state is State.CLOSED
    breaker.half_open()
    assert breaker.state is State.HALF_OPEN
    breaker.call(ok)
    assert breaker.state is State.CLOSED
    breaker.set_state("open")
    assert breaker.state is State.OPEN


def test_state_codes_suit_a_gauge() -> None:
    assert [s.code for s in State] == [0, 1, 2]
    assert [str(s) for s in State] == ["closed", "open", "half_open"]


# --------------------------------------------------------------------------- half-open permits


def test_half_open_admits_only_half_open_max_calls_at_a_time(clock: Clock) -> None:
    breaker = make(clock, half_open_max_calls=2)
    fail(breaker, 3)
    clock.advance(30)
    first, second = breaker.calling(), breaker.calling()
    first.__enter__()
    second.__enter__()
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    second.__exit__(None, None, None)  # a success closes (success_threshold=1)
    first.__exit__(None, None, None)
    assert breaker.state is State.CLOSED


def test_a_stalled_trial_permit_lapses_after_reset_timeout(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(30)
    stalled = breaker.calling()
    stalled.__enter__()  # never finishes
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(30)
    assert breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED
    stalled.__exit__(Boom, Boom(), None)  # stale: from a period that ended
    assert breaker.state is State.CLOSED


def test_an_outcome_from_an_earlier_period_is_ignored(clock: Clock) -> None:
    breaker = make(clock, fail_max=1)
    slow = breaker.calling()
    slow.__enter__()  # starts while closed
    breaker.open()
    breaker.close()
    slow.__exit__(Boom, Boom(), None)
    assert breaker.state is State.CLOSED


# --------------------------------------------------------------------------- what counts


def test_excluded_exception_types_do_not_count(clock: Clock) -> None:
    breaker = make(clock, fail_max=1, exclude=[KeyError])
    fail(breaker, 5, KeyError)
    assert breaker.state is State.CLOSED


def test_excluded_predicate_does_not_count(clock: Clock) -> None:
    class HTTPError(Exception):
        def __init__(self, status: int = 404) -> None:
            self.status = status

    def client_error(exc: BaseException) -> bool:
        return isinstance(exc, HTTPError) and exc.status < 500

    breaker = make(clock, fail_max=2, exclude=[client_error])
    for _ in range(3):
        with pytest.raises(HTTPError):
            breaker.call(lambda: raise_(HTTPError))
    assert breaker.state is State.CLOSED

    def server_error() -> None:
        raise HTTPError(503)

    for _ in range(2):
        with pytest.raises(HTTPError):
            breaker.call(server_error)
    assert breaker.state is State.OPEN


def test_an_excluded_error_in_half_open_counts_as_a_success(clock: Clock) -> None:
    breaker = make(clock, exclude=[KeyError])
    fail(breaker, 3)
    clock.advance(30)
    fail(breaker, 1, KeyError)
    assert breaker.state is State.CLOSED


def test_a_raising_exclude_predicate_counts_a_failure(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(exc: BaseException) -> bool:
        raise RuntimeError("bug in predicate")

    breaker = make(clock, fail_max=1, exclude=[broken])
    fail(breaker)
    assert breaker.state is State.OPEN
    assert "exclude predicate raised" in caplog.text


def test_cancellation_never_counts_as_a_failure(clock: Clock) -> None:
    breaker = make(clock, fail_max=1)
    fail(breaker, 3, asyncio.CancelledError)
    fail(breaker, 1, KeyboardInterrupt)
    assert breaker.state is State.CLOSED


@pytest.mark.anyio
async def test_a_cancelled_trial_gives_its_permit_back(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(30)
    started = asyncio.Event()

    @breaker
    async def hang() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(hang())
    await started.wait()
    with pytest.raises(CircuitOpenError):
        await breaker.acall(asyncio.sleep, 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is State.HALF_OPEN
    await breaker.acall(asyncio.sleep, 0)  # the permit is free again
    assert await breaker.astate() is State.CLOSED


# --------------------------------------------------------------------------- listeners


def test_listeners_see_failures_successes_rejections_and_state_changes(clock: Clock) -> None:
    rec = Recorder()
    breaker = make(clock, fail_max=1, listeners=[rec])
    breaker.call(ok)
    fail(breaker)
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    clock.advance(30)
    breaker.call(ok)
    assert rec.events == [
        ("success",),
        ("state", State.CLOSED, State.OPEN),
        ("failure", Boom),
        ("rejected", 30.0),
        ("state", State.OPEN, State.HALF_OPEN),
        ("state", State.HALF_OPEN, State.CLOSED),
        ("success",),
    ]


def test_a_raising_listener_never_breaks_the_call(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(CircuitBreakerListener):
        def __getattribute__(self, name: str) -> Any:
            if name in {"state_change", "failure", "success", "rejected"}:
                raise RuntimeError("listener bug")
            return super().__getattribute__(name)

    rec = Recorder()
    breaker = make(clock, fail_max=1, listeners=[Broken(), rec])
    assert breaker.call(ok) == "ok"
    fail(breaker)  # the caller still sees its own error, not the listener's
    with pytest.raises(CircuitOpenError):
        breaker.call(ok)
    assert ("failure", Boom) in rec.events  # later listeners still run
    assert caplog.text.count("listener bug") >= 3


def test_listeners_can_be_added_and_removed(clock: Clock) -> None:
    rec = Recorder()
    breaker = make(clock)
    breaker.add_listener(rec)
    breaker.call(ok)
    breaker.remove_listener(rec)
    breaker.call(ok)
    assert rec.events == [("success",)]
    assert breaker.listeners == ()


# --------------------------------------------------------------------------- call forms


def test_sync_decorator_keeps_signature_and_counts(clock: Clock) -> None:
    breaker = make(clock, fail_max=2)

    @breaker
    def lookup(gene: str, *, strict: bool = False) -> str:
        """Find a gene."""
        if strict:
            raise Boom
        return gene.upper()

    assert lookup("lacz") == "LACZ"
    assert lookup.__name__ == "lookup"
    assert lookup.__doc__ == "Find a gene."
    assert str(inspect.signature(lookup)) == "(gene: 'str', *, strict: 'bool' = False) -> 'str'"
    for _ in range(2):
        with pytest.raises(Boom):
            lookup("x", strict=True)
    with pytest.raises(CircuitOpenError):
        lookup("lacz")


@pytest.mark.anyio
async def test_async_decorator_keeps_signature_and_counts(clock: Clock) -> None:
    breaker = make(clock, fail_max=1)

    @breaker
    async def fetch(gene: str) -> str:
        await asyncio.sleep(0)
        if gene == "bad":
            raise Boom
        return gene

    assert inspect.iscoroutinefunction(fetch)
    assert str(inspect.signature(fetch)) == "(gene: 'str') -> 'str'"
    assert await fetch("lacZ") == "lacZ"
    with pytest.raises(Boom):
        await fetch("bad")
    with pytest.raises(CircuitOpenError):
        await fetch("lacZ")


def test_sync_context_manager_counts_the_block(clock: Clock) -> None:
    breaker = make(clock, fail_max=1)
    with breaker:
        pass
    with pytest.raises(Boom), breaker:
        raise Boom
    with pytest.raises(CircuitOpenError), breaker:
        pytest.fail("an open breaker must not run the block")


@pytest.mark.anyio
async def test_async_context_manager_counts_the_block(clock: Clock) -> None:
    breaker = make(clock, fail_max=1)
    async with breaker:
        await asyncio.sleep(0)
    with pytest.raises(Boom):
        async with breaker:
            raise Boom
    with pytest.raises(CircuitOpenError):
        async with breaker:
            pytest.fail("an open breaker must not run the block")


@pytest.mark.anyio
async def test_nested_and_concurrent_blocks_keep_their_own_permits(clock: Clock) -> None:
    breaker = make(clock, fail_max=2, failure_window=60)  # successes do not reset the count

    async def block(fails: bool) -> None:
        async with breaker:
            await asyncio.sleep(0.01)
            async with breaker:
                await asyncio.sleep(0)
            if fails:
                raise Boom

    results = await asyncio.gather(block(True), block(False), return_exceptions=True)
    assert isinstance(results[0], Boom)
    assert results[1] is None
    assert breaker.failure_count == 1


@pytest.mark.anyio
async def test_calling_guard_works_with_and_async_with(clock: Clock) -> None:
    breaker = make(clock, fail_max=2)
    with pytest.raises(Boom), breaker.calling():
        raise Boom
    with pytest.raises(Boom):
        async with breaker.calling():
            raise Boom
    assert breaker.state is State.OPEN


# --------------------------------------------------------------------------- concurrency


@pytest.mark.anyio
@pytest.mark.parametrize("permits", [1, 3])
async def test_half_open_admits_exactly_n_concurrent_tasks(clock: Clock, permits: int) -> None:
    breaker = make(clock, half_open_max_calls=permits)
    fail(breaker, 3)
    clock.advance(30)
    entered = 0
    release = asyncio.Event()

    @breaker
    async def probe() -> None:
        nonlocal entered
        entered += 1
        await release.wait()
        raise Boom  # still failing

    tasks = [asyncio.create_task(probe()) for _ in range(50)]
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert entered == permits
    assert sum(isinstance(r, Boom) for r in results) == permits
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 50 - permits
    assert breaker.state is State.OPEN


def test_half_open_admits_exactly_one_of_many_threads(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.advance(30)
    barrier = threading.Barrier(8)
    release = threading.Event()
    outcomes: list[str] = []

    def probe() -> None:
        release.wait(5)

    def worker() -> None:
        barrier.wait(5)
        try:
            breaker.call(probe)
            outcomes.append("ran")
        except CircuitOpenError:
            outcomes.append("refused")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for _ in range(500):  # the seven refusals come first; the trial waits (bounded)
        if len(outcomes) >= 7:
            break
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join(5)
    assert sorted(outcomes) == ["ran"] + ["refused"] * 7


def test_no_lock_is_held_across_the_protected_call(clock: Clock) -> None:
    breaker = make(clock)
    barrier = threading.Barrier(4)

    def meet() -> bool:
        # Deadlocks (BrokenBarrierError after the timeout) if calls were serialized.
        barrier.wait(5)
        return True

    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(breaker.call(meet))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [True] * 4


# --------------------------------------------------------------------------- shared backends


@pytest.mark.anyio
async def test_breakers_sharing_a_backend_instance_share_state(clock: Clock) -> None:
    backend = MemoryBackend(clock=clock)
    one = CircuitBreaker("db", fail_max=2, backend=backend, clock=clock)
    two = CircuitBreaker("db", fail_max=2, backend=backend, clock=clock)
    other = CircuitBreaker("cache", fail_max=2, backend=backend, clock=clock)
    fail(one)
    with pytest.raises(Boom):
        await two.acall(_araise)
    assert one.state is State.OPEN
    assert await two.astate() is State.OPEN
    assert other.state is State.CLOSED
    clock.advance(30)
    assert await two.acall(_aok) == "ok"
    assert one.state is State.CLOSED


async def _araise() -> None:
    raise Boom


async def _aok() -> str:
    return "ok"


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "options",
    [
        {"fail_max": 0},
        {"fail_max": 2.5},
        {"fail_max": True},
        {"reset_timeout": 0},
        {"reset_timeout": float("inf")},
        {"half_open_max_calls": 0},
        {"success_threshold": 0},
        {"failure_window": -1},
        {"recheck_interval": -1},
        {"exclude": ["not a type"]},
        {"backend": "ftp://example"},
    ],
)
def test_bad_options_raise_configuration_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        CircuitBreaker("x", **options)


def test_empty_name_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        CircuitBreaker("")


def test_from_env_reads_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_CIRCUIT_BREAKER_FAIL_MAX", "7")
    monkeypatch.setenv("APP_CIRCUIT_BREAKER_RESET_TIMEOUT", "12.5")
    monkeypatch.setenv("APP_CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS", "2")
    monkeypatch.setenv("APP_CIRCUIT_BREAKER_FAIL_OPEN", "false")
    monkeypatch.setenv("APP_BACKEND_URL", "memory://")
    breaker = CircuitBreaker.from_env("db", prefix="APP_", success_threshold=2)
    assert breaker.name == "db"
    assert breaker.policy.fail_max == 7
    assert breaker.policy.reset_timeout == 12.5
    assert breaker.policy.half_open_max_calls == 2
    assert breaker.policy.success_threshold == 2
    assert breaker.fail_open is False
    assert repr(breaker) == (
        "CircuitBreaker('db', fail_max=7, reset_timeout=12.5, backend='memory://')"
    )


def test_from_env_rejects_garbage_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENNET_CIRCUIT_BREAKER_FAIL_MAX", "s3cret")
    with pytest.raises(ConfigurationError) as info:
        CircuitBreaker.from_env("db")
    assert "s3cret" not in str(info.value)


def test_repr_never_shows_a_backend_password() -> None:
    breaker = CircuitBreaker("db", backend="redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in repr(breaker)


def test_public_names() -> None:
    assert circuit_breaker.__all__ == [
        "CircuitBreaker",
        "CircuitBreakerListener",
        "CircuitOpenError",
        "Exclude",
        "State",
    ]


# --------------------------------------------------------------------------- HTTP


def _open_breaker_app(kind: str, clock: Clock) -> Any:
    breaker = make(clock, fail_max=1)
    fail(breaker)
    clock.advance(12.2)

    @breaker
    async def upstream() -> str:
        return "data"

    if kind == "starlette":

        async def endpoint(request: Request) -> Response:
            return PlainTextResponse(await upstream())

        app: Any = Starlette(routes=[Route("/genes", endpoint)])
    else:
        app = FastAPI()

        @app.get("/genes")
        async def genes() -> str:
            return await upstream()

    install_error_handlers(app)
    return app


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
async def test_open_breaker_answers_503_problem_json(kind: str, clock: Clock) -> None:
    app = _open_breaker_app(kind, clock)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/genes")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "18"
    body = response.json()
    assert body["status"] == 503
    assert body["type"].endswith("circuit_open")
    assert "Traceback" not in response.text


def test_opening_is_logged_once_per_opening(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gennet_toolkit.circuit_breaker")
    breaker = make(clock, fail_max=1)
    fail(breaker)
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            breaker.call(ok)
    assert caplog.text.count("opened") == 1


def _typed(breaker: CircuitBreaker) -> Callable[[int], str]:
    # mypy checks this: the decorator keeps the parameter and return types.
    @breaker
    def render(n: int) -> str:
        return str(n)

    return render


def test_generator_functions_are_refused_with_a_hint(clock: Clock) -> None:
    breaker = make(clock)

    def gen() -> Iterator[int]:
        yield 1

    async def agen() -> AsyncIterator[int]:
        yield 1

    for fn in (gen, agen):
        with pytest.raises(TypeError, match="with breaker"):
            breaker(fn)


def test_reset_timeout_accepts_a_timedelta(clock: Clock) -> None:
    breaker = make(clock, fail_max=1, reset_timeout=timedelta(minutes=2))
    fail(breaker)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(ok)
    assert info.value.retry_after == 120


@pytest.mark.anyio
async def test_docs_example_answers_503_once_the_breaker_opens() -> None:
    block = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)[0]
    namespace: dict[str, Any] = {}
    exec(compile(block, "circuit_breaker.md", "exec", dont_inherit=True), namespace)
    namespace["genes_api"].open()
    transport = httpx.ASGITransport(app=namespace["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/genes/lacZ")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert response.json()["type"].endswith("circuit_open")


def test_exclude_accepts_a_single_type_and_purgatory_style_pairs(clock: Clock) -> None:
    single = make(clock, fail_max=1, exclude=KeyError)
    fail(single, 2, KeyError)
    assert single.state is State.CLOSED

    class Status(Exception):
        def __init__(self, code: int = 404) -> None:
            self.code = code

    def is_4xx(exc: BaseException) -> bool:
        return isinstance(exc, Status) and exc.code < 500

    paired = make(clock, fail_max=1, exclude=[(Status, is_4xx)])
    fail(paired, 2, Status)  # 404: excluded
    assert paired.state is State.CLOSED
    with pytest.raises(Status):
        paired.call(lambda: raise_instance(Status(503)))
    assert paired.state is State.OPEN


def raise_instance(exc: BaseException) -> None:
    raise exc


# --------------------------------------------------------------------------- backend policy


class FlakyBackend(MemoryBackend):
    """A memory backend whose async reads fail while ``down``; counts the attempts."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.down = False
        self.attempts = 0

    async def get(self, key: str) -> bytes | None:
        self.attempts += 1
        if self.down:
            raise ServiceUnavailable("down", retry_after=1)
        return await super().get(key)


@pytest.fixture
def no_sync_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: MemoryBackend) -> Any:
        pytest.fail("the async path used the blocking backend form")

    monkeypatch.setattr(MemoryBackend, "sync", property(refuse))


@pytest.mark.anyio
@pytest.mark.usefixtures("no_sync_calls")
async def test_the_async_path_never_uses_the_blocking_backend(clock: Clock) -> None:
    breaker = make(clock, fail_max=1, backend=MemoryBackend(clock=clock))
    assert await breaker.acall(_aok) == "ok"
    with pytest.raises(Boom):
        await breaker.acall(_araise)
    assert await breaker.astate() is State.OPEN
    clock.advance(30)
    async with breaker:
        pass
    await breaker.aset_state("open")
    with pytest.raises(CircuitOpenError):
        await breaker.acall(_aok)


@pytest.mark.anyio
async def test_a_down_backend_is_tried_once_per_recheck_interval(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FlakyBackend(clock)
    breaker = make(clock, backend=backend, recheck_interval=10)
    backend.down = True
    for _ in range(20):
        assert await breaker.acall(_aok) == "ok"
    assert backend.attempts == 1  # the others used the in-process state at once
    clock.advance(10)
    for _ in range(5):
        await breaker.acall(_aok)
    assert backend.attempts == 2
    backend.down = False
    clock.advance(10)
    await breaker.acall(_aok)
    await breaker.acall(_aok)
    assert backend.attempts == 4  # back on the shared state: one read per call
    assert caplog.text.count("backend unavailable") == 1
    assert caplog.text.count("backend available again") == 1


@pytest.mark.anyio
async def test_fail_closed_refuses_until_the_backend_returns(clock: Clock) -> None:
    backend = FlakyBackend(clock)
    breaker = make(clock, backend=backend, fail_open=False, recheck_interval=10)
    backend.down = True
    with pytest.raises(CircuitOpenError) as info:
        await breaker.acall(_aok)
    assert info.value.retry_after == 10
    backend.down = False
    with pytest.raises(CircuitOpenError):  # no recheck before the interval
        await breaker.acall(_aok)
    clock.advance(10)
    assert await breaker.acall(_aok) == "ok"


def test_a_late_failure_from_another_worker_does_not_extend_the_open_period(
    clock: Clock,
) -> None:
    backend = MemoryBackend(clock=clock)
    worker_a = make(clock, fail_max=1, backend=backend)
    worker_b = make(clock, fail_max=1, backend=backend)
    slow = worker_b.calling()
    slow.__enter__()  # admitted while closed
    fail(worker_a)  # opens at t
    clock.advance(10)
    slow.__exit__(Boom, Boom(), None)  # fails late: stale, must not reopen at t+10
    with pytest.raises(CircuitOpenError) as info:
        worker_a.call(ok)
    assert info.value.retry_after == 20


def test_from_env_per_breaker_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENNET_CIRCUIT_BREAKER_FAIL_MAX", "7")
    monkeypatch.setenv("GENNET_CIRCUIT_BREAKER_GENES_API_FAIL_MAX", "2")
    assert CircuitBreaker.from_env("genes-api").policy.fail_max == 2
    assert CircuitBreaker.from_env("other").policy.fail_max == 7


@pytest.mark.anyio
async def test_cache_ttl_skips_shared_reads_while_closed_and_bounds_staleness(
    clock: Clock,
) -> None:
    backend = FlakyBackend(clock)
    cached = make(clock, fail_max=1, backend=backend, cache_ttl=2)
    other = make(clock, fail_max=1, backend=backend)
    for _ in range(10):
        await cached.acall(_aok)
    assert backend.attempts == 1
    with pytest.raises(Boom):
        await other.acall(_araise)  # another worker opens the shared breaker
    await cached.acall(_aok)  # still inside its cache_ttl: not seen yet
    clock.advance(2)
    with pytest.raises(CircuitOpenError):
        await cached.acall(_aok)
    clock.advance(30)
    before = backend.attempts
    await cached.acall(_aok)  # half-open trials always go to the shared state
    assert backend.attempts > before
    assert await other.astate() is State.CLOSED


@pytest.mark.anyio
@pytest.mark.parametrize("fail_open", [True, False])
async def test_recheck_interval_zero_probes_every_call_without_looping(
    clock: Clock, fail_open: bool
) -> None:
    backend = FlakyBackend(clock)
    breaker = make(clock, backend=backend, recheck_interval=0, fail_open=fail_open)
    backend.down = True
    for _ in range(3):
        if fail_open:
            assert await breaker.acall(_aok) == "ok"
            assert breaker.call(ok) == "ok"
        else:
            with pytest.raises(CircuitOpenError):
                await breaker.acall(_aok)
    assert backend.attempts == 3  # one probe per async call; sync reads are not counted
