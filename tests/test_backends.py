"""Every backend operation, on memory and Redis, in the async and the sync form.

The fixtures here (``api``, ``backend``, ``kind``, ``form``) are shared by the other
``test_backends_*`` files, so each operation test is one parametrised test.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gennet_toolkit.backends import Backend, LockNotAcquired, MemoryBackend, from_url

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]
FORMS = ["async", "sync"]


class FakeClock:
    """A ``time.monotonic`` stand-in that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """One awaitable view over either form of a backend, so one test covers both.

    ``await api.get("k")`` awaits ``backend.get`` (async form) or calls
    ``backend.sync.get`` right there (sync form: called from inside a running loop on
    purpose, proving the sync form never needs or starts one).
    """

    def __init__(self, backend: Backend, form: str, kind: str, clock: FakeClock) -> None:
        self.backend = backend
        self.form = form
        self.kind = kind
        self.clock = clock

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if self.form == "async":
            fn: Callable[..., Any] = getattr(self.backend, name)
            return fn

        sync_fn: Callable[..., Any] = getattr(self.backend.sync, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return sync_fn(*args, **kwargs)

        return call

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass: the fake clock for memory, real time for Redis."""
        if self.kind == "memory":
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)

    def span(self, memory: float, redis: float) -> float:
        """A duration suited to the backend: anything on a fake clock, short on Redis."""
        return memory if self.kind == "memory" else redis


def make_backend(kind: str, request: pytest.FixtureRequest, clock: FakeClock, **kw: Any) -> Backend:
    """A fresh backend of ``kind``; Redis ones live under the test's key prefix."""
    if kind == "memory":
        return from_url("memory://", clock=clock, **kw)
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    return from_url(url, prefix=prefix + kw.pop("prefix", ""), **kw)


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Which backend the test runs on."""
    return str(request.param)


@pytest.fixture(params=FORMS)
def form(request: pytest.FixtureRequest) -> str:
    """Which API form the test uses."""
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    """The memory backend's clock."""
    return FakeClock()


@pytest.fixture
async def backend(
    kind: str, request: pytest.FixtureRequest, clock: FakeClock, anyio_backend: str
) -> AsyncIterator[Backend]:
    """A backend of ``kind``, closed on the test's own loop afterwards."""
    b = make_backend(kind, request, clock)
    try:
        yield b
    finally:
        await b.aclose()


@pytest.fixture
def api(backend: Backend, form: str, kind: str, clock: FakeClock) -> Api:
    """The backend seen through the chosen form."""
    return Api(backend, form, kind, clock)


# --------------------------------------------------------------------------- get / set / delete


@pytest.mark.anyio
async def test_ping_answers_when_the_store_is_up(api: Api) -> None:
    assert await api.ping() is None


@pytest.mark.anyio
async def test_set_then_get_returns_bytes_and_missing_is_none(api: Api) -> None:
    assert await api.get("k") is None
    assert await api.set("k", "välue") is True
    assert await api.get("k") == "välue".encode()
    assert await api.set("b", b"\x00\xff") is True
    assert await api.get("b") == b"\x00\xff"


@pytest.mark.anyio
async def test_set_nx_only_stores_when_absent(api: Api) -> None:
    assert await api.set("k", "first", nx=True) is True
    assert await api.set("k", "second", nx=True) is False
    assert await api.get("k") == b"first"


@pytest.mark.anyio
async def test_delete_counts_only_existing_keys(api: Api) -> None:
    await api.set("a", "1")
    await api.set("b", "2")
    assert await api.delete("a", "b", "missing") == 2
    assert await api.delete() == 0
    assert await api.get_many(["a", "b"]) == [None, None]


@pytest.mark.anyio
async def test_get_many_and_set_many_keep_order_and_ttl(api: Api) -> None:
    await api.set_many({"x": "1", "y": b"2"}, ttl=api.span(10, 5))
    assert await api.get_many(["y", "nope", "x"]) == [b"2", None, b"1"]
    assert await api.get_many([]) == []
    ttl = await api.ttl("x")
    assert ttl is not None
    assert 0 < ttl <= api.span(10, 5)


@pytest.mark.anyio
async def test_non_positive_ttl_is_rejected(api: Api) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await api.set("k", "v", ttl=0)
    with pytest.raises(ValueError, match="ttl"):
        await api.incr("k", ttl=-1)


# --------------------------------------------------------------------------- TTL


@pytest.mark.anyio
async def test_value_expires_after_its_ttl(api: Api) -> None:
    await api.set("k", "v", ttl=api.span(5, 0.15))
    assert await api.get("k") == b"v"
    api.sleep(api.span(5.01, 0.3))
    assert await api.get("k") is None
    assert await api.ttl("k") is None
    assert await api.set("k", "again", nx=True) is True


@pytest.mark.anyio
async def test_ttl_reports_remaining_infinity_and_missing(api: Api) -> None:
    await api.set("forever", "v")
    assert await api.ttl("forever") == math.inf
    await api.set("brief", "v", ttl=30)
    remaining = await api.ttl("brief")
    assert remaining is not None
    assert 29 < remaining <= 30
    assert await api.ttl("absent") is None


@pytest.mark.anyio
async def test_expire_sets_a_new_ttl_and_misses_absent_keys(api: Api) -> None:
    await api.set("k", "v")
    assert await api.expire("k", api.span(3, 0.15)) is True
    assert await api.expire("absent", 3) is False
    api.sleep(api.span(3.5, 0.3))
    assert await api.get("k") is None


# --------------------------------------------------------------------------- incr


@pytest.mark.anyio
async def test_incr_counts_from_zero_by_any_amount(api: Api) -> None:
    assert await api.incr("n") == 1
    assert await api.incr("n", 5) == 6
    assert await api.incr("n", -2) == 4
    assert await api.get("n") == b"4"
    assert await api.ttl("n") == math.inf


@pytest.mark.anyio
async def test_incr_applies_ttl_on_create_and_never_extends_it(api: Api) -> None:
    assert await api.incr("n", ttl=api.span(10, 0.4)) == 1
    api.sleep(api.span(6, 0.2))
    assert await api.incr("n", ttl=100) == 2
    remaining = await api.ttl("n")
    assert remaining is not None
    assert remaining <= api.span(4, 0.2)
    api.sleep(api.span(4.5, 0.3))
    assert await api.get("n") is None
    assert await api.incr("n", ttl=100) == 1


@pytest.mark.anyio
async def test_incr_of_a_non_integer_is_a_value_error(api: Api) -> None:
    await api.set("k", "not a number")
    with pytest.raises(ValueError, match=r"integer|fit"):
        await api.incr("k")


@pytest.mark.anyio
async def test_concurrent_async_incr_is_exact(kind: str, request: pytest.FixtureRequest) -> None:
    # Five connections for 300 concurrent calls: the burst waits for the pool, never fails.
    opts = {"max_connections": 5} if kind == "redis" else {}
    backend = make_backend(kind, request, FakeClock(), **opts)
    try:
        results = await asyncio.gather(*(backend.incr("n") for _ in range(300)))
        assert sorted(results) == list(range(1, 301))
        assert await backend.get("n") == b"300"
    finally:
        await backend.aclose()


def test_concurrent_sync_incr_from_threads_is_exact(
    kind: str, request: pytest.FixtureRequest
) -> None:
    backend = make_backend(kind, request, FakeClock())
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: backend.sync.incr("n", ttl=60), range(800)))
    assert backend.sync.get("n") == b"800"
    backend.sync.close()


