"""The rate-limit window updates (fixed window, sliding window counter, GCRA) on every backend.

Memory runs on a fake clock, so its timings are exact; Redis uses its own clock (TIME),
so those tests use periods long enough that a burst never straddles a boundary, or
short real sleeps to watch a window reset.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gennet_toolkit.backends import MemoryBackend, RateLimitResult
from gennet_toolkit.backends.redis import RedisBackend
from tests import test_backends as shared
from tests.test_backends import Api, FakeClock, make_backend

# The shared fixtures, bound here so pytest finds them in this module too.
api, backend, clock, form, kind = shared.api, shared.backend, shared.clock, shared.form, shared.kind


ALGORITHMS = ["fixed_window", "sliding_window", "gcra"]


@pytest.fixture(params=ALGORITHMS)
def algorithm(request: pytest.FixtureRequest) -> str:
    """Which rate-limit operation the test exercises."""
    return str(request.param)


async def hit(
    api: Api, algorithm: str, key: str, limit: int, period: float, *, cost: int = 1
) -> RateLimitResult:
    result: RateLimitResult = await getattr(api, algorithm)(key, limit, period, cost)
    return result


@pytest.mark.anyio
async def test_limit_is_honoured_exactly(api: Api, algorithm: str) -> None:
    results = [await hit(api, algorithm, "user", 5, 1000) for _ in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    assert [r.remaining for r in results] == [4, 3, 2, 1, 0, 0, 0]
    assert all(r.limit == 5 for r in results)
    assert all(r.retry_after == 0 for r in results[:5])
    assert all(0 < r.retry_after <= 2000 for r in results[5:])  # sliding: up to 2 periods
    assert all(0 < r.reset_after <= 2000 for r in results)


@pytest.mark.anyio
async def test_quota_comes_back_after_the_period(api: Api, algorithm: str) -> None:
    period = api.span(10, 0.2)
    for _ in range(3):
        assert (await hit(api, algorithm, "user", 3, period)).allowed
    denied = await hit(api, algorithm, "user", 3, period)
    assert not denied.allowed
    # Two full periods clear every algorithm, the sliding window's previous one included.
    api.sleep(2 * period + api.span(0.01, 0.05))
    again = [await hit(api, algorithm, "user", 3, period) for _ in range(3)]
    assert all(r.allowed for r in again)


@pytest.mark.anyio
async def test_waiting_the_reported_retry_after_lets_the_call_pass(
    api: Api, algorithm: str
) -> None:
    period = api.span(10, 0.4)
    for _ in range(3):
        await hit(api, algorithm, "user", 3, period)
    denied = await hit(api, algorithm, "user", 3, period)
    assert not denied.allowed
    assert 0 < denied.retry_after <= 2 * period
    api.sleep(denied.retry_after + api.span(1e-6, 0.02))
    assert (await hit(api, algorithm, "user", 3, period)).allowed


@pytest.mark.anyio
async def test_cost_above_one_takes_that_much_quota(api: Api, algorithm: str) -> None:
    assert (await hit(api, algorithm, "bytes", 10, 1000, cost=4)).remaining == 6
    assert (await hit(api, algorithm, "bytes", 10, 1000, cost=4)).remaining == 2
    denied = await hit(api, algorithm, "bytes", 10, 1000, cost=4)
    assert (denied.allowed, denied.remaining) == (False, 2)
    last = await hit(api, algorithm, "bytes", 10, 1000, cost=2)
    assert (last.allowed, last.remaining) == (True, 0)


@pytest.mark.anyio
async def test_cost_zero_peeks_without_consuming(api: Api, algorithm: str) -> None:
    await hit(api, algorithm, "user", 5, 1000)
    peek = await hit(api, algorithm, "user", 5, 1000, cost=0)
    assert (peek.allowed, peek.remaining) == (True, 4)
    assert (await hit(api, algorithm, "user", 5, 1000)).remaining == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("limit", "period", "cost"), [(0, 1, 1), (5, 0, 1), (5, -1, 1), (5, 1, 6), (5, 1, -1)]
)
async def test_invalid_rate_arguments_are_rejected(
    api: Api, algorithm: str, limit: int, period: float, cost: int
) -> None:
    with pytest.raises(ValueError, match=r"limit|period|cost"):
        await hit(api, algorithm, "user", limit, period, cost=cost)


@pytest.mark.anyio
async def test_strategies_on_one_key_never_collide(api: Api) -> None:
    # A user switching strategy must not hit WRONGTYPE or share counts.
    for algorithm in ALGORITHMS:
        results = [await hit(api, algorithm, "same", 2, 1000) for _ in range(3)]
        assert [r.allowed for r in results] == [True, True, False]


@pytest.mark.anyio
async def test_concurrent_hits_admit_exactly_the_limit(
    kind: str, request: pytest.FixtureRequest, algorithm: str
) -> None:
    backend = make_backend(kind, request, FakeClock())
    try:
        method = getattr(backend, algorithm)
        results = await asyncio.gather(*(method("burst", 25, 1000) for _ in range(100)))
    finally:
        await backend.aclose()
    assert sum(r.allowed for r in results) == 25


# --------------------------------------------------------------------------- exact timings


@pytest.mark.anyio
async def test_fixed_window_starts_at_the_first_hit(form: str) -> None:
    clock = FakeClock()
    api = Api(MemoryBackend(clock=clock), form, "memory", clock)
    first = await api.fixed_window("k", 2, 10)
    assert first.reset_after == 10
    clock.advance(4)
    await api.fixed_window("k", 2, 10)
    denied = await api.fixed_window("k", 2, 10)
    assert (denied.allowed, denied.retry_after, denied.reset_after) == (False, 6, 6)
    clock.advance(6)
    assert (await api.fixed_window("k", 2, 10)).allowed


@pytest.mark.anyio
async def test_sliding_window_weighs_the_previous_window(form: str) -> None:
    clock = FakeClock(1000.0)  # a window boundary for period 10
    api = Api(MemoryBackend(clock=clock), form, "memory", clock)
    for _ in range(10):
        assert (await api.sliding_window("k", 10, 10)).allowed
    clock.advance(10)  # next window: the previous one still weighs fully
    denied = await api.sliding_window("k", 10, 10)
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(1.0)  # 10% faded frees one slot
    clock.advance(5)  # half the previous window has slid out: 5 slots free
    results = [await api.sliding_window("k", 10, 10) for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert results[4].remaining == 0


@pytest.mark.anyio
async def test_gcra_allows_a_burst_then_one_per_interval(form: str) -> None:
    clock = FakeClock()
    api = Api(MemoryBackend(clock=clock), form, "memory", clock)
    burst = [await api.gcra("k", 5, 1) for _ in range(6)]
    assert [r.allowed for r in burst] == [True] * 5 + [False]
    assert burst[5].retry_after == pytest.approx(0.2)
    assert burst[4].reset_after == pytest.approx(1.0)
    clock.advance(0.2)
    assert (await api.gcra("k", 5, 1)).allowed
    assert not (await api.gcra("k", 5, 1)).allowed
    clock.advance(1.0)
    assert (await api.gcra("k", 5, 1)).remaining == 4


@pytest.mark.anyio
@pytest.mark.redis
async def test_redis_gcra_burst_and_retry_after(redis_url: str, redis_prefix: str) -> None:
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    try:
        burst = [await backend.gcra("k", 5, 10) for _ in range(6)]
        assert [r.allowed for r in burst] == [True] * 5 + [False]
        assert 1.9 < burst[5].retry_after <= 2.0  # one emission interval, by Redis time
    finally:
        await backend.aclose()


@pytest.mark.anyio
@pytest.mark.redis
async def test_redis_rate_keys_are_named_by_algorithm_hash_tagged_and_expiring(
    redis_url: str, redis_prefix: str
) -> None:
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    try:
        for algorithm in ALGORITHMS:
            await getattr(backend, algorithm)("user:42", 10, 60)
        client = backend.client()
        keys = sorted([k.decode() async for k in client.scan_iter(match=redis_prefix + "*")])
        assert keys == [f"{redis_prefix}rl:{short}:{{user:42}}" for short in ("fw", "gcra", "sw")]
        for key in keys:
            assert 0 < await client.pttl(key) <= 120_000
    finally:
        await backend.aclose()


# --------------------------------------------------------------------------- properties

steps = st.lists(
    st.tuples(st.floats(0, 3, allow_nan=False), st.integers(1, 3)), min_size=1, max_size=60
)


@settings(max_examples=150, deadline=None)
@given(steps=steps)
def test_fixed_window_matches_its_model(steps: list[tuple[float, int]]) -> None:
    clock = FakeClock()
    store = MemoryBackend(clock=clock).sync
    start, count = None, 0
    for dt, cost in steps:
        clock.advance(dt)
        if start is None or clock.now >= start + 2:
            start, count = clock.now, 0
        expected = count + cost <= 5
        count += cost if expected else 0
        assert store.fixed_window("k", 5, 2, cost).allowed is expected


@settings(max_examples=150, deadline=None)
@given(steps=steps)
def test_gcra_never_admits_more_than_burst_plus_rate(steps: list[tuple[float, int]]) -> None:
    clock = FakeClock()
    store = MemoryBackend(clock=clock).sync
    admitted: list[tuple[float, int]] = []
    for dt, cost in steps:
        clock.advance(dt)
        if store.gcra("k", 5, 2, cost).allowed:
            admitted.append((clock.now, cost))
    for i, (t0, _) in enumerate(admitted):
        for t1, _ in admitted[i:]:
            taken = sum(c for t, c in admitted if t0 <= t <= t1)
            assert taken <= 5 + (t1 - t0) * 5 / 2 + 1e-6


@settings(max_examples=150, deadline=None)
@given(steps=steps)
def test_sliding_window_never_exceeds_the_limit_in_an_aligned_window(
    steps: list[tuple[float, int]],
) -> None:
    clock = FakeClock()
    store = MemoryBackend(clock=clock).sync
    per_window: dict[int, int] = {}
    for dt, cost in steps:
        clock.advance(dt)
        if store.sliding_window("k", 5, 2, cost).allowed:
            window = int(clock.now // 2)
            per_window[window] = per_window.get(window, 0) + cost
    assert all(v <= 5 for v in per_window.values())


@settings(max_examples=150, deadline=None)
@given(steps=steps, algorithm=st.sampled_from(ALGORITHMS), cost=st.integers(1, 5))
def test_waiting_retry_after_is_enough(
    steps: list[tuple[float, int]], algorithm: str, cost: int
) -> None:
    clock = FakeClock()
    store = MemoryBackend(clock=clock).sync
    method = getattr(store, algorithm)
    for dt, c in steps:
        clock.advance(dt)
        method("k", 5, 2, c)
    denied = method("k", 5, 2, cost)
    if not denied.allowed:
        clock.advance(denied.retry_after + 1e-9)
        assert method("k", 5, 2, cost).allowed


# --------------------------------------------------------------------------- several limits


async def hit_all(
    api: Api, algorithm: str, key: str, limits: list[tuple[int, float]], *, cost: int = 1
) -> tuple[RateLimitResult, ...]:
    results: tuple[RateLimitResult, ...] = await api.rate_limits(algorithm, key, limits, cost)
    return results


@pytest.mark.anyio
async def test_a_refused_multi_limit_call_spends_nothing_on_any_limit(
    api: Api, algorithm: str
) -> None:
    limits = [(2, 1000.0), (3, 5000.0)]
    first = [await hit_all(api, algorithm, "u", limits) for _ in range(2)]
    assert [[r.remaining for r in results] for results in first] == [[1, 2], [0, 1]]
    # The short limit refuses: the long one reports what it has and is not spent.
    for _ in range(5):
        short, long = await hit_all(api, algorithm, "u", limits)
        assert (short.allowed, long.allowed, long.remaining) == (False, True, 1)
        assert short.retry_after > 0
        assert long.retry_after == 0
    (peek,) = await hit_all(api, algorithm, "u", [(3, 5000.0)], cost=0)
    assert peek.remaining == 1


@pytest.mark.anyio
async def test_a_longer_limit_refusing_leaves_the_shorter_one_unspent(
    api: Api, algorithm: str
) -> None:
    limits = [(5, 1000.0), (2, 5000.0)]
    for _ in range(2):
        assert all(r.allowed for r in await hit_all(api, algorithm, "u", limits))
    short, long = await hit_all(api, algorithm, "u", limits)
    assert (short.allowed, short.remaining, long.allowed) == (True, 3, False)
    (peek,) = await hit_all(api, algorithm, "u", [(5, 1000.0)], cost=0)
    assert peek.remaining == 3


@pytest.mark.anyio
async def test_one_limit_through_rate_limits_behaves_like_the_single_operation(
    api: Api, algorithm: str
) -> None:
    singles = [await hit(api, algorithm, "single", 3, 1000) for _ in range(5)]
    multis = [(await hit_all(api, algorithm, "multi", [(3, 1000)]))[0] for _ in range(5)]
    assert [(r.allowed, r.remaining) for r in multis] == [(r.allowed, r.remaining) for r in singles]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("algorithm_name", "limits", "cost"),
    [
        ("leaky_bucket", [(5, 1.0)], 1),
        ("fixed_window", [], 1),
        ("fixed_window", [(5, 1.0), (9, 1.0)], 1),  # one period twice: one shared counter
        ("fixed_window", [(5, 1.0), (0, 60.0)], 1),
        ("sliding_window", [(5, 1.0), (2, 60.0)], 3),  # cost above a limit
        ("gcra", [(5, float("inf"))], 1),
    ],
)
async def test_invalid_multi_limit_calls_are_rejected(
    api: Api, algorithm_name: str, limits: list[tuple[int, float]], cost: int
) -> None:
    with pytest.raises(ValueError, match=r"algorithm|limit|period|cost"):
        await hit_all(api, algorithm_name, "u", limits, cost=cost)


@pytest.mark.anyio
async def test_concurrent_multi_limit_calls_admit_exactly_and_spend_only_admitted(
    kind: str, request: pytest.FixtureRequest, algorithm: str
) -> None:
    backend = make_backend(kind, request, FakeClock())
    limits = [(40, 1000.0), (25, 5000.0)]
    try:
        results = await asyncio.gather(
            *(backend.rate_limits(algorithm, "burst", limits) for _ in range(100))
        )
        (short_left,) = await backend.rate_limits(algorithm, "burst", [(40, 1000.0)], 0)
    finally:
        await backend.aclose()
    assert sum(all(r.allowed for r in rs) for rs in results) == 25
    assert short_left.remaining == 15  # the 75 refused calls spent nothing


def test_multi_limit_fixed_windows_on_a_fake_clock() -> None:
    clock = FakeClock()
    store = MemoryBackend(clock=clock).sync
    limits = [(2, 10.0), (3, 100.0)]

    def verdicts() -> list[bool]:
        return [r.allowed for r in store.rate_limits("fixed_window", "k", limits)]

    assert [verdicts(), verdicts(), verdicts()] == [[True, True], [True, True], [False, True]]
    clock.advance(9.999)
    assert verdicts() == [False, True]  # still the first 10 s window
    clock.advance(0.001)  # the 10 s window ends exactly here; the 100 s one has 1 left
    assert verdicts() == [True, True]
    assert verdicts() == [True, False]  # the long limit refuses, the short one is unspent
    (short,) = store.rate_limits("fixed_window", "k", [(2, 10.0)], 0)
    assert short.remaining == 1
    clock.advance(90.0)  # both windows over
    assert verdicts() == [True, True]


def test_multi_limit_gcra_on_a_fake_clock() -> None:
    clock = FakeClock()
    store = MemoryBackend(clock=clock).sync
    limits = [(2, 1.0), (4, 60.0)]  # burst 2, one per 0.5 s; at most 4 per minute
    times = [i * 0.25 for i in range(40)]
    admitted = []
    for t in times:
        clock.now = t
        if all(r.allowed for r in store.rate_limits("gcra", "k", limits)):
            admitted.append(t)
    assert admitted == [0.0, 0.25, 0.5, 1.0]
    # The minute bucket holds exactly the 4 admitted: the 36 refusals spent nothing.
    short, long = store.rate_limits("gcra", "k", limits, 0)
    assert (short.remaining, long.remaining) == (2, 0)


def test_multi_limit_sliding_windows_on_a_fake_clock() -> None:
    clock = FakeClock(1000.0)  # a boundary of both windows
    store = MemoryBackend(clock=clock).sync
    limits = [(10, 10.0), (15, 100.0)]
    for _ in range(10):
        assert all(r.allowed for r in store.rate_limits("sliding_window", "k", limits))
    clock.advance(10)  # the short window's previous one weighs fully: refused
    short, long = store.rate_limits("sliding_window", "k", limits)
    assert (short.allowed, long.allowed, long.remaining) == (False, True, 5)
    clock.advance(5)  # half of it has slid out: 5 free, but the long limit has only 5 left
    results = [store.rate_limits("sliding_window", "k", limits) for _ in range(6)]
    assert [all(r.allowed for r in rs) for rs in results] == [True] * 5 + [False]
    assert [r.allowed for r in results[5]] == [False, False]


@pytest.mark.anyio
@pytest.mark.redis
async def test_redis_multi_limit_keys_share_one_hash_tag_and_all_expire(
    redis_url: str, redis_prefix: str
) -> None:
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    try:
        for algorithm in ALGORITHMS:
            await backend.rate_limits(algorithm, "user:42", [(10, 1.0), (100, 60.0), (1, 0.5)])
        client = backend.client()
        keys = sorted([k.decode() async for k in client.scan_iter(match=redis_prefix + "*")])
        assert keys == sorted(
            f"{redis_prefix}rl:{short}:{{user:42}}:{period}"
            for short in ("fw", "gcra", "sw")
            for period in ("1", "60", "0.5")
        )
        for key in keys:
            assert 0 < await client.pttl(key) <= 120_000
        # Redis Cluster hashes only the first {...}: one tag, so one slot for all.
        assert {k[k.index("{") : k.index("}") + 1] for k in keys} == {"{user:42}"}
    finally:
        await backend.aclose()


def test_threads_sharing_a_memory_multi_limit_admit_exactly_and_spend_only_admitted() -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = MemoryBackend().sync
    limits = [(100, 1000.0), (60, 5000.0)]

    def worker(_: int) -> int:
        return sum(
            all(r.allowed for r in store.rate_limits("sliding_window", "t", limits))
            for _ in range(50)
        )

    with ThreadPoolExecutor(8) as pool:
        admitted = sum(pool.map(worker, range(8)))
    (short,) = store.rate_limits("sliding_window", "t", [(100, 1000.0)], 0)
    assert (admitted, short.remaining) == (60, 40)
