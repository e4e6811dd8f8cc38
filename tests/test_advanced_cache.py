"""advanced_cache: eviction order per policy, TTL on a fake clock, weights, stats,
thread safety, constant work per operation, the cached decorator and warm()."""

from __future__ import annotations

import asyncio
import copy
import inspect
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gennet_toolkit.advanced_cache import (
    BaseCache,
    CacheStats,
    FIFOCache,
    LFUCache,
    LRUCache,
    TTLCache,
    _lfu,
    _policies,
    _ttl,
    cached,
    stats,
    warm,
)
from gennet_toolkit.exceptions import ConfigurationError


class FakeClock:
    """A timer the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(kind: str, maxsize: int, **kw: Any) -> BaseCache[Any, Any]:
    if kind == "lru":
        return LRUCache(maxsize, **kw)
    if kind == "lfu":
        return LFUCache(maxsize, **kw)
    if kind == "fifo":
        return FIFOCache(maxsize, **kw)
    return TTLCache(maxsize, 60, timer=kw.pop("timer", FakeClock()), **kw)


KINDS = ["lru", "lfu", "fifo", "ttl"]


# -- eviction order ---------------------------------------------------------------------


def test_lru_evicts_least_recently_used_and_reads_count_as_use() -> None:
    c: LRUCache[str, int] = LRUCache(3)
    c["a"], c["b"], c["c"] = 1, 2, 3
    assert c["a"] == 1  # a is now the most recent
    c["d"] = 4
    assert list(c) == ["c", "a", "d"]
    assert "b" not in c
    c.get("c")
    c["e"] = 5
    assert list(c) == ["d", "c", "e"]


def test_lru_membership_and_peek_do_not_change_order() -> None:
    c: LRUCache[str, int] = LRUCache(2)
    c["a"], c["b"] = 1, 2
    assert "a" in c
    assert c.peek("a") == 1
    c["c"] = 3
    assert "a" not in c
    assert c.stats().hits == 0


def test_lru_replacing_a_value_is_a_use() -> None:
    c: LRUCache[str, int] = LRUCache(2)
    c["a"], c["b"] = 1, 2
    c["a"] = 10
    c["c"] = 3
    assert dict(c.items()) == {"a": 10, "c": 3}


def test_fifo_evicts_oldest_write_and_ignores_reads() -> None:
    c: FIFOCache[str, int] = FIFOCache(3)
    c["a"], c["b"], c["c"] = 1, 2, 3
    for _ in range(5):
        assert c["a"] == 1
    c["d"] = 4
    assert list(c) == ["b", "c", "d"]
    c["b"] = 20  # a write moves b to the newest end, as cachetools does
    c["e"] = 5
    assert list(c) == ["d", "b", "e"]


def test_lfu_evicts_least_frequently_used_ties_by_age_at_that_count() -> None:
    c: LFUCache[str, int] = LFUCache(3)
    c["a"], c["b"], c["c"] = 1, 2, 3
    c["a"], c["a"]  # a: 3 uses
    c["b"]  # b: 2 uses, c: 1 use
    c["d"] = 4  # evicts c (count 1)
    assert set(c) == {"a", "b", "d"}
    c["d"]  # d reaches count 2 after b did
    c["e"] = 5  # lowest count is 2 (b, d): b got there first and goes
    assert set(c) == {"a", "d", "e"}
    assert c.use_count("a") == 3
    assert c.use_count("zzz") == 0


def test_lfu_tie_breaks_by_who_reached_the_count_first() -> None:
    c: LFUCache[str, int] = LFUCache(3)
    c["x"], c["y"], c["z"] = 1, 2, 3
    c["y"]
    c["x"]  # x and y both at 2; y got there first
    c["z"]  # z at 2 as well, last
    assert c.popitem() == ("y", 2)
    assert c.popitem() == ("x", 1)
    assert c.popitem() == ("z", 3)
    with pytest.raises(KeyError):
        c.popitem()


def test_lfu_writes_count_as_use() -> None:
    c: LFUCache[str, int] = LFUCache(2)
    c["a"] = 1
    c["a"] = 2
    c["b"] = 3
    c["c"] = 4
    assert set(c) == {"a", "c"}
    assert c["a"] == 2


@pytest.mark.parametrize("kind", KINDS)
def test_popitem_returns_what_eviction_would_remove(kind: str) -> None:
    c = make(kind, 3)
    c["a"], c["b"], c["c"] = 1, 2, 3
    c["a"]
    first = c.popitem()
    expected = {"lru": ("b", 2), "lfu": ("b", 2), "fifo": ("a", 1), "ttl": ("b", 2)}[kind]
    assert first == expected
    assert len(c) == 2


# -- mapping interface ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_mapping_interface_matches_a_dict(kind: str) -> None:
    c = make(kind, 10)
    c.update({"a": 1, "b": 2})
    assert c.get("a") == 1
    assert c.get("zz") is None
    assert c.get("zz", 7) == 7
    assert c.setdefault("a", 99) == 1
    assert c.setdefault("n", None) is None
    assert "n" in c
    assert c.pop("b") == 2
    assert c.pop("b", "gone") == "gone"
    with pytest.raises(KeyError):
        c.pop("b")
    with pytest.raises(KeyError):
        c["missing"]
    with pytest.raises(KeyError):
        del c["missing"]
    del c["n"]
    assert dict(c) == {"a": 1}
    assert len(c) == 1
    c.clear()
    assert len(c) == 0
    assert c.currsize == 0
    assert repr(c).endswith("(maxsize=10, currsize=0)")


@pytest.mark.parametrize("kind", KINDS)
def test_none_is_a_value_not_a_miss(kind: str) -> None:
    c = make(kind, 2)
    c["k"] = None
    assert c["k"] is None
    assert c.get("k", "default") is None
    assert c.stats().hits == 2


@pytest.mark.parametrize("kind", KINDS)
def test_missing_hook_runs_outside_the_lock(kind: str) -> None:
    base = type(make(kind, 1))

    class Loading(base):  # type: ignore[valid-type,misc]
        def __missing__(self, key: Any) -> Any:
            self[key] = key * 2  # re-enters the cache: would deadlock under the lock
            return key * 2

    c = Loading(4) if kind != "ttl" else Loading(4, 60)
    assert c[21] == 42
    assert c[21] == 42
    assert c.stats().hits == 1
    assert c.stats().misses == 1


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True, None])
def test_bad_maxsize_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(ConfigurationError):
        LRUCache(bad)


@pytest.mark.parametrize("kind", KINDS)
def test_maxsize_zero_stores_nothing(kind: str) -> None:
    c = make(kind, 0)
    with pytest.raises(ValueError, match="too large"):
        c["a"] = 1
    assert len(c) == 0


# -- weights ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_weighted_cache_evicts_until_the_new_item_fits(kind: str) -> None:
    c = make(kind, 10, getsizeof=len)
    c["a"] = "xxxx"
    c["b"] = "xxxx"
    assert c.currsize == 8
    c["c"] = "xxxxxx"  # needs 6: one 4-item must go
    assert c.currsize <= 10
    assert "c" in c
    assert len(c) == 2
    with pytest.raises(ValueError, match="too large"):
        c["huge"] = "x" * 11
    assert "huge" not in c
    assert c.currsize <= 10
    c["c"] = "xx"  # replacing adjusts the weight
    assert c.currsize == sum(len(v) for v in c.values())
    assert c.stats().evictions == 1


@pytest.mark.parametrize("kind", KINDS)
def test_heavier_replacement_never_evicts_itself(kind: str) -> None:
    c = make(kind, 10, getsizeof=len)
    c["a"], c["b"] = "xxx", "xxx"
    c["a"] = "xxxxxxxx"  # 8 + 3 > 10: b goes, a stays
    assert dict(c) == {"a": "xxxxxxxx"}


def test_bad_getsizeof_result_is_rejected() -> None:
    c: LRUCache[str, str] = LRUCache(10, getsizeof=lambda v: -1)
    with pytest.raises(ValueError, match="getsizeof"):
        c["a"] = "x"


# -- TTL --------------------------------------------------------------------------------


def test_ttl_items_expire_on_the_injected_clock_and_reads_do_not_extend() -> None:
    clock = FakeClock()
    c: TTLCache[str, int] = TTLCache(10, ttl=10, timer=clock)
    c["a"] = 1
    clock.advance(9.9)
    assert c["a"] == 1
    assert c.expires_at("a") == pytest.approx(1010.0)
    clock.advance(0.1)
    assert "a" not in c
    assert c.get("a") is None
    assert c.stats().expirations == 1
    assert c.expires_at("a") is None


def test_ttl_per_item_ttl_and_expire_returns_what_expired() -> None:
    clock = FakeClock()
    c: TTLCache[str, int] = TTLCache(10, ttl=100, timer=clock)
    c.set("short", 1, ttl=1)
    c["default"] = 2
    c.set("mid", 3, ttl=50)
    clock.advance(1)
    assert c.expire() == [("short", 1)]
    clock.advance(49)
    assert c.expire() == [("mid", 3)]
    assert dict(c) == {"default": 2}
    assert len(c) == 1
    assert c.currsize == 1
    s = c.stats()
    assert s.expirations == 2
    assert s.evictions == 0


def test_ttl_replacing_a_key_resets_its_deadline_and_ttl() -> None:
    clock = FakeClock()
    c: TTLCache[str, int] = TTLCache(10, ttl=10, timer=clock)
    c.set("k", 1, ttl=1)
    c.set("k", 2)  # now the default 10 s
    clock.advance(5)
    assert c["k"] == 2
    clock.advance(5)
    assert "k" not in c


def test_ttl_full_cache_drops_expired_items_before_evicting_live_ones() -> None:
    clock = FakeClock()
    c: TTLCache[str, int] = TTLCache(3, ttl=100, timer=clock)
    c.set("old", 0, ttl=1)
    c["b"], c["c"] = 1, 2
    clock.advance(2)
    c["d"] = 3
    assert set(c) == {"b", "c", "d"}
    assert c["b"] == 1  # b is now more recent than c
    s = c.stats()
    assert s.expirations == 1
    assert s.evictions == 0
    c["e"] = 4  # now a live one must go: the least recently used, c
    assert set(c) == {"b", "d", "e"}
    assert c.stats().evictions == 1


def test_ttl_iteration_length_and_items_skip_expired() -> None:
    clock = FakeClock()
    c: TTLCache[int, int] = TTLCache(100, ttl=5, timer=clock)
    for i in range(10):
        c[i] = i
        clock.advance(1)
    assert len(c) == 4  # 5 was stored at t+5 and expires at t+10: now
    assert list(c) == [6, 7, 8, 9]
    assert c.pop(0, "expired") == "expired"
    assert c.peek(9) == 9
    assert c.peek(0) is None


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "5", True])
def test_ttl_must_be_positive_and_finite(bad: Any) -> None:
    with pytest.raises(ConfigurationError):
        TTLCache(10, ttl=bad)
    c: TTLCache[str, int] = TTLCache(10, ttl=1)
    with pytest.raises(ConfigurationError):
        c.set("k", 1, ttl=bad)


def test_ttl_queues_stay_bounded_by_distinct_live_ttls() -> None:
    clock = FakeClock()
    c: TTLCache[int, int] = TTLCache(1000, ttl=10, timer=clock)
    for i in range(300):
        c.set(i, i, ttl=1 + i % 3)
    assert len(c._queues) == 3
    clock.advance(10)
    c.expire()
    assert c._queues == {}
    assert len(c) == 0


# -- stats ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_stats_count_hits_misses_evictions_and_ratio(kind: str) -> None:
    c = make(kind, 2)
    c["a"] = 1
    c["a"]
    c.get("a")
    c.get("b")
    c["b"], c["c"] = 2, 3
    s = stats(c)
    assert isinstance(s, CacheStats)
    assert (s.hits, s.misses, s.evictions, s.currsize, s.maxsize) == (2, 1, 1, 2, 2)
    assert s.hit_ratio == pytest.approx(2 / 3)
    assert s.as_dict()["hit_ratio"] == pytest.approx(2 / 3)
    c.reset_stats()
    assert c.stats().hits == 0
    assert c.stats().hit_ratio == 0.0


def test_from_env_reads_maxsize_and_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_CACHE_MAXSIZE", "7")
    monkeypatch.setenv("APP_CACHE_TTL", "2.5")
    assert LRUCache.from_env("APP_").maxsize == 7
    t = TTLCache.from_env("APP_")
    assert (t.maxsize, t.ttl) == (7, 2.5)
    monkeypatch.setenv("APP_CACHE_MAXSIZE", "lots")
    with pytest.raises(ConfigurationError) as info:
        LFUCache.from_env("APP_")
    assert "lots" not in str(info.value)


# -- copy and pickle --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("clone", ["copy", "pickle"])
def test_copies_are_independent_and_keep_the_eviction_order(kind: str, clone: str) -> None:
    c = make(kind, 3, timer=time.monotonic) if kind == "ttl" else make(kind, 3)
    c["a"], c["b"], c["c"] = 1, 2, 3
    c["a"]
    c["a"]
    twin = copy.copy(c) if clone == "copy" else pickle.loads(pickle.dumps(c))
    assert twin.stats() == c.stats()
    assert {k: twin.peek(k) for k in twin} == {k: c.peek(k) for k in c}
    if kind == "lfu":
        assert twin.use_count("a") == 3  # type: ignore[attr-defined]
    twin["d"] = 4  # the twin has a lock of its own and its own containers
    c["e"] = 5
    assert "d" not in c
    assert "e" not in twin
    victim = {"lru": "b", "lfu": "b", "fifo": "a", "ttl": "b"}[kind]
    assert victim not in twin
    assert victim not in c


# -- constant work per operation --------------------------------------------------------


class CountingOD(OrderedDict[Any, Any]):
    """An OrderedDict that counts every method call made on it."""

    calls = 0

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if callable(attr) and not name.startswith("__"):
            CountingOD.calls += 1
        return attr

    def __getitem__(self, key: Any) -> Any:
        CountingOD.calls += 1
        return super().__getitem__(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        CountingOD.calls += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        CountingOD.calls += 1
        super().__delitem__(key)

    def __contains__(self, key: object) -> bool:
        CountingOD.calls += 1
        return super().__contains__(key)

    def __iter__(self) -> Iterator[Any]:  # a scan pays per element visited
        for key in super().__iter__():
            CountingOD.calls += 1
            yield key

    def items(self) -> Any:
        for item in super().items():
            CountingOD.calls += 1
            yield item


class CountingBucket(_lfu._Bucket):
    """A frequency bucket counting reads of its ring links (a scan would read many)."""

    hops = 0

    def __getattribute__(self, name: str) -> Any:
        if name in ("next", "prev"):
            CountingBucket.hops += 1
        return super().__getattribute__(name)


def _work(kind: str, size: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(_policies, "OrderedDict", CountingOD)
    monkeypatch.setattr(_ttl, "OrderedDict", CountingOD)
    monkeypatch.setattr(_lfu, "OrderedDict", CountingOD)
    monkeypatch.setattr(_lfu, "_Bucket", CountingBucket)
    c = make(kind, size)
    spread = size // 10
    for i in range(size):
        c[i] = i
    for i in range(size):  # spread use counts with the size: size/10 LFU buckets
        for _ in range(i % spread):
            c[i]
    CountingOD.calls = CountingBucket.hops = 0
    for j in range(20):  # hits, inserts that evict, deletes
        c[size - 1 - j % 7]
        c[size + j] = j
        c.get(size + j)
        c.pop(size + j)
    return CountingOD.calls, CountingBucket.hops


@pytest.mark.parametrize("kind", KINDS)
def test_work_per_operation_does_not_grow_with_the_cache(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _work(kind, 100, monkeypatch)
    large = _work(kind, 2000, monkeypatch)
    assert small[0] > 0
    # 20x the items and buckets; any scan would multiply the work, not add a few steps.
    assert large[0] <= small[0] * 1.25
    assert large[1] <= small[1] * 1.25 + 10


# -- threads ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_threads_hammering_keep_invariants(kind: str) -> None:
    c = make(kind, 64, timer=time.monotonic) if kind == "ttl" else make(kind, 64)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(3000):
                k = (n * 7919 + i) % 200
                op = i % 6
                if op == 0:
                    c.pop(k, None)
                elif op == 1:
                    c.setdefault(k, k)
                elif op == 2:
                    c.get(k)
                else:
                    c[k] = k
                assert c.currsize <= 64
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(c) <= 64
    assert c.currsize == len(c)
    assert all(c.peek(k) == k for k in c)
    if kind == "lfu":
        lfu: Any = c
        assert set(lfu._node) == set(lfu._data)
        assert sum(len(b.keys) for b in _buckets(lfu)) == len(lfu._data)


def _buckets(c: Any) -> Iterator[Any]:
    node = c._root.next
    while node is not c._root:
        yield node
        node = node.next


def test_concurrent_increments_under_the_lock_lose_no_update() -> None:
    c: LRUCache[str, int] = LRUCache(10)
    c["n"] = 0
    lock = threading.Lock()

    def bump() -> None:
        for _ in range(2000):
            with lock:  # the caller's compound op; each cache call is atomic on its own
                c["n"] = c["n"] + 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c["n"] == 8000


def test_setdefault_is_atomic_one_winner_per_key() -> None:
    c: LFUCache[str, int] = LFUCache(10)
    winners: list[int] = []
    barrier = threading.Barrier(8)

    def race(n: int) -> None:
        barrier.wait()
        winners.append(c.setdefault("k", n))

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(winners)) == 1


# -- cached -----------------------------------------------------------------------------


def test_cached_sync_keeps_signature_and_caches_by_arguments() -> None:
    calls: list[tuple[int, int]] = []

    @cached(LRUCache(10))
    def add(a: int, b: int = 0) -> int:
        """Adds."""
        calls.append((a, b))
        return a + b

    assert add(1, 2) == 3
    assert add(1, 2) == 3
    assert add(1, b=2) == 3
    assert calls == [(1, 2), (1, 2)]  # positional and keyword spellings are distinct keys
    assert add.__name__ == "add"
    assert add.__doc__ == "Adds."
    assert str(inspect.signature(add)) == "(a: 'int', b: 'int' = 0) -> 'int'"


def test_cached_sync_runs_the_function_once_for_concurrent_threads() -> None:
    calls = 0
    gate = threading.Event()

    @cached(LRUCache(10))
    def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        gate.wait(5)
        return x

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(slow(1))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    gate.set()
    for t in threads:
        t.join()
    assert results == [1] * 8
    assert calls == 1


@pytest.mark.anyio
async def test_cached_async_single_flight_and_signature() -> None:
    calls = 0

    @cached(TTLCache(10, ttl=60), ttl=5)
    async def fetch(gene: str) -> dict[str, str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return {"gene": gene}

    out = await asyncio.gather(*(fetch("lacZ") for _ in range(50)))
    assert all(o == {"gene": "lacZ"} for o in out)
    assert calls == 1
    assert inspect.iscoroutinefunction(fetch)
    assert str(inspect.signature(fetch)) == "(gene: 'str') -> 'dict[str, str]'"
    await fetch("lacZ")
    assert calls == 1


@pytest.mark.anyio
async def test_cached_async_errors_are_not_cached_and_reach_every_waiter() -> None:
    calls = 0

    @cached(LRUCache(10))
    async def boom(x: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise RuntimeError("first fails")
        return x

    results = await asyncio.gather(*(boom(1) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await boom(1) == 1
    assert calls == 2


@pytest.mark.anyio
async def test_cancelling_the_loading_task_does_not_cancel_waiters() -> None:
    started = asyncio.Event()
    calls = 0

    @cached(LRUCache(10))
    async def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(0.05)
        return x

    leader = asyncio.create_task(slow(1))
    await started.wait()
    waiter = asyncio.create_task(slow(1))
    await asyncio.sleep(0)
    leader.cancel()
    assert await waiter == 1
    assert leader.cancelled()
    assert calls == 2


def test_cached_custom_key_and_ttl_needs_a_ttl_cache() -> None:
    c: LRUCache[Any, Any] = LRUCache(10)

    @cached(c, key=lambda user, *, verbose=False: user)
    def profile(user: str, *, verbose: bool = False) -> str:
        return f"{user}:{verbose}"

    assert profile("ann") == "ann:False"
    assert profile("ann", verbose=True) == "ann:False"  # same key by design
    assert list(c) == ["ann"]
    with pytest.raises(ConfigurationError):
        cached(LRUCache(10), ttl=5)(profile)


def test_cached_results_too_heavy_are_returned_not_stored() -> None:
    c: LRUCache[Any, str] = LRUCache(3, getsizeof=len)

    @cached(c)
    def text(n: int) -> str:
        return "x" * n

    assert text(10) == "x" * 10
    assert len(c) == 0


def test_cached_ttl_expires_with_the_cache_clock() -> None:
    clock = FakeClock()
    calls = 0

    @cached(TTLCache(10, ttl=100, timer=clock), ttl=1)
    def now(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    now(1)
    now(1)
    clock.advance(1)
    now(1)
    assert calls == 2


# -- warm -------------------------------------------------------------------------------


def test_warm_sync_loads_every_key_bounded_and_records_failures() -> None:
    c: LRUCache[int, int] = LRUCache(100)
    running = 0
    peak = 0
    guard = threading.Lock()

    def load(k: int) -> int:
        nonlocal running, peak
        with guard:
            running += 1
            peak = max(peak, running)
        time.sleep(0.002)
        with guard:
            running -= 1
        if k == 13:
            raise LookupError("no such gene")
        return k * k

    result = warm(c, load, iter(range(40)), concurrency=4)
    assert result.loaded == 39
    assert list(result.failed) == [13]
    assert isinstance(result.failed[13], LookupError)
    assert c[12] == 144
    assert 13 not in c
    assert 1 <= peak <= 4


@pytest.mark.anyio
async def test_warm_async_is_awaited_and_bounded() -> None:
    clock = FakeClock()
    c: TTLCache[str, str] = TTLCache(100, ttl=100, timer=clock)
    running = 0
    peak = 0

    async def load(k: str) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return k.upper()

    result = await warm(c, load, [f"g{i}" for i in range(30)], concurrency=3, ttl=1)
    assert result.loaded == 30
    assert result.failed == {}
    assert peak == 3
    assert c["g7"] == "G7"
    clock.advance(1)
    assert "g7" not in c


def test_warm_refuses_a_sync_loader_that_returns_coroutines() -> None:
    async def fetch(k: int) -> int:
        return k

    c: LRUCache[int, int] = LRUCache(10)
    result = warm(c, lambda k: fetch(k), [1, 2])  # noqa: PLW0108 - the lambda is the point
    assert result.loaded == 0
    assert all(isinstance(e, TypeError) for e in result.failed.values())
    assert len(c) == 0


def test_warm_rejects_bad_concurrency() -> None:
    with pytest.raises(ConfigurationError):
        warm(LRUCache(10), lambda k: k, [1], concurrency=0)


def _typed(fn: Callable[[int], int]) -> Callable[[int], int]:
    return fn


def test_cached_is_transparent_to_type_checkers() -> None:
    @cached(LRUCache(4))
    def double(x: int) -> int:
        return 2 * x

    # mypy checks this assignment: the decorated function keeps (int) -> int.
    assert _typed(double)(4) == 8