# --------------------------------------------------------------------------- compare-and-set


@pytest.mark.anyio
async def test_compare_and_set_swaps_only_on_match(api: Api) -> None:
    assert await api.compare_and_set("k", None, "closed") is True
    assert await api.compare_and_set("k", None, "open") is False
    assert await api.compare_and_set("k", "half-open", "open") is False
    assert await api.compare_and_set("k", "closed", "open", ttl=30) is True
    assert await api.get("k") == b"open"
    remaining = await api.ttl("k")
    assert remaining is not None
    assert remaining <= 30
    assert await api.compare_and_set("k", "open", None) is True
    assert await api.get("k") is None


@pytest.mark.anyio
async def test_concurrent_compare_and_set_loses_no_update(
    kind: str, request: pytest.FixtureRequest
) -> None:
    backend = make_backend(kind, request, FakeClock())

    async def bump() -> None:
        while True:
            raw = await backend.get("v")
            if await backend.compare_and_set("v", raw, str(int(raw or b"0") + 1)):
                return
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(bump() for _ in range(50)))
        assert await backend.get("v") == b"50"
    finally:
        await backend.aclose()


# --------------------------------------------------------------------------- locks


@pytest.mark.anyio
async def test_lock_release_and_extend_only_by_owner(api: Api) -> None:
    if api.form == "async":
        lock, other = api.backend.lock("job", ttl=30), api.backend.lock("job", ttl=30)
        assert await lock.acquire() is True
        assert await other.acquire() is False
        assert await other.release() is False
        assert await other.extend() is False
        assert await lock.extend(60) is True
        assert await lock.locked() is True
        assert await lock.release() is True
        assert await other.acquire() is True
        assert await other.release() is True
    else:
        slock, sother = api.backend.sync.lock("job", ttl=30), api.backend.sync.lock("job", ttl=30)
        assert slock.acquire() is True
        assert sother.acquire() is False
        assert sother.release() is False
        assert sother.extend() is False
        assert slock.extend(60) is True
        assert slock.locked() is True
        assert slock.release() is True
        assert sother.acquire() is True
        assert sother.release() is True


@pytest.mark.anyio
async def test_lock_frees_itself_after_ttl(api: Api) -> None:
    ttl = api.span(5, 0.15)
    first = api.backend.sync.lock("job", ttl=ttl)
    assert first.acquire() is True
    api.sleep(api.span(5.1, 0.3))
    second = api.backend.lock("job", ttl=30)
    assert await second.acquire() is True
    assert first.release() is False  # expired: the new owner keeps it
    assert await second.locked() is True


@pytest.mark.anyio
async def test_lock_context_raises_when_the_bounded_wait_runs_out(api: Api) -> None:
    holder = api.backend.lock("job", ttl=30)
    assert await holder.acquire()
    with pytest.raises(LockNotAcquired) as info:
        async with api.backend.lock("job", ttl=30, wait=0.05):
            pytest.fail("entered a held lock")
    assert info.value.status_code == 503
    with pytest.raises(LockNotAcquired), api.backend.sync.lock("job", ttl=30, wait=0.05):
        pytest.fail("entered a held lock")
    await holder.release()
    async with api.backend.lock("job", ttl=30) as lock:
        assert await lock.locked()
    assert not await holder.locked()


@pytest.mark.anyio
async def test_lock_waiter_gets_the_lock_once_released(api: Api) -> None:
    holder = api.backend.lock("job", ttl=30)
    assert await holder.acquire()

    async def release_soon() -> None:
        await asyncio.sleep(0.05)
        await holder.release()

    task = asyncio.create_task(release_soon())
    waiter = api.backend.lock("job", ttl=30, wait=5)
    assert await waiter.acquire() is True
    await task
    assert await waiter.release() is True


@pytest.mark.anyio
async def test_lock_is_exclusive_among_tasks(kind: str, request: pytest.FixtureRequest) -> None:
    backend = make_backend(kind, request, FakeClock())
    inside, peak, done = 0, 0, 0

    async def worker() -> None:
        nonlocal inside, peak, done
        async with backend.lock("shared", ttl=30, wait=10):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.001)
            inside -= 1
            done += 1

    try:
        await asyncio.gather(*(worker() for _ in range(20)))
    finally:
        await backend.aclose()
    assert (peak, done) == (1, 20)


def test_sync_lock_is_exclusive_among_threads(kind: str, request: pytest.FixtureRequest) -> None:
    backend = make_backend(kind, request, FakeClock())
    guard = threading.Lock()
    state = {"inside": 0, "peak": 0, "done": 0}

    def worker(_: int) -> None:
        with backend.sync.lock("shared", ttl=30, wait=10):
            with guard:
                state["inside"] += 1
                state["peak"] = max(state["peak"], state["inside"])
            time.sleep(0.002)
            with guard:
                state["inside"] -= 1
                state["done"] += 1

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(worker, range(24)))
    backend.sync.close()
    assert (state["peak"], state["done"]) == (1, 24)


# --------------------------------------------------------------------------- memory specifics


def test_memory_sweeps_expired_keys_nobody_reads_again() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    for i in range(2000):
        backend.sync.set(f"old:{i}", "v", ttl=1)
    clock.advance(2)
    for i in range(10_000):
        backend.sync.set(f"new:{i}", "v")
    # Never read again, yet the expired keys are gone: writes sweep bounded batches.
    assert not [k for k in backend.sync._values if k.startswith("old:")]
    assert backend.sync.get("old:1999") is None


def test_memory_backend_starts_no_thread() -> None:
    before = threading.active_count()
    backend = MemoryBackend()
    backend.sync.set("k", "v", ttl=1)
    backend.sync.subscribe("ch").close()
    assert threading.active_count() == before


def test_sync_form_runs_no_event_loop_and_starts_no_thread(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(kind, request, FakeClock())
    s = backend.sync
    s.ping()  # connect first: a pool may open sockets, but never a loop or a thread

    def no_loop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sync form started an event loop")

    # asyncio.run and asyncio.Runner both reach events.new_event_loop.
    monkeypatch.setattr(asyncio, "new_event_loop", no_loop)
    monkeypatch.setattr(asyncio.events, "new_event_loop", no_loop)
    before = threading.active_count()
    assert s.set("k", "v", ttl=30) is True
    assert s.get("k") == b"v"
    s.set_many({"a": "1", "b": "2"}, ttl=30)
    assert s.get_many(["a", "b"]) == [b"1", b"2"]
    assert s.ttl("k") is not None
    assert s.expire("k", 30) is True
    assert s.incr("n", ttl=30) == 1
    assert s.compare_and_set("k", "v", "w") is True
    with s.lock("job", ttl=30) as lock:
        assert lock.extend() is True
    with s.subscribe("ch") as sub:
        assert s.publish("ch", "x") == 1
        assert sub.get(timeout=5) is not None
    for window in (s.fixed_window, s.sliding_window, s.gcra):
        assert window("rl", 5, 60).allowed
    assert s.delete_prefix("") >= 1
    assert s.delete("k") == 0
    assert threading.active_count() == before
    s.close()
