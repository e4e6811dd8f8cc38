"""gennet_toolkit.cache on memory and Redis: decorators, keys, TTL, tags, patterns,
single-flight, serializers, None, early refresh, configuration."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gennet_toolkit.backends import Backend, MemoryBackend, from_url
from gennet_toolkit.cache import MISS, Cache, PickleSerializer, UnsafeValueError
from gennet_toolkit.exceptions import ConfigurationError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Backend]:
    """A memory or Redis backend, its connections closed on the test's own loop."""
    if request.param == "memory":
        b: Backend = MemoryBackend()
    else:
        url = request.getfixturevalue("redis_url")
        b = from_url(url, prefix=request.getfixturevalue("redis_prefix"))
    try:
        yield b
    finally:
        await b.aclose()


@pytest.fixture
def cache(backend: Backend) -> Cache:
    """A cache in namespace ``t`` on ``backend``."""
    return Cache(backend, namespace="t")


# ---------------------------------------------------------------- decorators


@pytest.mark.anyio
async def test_async_function_is_called_once_per_arguments(cache: Cache) -> None:
    calls: list[str] = []

    @cache.cached(ttl=60)
    async def gene(symbol: str, organism: str = "ecoli") -> dict[str, str]:
        calls.append(symbol)
        return {"symbol": symbol, "organism": organism}

    assert await gene("lacZ") == {"symbol": "lacZ", "organism": "ecoli"}
    assert await gene("lacZ") == {"symbol": "lacZ", "organism": "ecoli"}
    assert await gene(symbol="lacZ", organism="ecoli") == {"symbol": "lacZ", "organism": "ecoli"}
    assert await gene("lacY") == {"symbol": "lacY", "organism": "ecoli"}
    assert calls == ["lacZ", "lacY"]
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads) == (2, 2, 2)
    assert stats.hit_ratio == 0.5


def test_sync_function_is_cached_through_the_sync_backend(cache: Cache) -> None:
    calls: list[int] = []

    @cache.cached(ttl=60)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert [square(3), square(3), square(x=3), square(4)] == [9, 9, 9, 16]
    assert calls == [3, 4]


@pytest.mark.anyio
async def test_sync_cached_function_works_inside_a_running_loop_on_memory() -> None:
    cache = Cache()

    @cache.cached()
    def one() -> int:
        return 1

    assert one() == 1
    assert one() == 1
    assert cache.stats().hits == 1


def test_decorated_functions_keep_their_signature_and_docstring() -> None:
    cache = Cache()

    async def fetch(symbol: str, *, limit: int = 10) -> list[str]:
        """Fetch a gene."""
        return [symbol] * limit

    wrapped = cache.cached()(fetch)
    assert inspect.signature(wrapped) == inspect.signature(fetch)
    assert wrapped.__doc__ == "Fetch a gene."
    assert inspect.iscoroutinefunction(wrapped)
    assert wrapped.__wrapped__ is fetch  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_none_is_cached_and_told_apart_from_a_miss(cache: Cache) -> None:
    calls = 0

    @cache.cached(key="missing:{symbol}")
    async def lookup(symbol: str) -> None:
        nonlocal calls
        calls += 1

    assert await lookup("xyz") is None
    assert await lookup("xyz") is None
    assert calls == 1
    assert await cache.get("missing:xyz", MISS) is None
    assert await cache.get("missing:abc", MISS) is MISS
    assert cache.sync.get("missing:xyz", MISS) is None


@pytest.mark.anyio
async def test_condition_false_leaves_the_result_uncached(cache: Cache) -> None:
    calls = 0

    @cache.cached(condition=lambda r: r is not None)
    async def maybe(x: int) -> int | None:
        nonlocal calls
        calls += 1
        return None if x < 0 else x

    await maybe(-1)
    await maybe(-1)
    await maybe(1)
    await maybe(1)
    assert calls == 3


@pytest.mark.anyio
async def test_exceptions_are_not_cached(cache: Cache) -> None:
    calls = 0

    @cache.cached()
    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("upstream hiccup")
        return 7

    with pytest.raises(RuntimeError):
        await flaky()
    assert await flaky() == 7
    assert await flaky() == 7
    assert calls == 2


def test_generator_functions_are_refused() -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError, match="generator"):

        @cache.cached()
        def gen() -> Iterator[int]:
            yield 1


# ---------------------------------------------------------------- keys


def test_template_key_is_readable_and_helpers_use_it(cache: Cache) -> None:
    @cache.cached(key="gene:{symbol}:{organism}")
    def gene(symbol: str, organism: str = "ecoli") -> str:
        return symbol

    assert gene.cache_key("lacZ") == "gene:lacZ:ecoli"
    gene("lacZ")
    assert cache.sync.get("gene:lacZ:ecoli") == "lacZ"
    assert gene.invalidate("lacZ") == 1
    assert cache.sync.get("gene:lacZ:ecoli", MISS) is MISS


def test_template_naming_an_unknown_argument_fails_at_decoration() -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError, match="symbl"):

        @cache.cached(key="gene:{symbl}")
        def gene(symbol: str) -> str:
            return symbol


def test_arguments_without_a_stable_form_are_refused_not_repr_ed() -> None:
    cache = Cache()

    @cache.cached()
    def f(obj: object) -> int:
        return 1

    with pytest.raises(TypeError, match="cache key"):
        f(object())

    @cache.cached(key="k:{obj}")
    def g(obj: object) -> int:
        return 1

    with pytest.raises(TypeError, match="template"):
        g(object())


def test_objects_with_cache_key_hook_build_stable_keys() -> None:
    cache = Cache()

    class Gene:
        def __init__(self, symbol: str) -> None:
            self.symbol = symbol

        def __cache_key__(self) -> str:
            return self.symbol

    @cache.cached()
    def f(g: Gene) -> str:
        return g.symbol

    assert f.cache_key(Gene("lacZ")) == f.cache_key(Gene("lacZ"))
    assert f.cache_key(Gene("lacZ")) != f.cache_key(Gene("lacY"))


def test_default_keys_are_stable_and_type_exact() -> None:
    cache = Cache()

    @cache.cached()
    def f(x: Any, y: int = 2) -> Any:
        return x

    assert f.cache_key(1) == f.cache_key(x=1, y=2)
    assert f.cache_key(1) != f.cache_key("1")
    assert f.cache_key(1) != f.cache_key(1.0)
    assert f.cache_key(1) != f.cache_key(True)
    assert f.cache_key({"a": 1, "b": 2}) == f.cache_key({"b": 2, "a": 1})
    assert f.cache_key(uuid.UUID(int=1)) != f.cache_key(str(uuid.UUID(int=1)))
    assert f.cache_key(1).startswith(f"{__name__}.")


def test_methods_leave_self_out_of_the_default_key() -> None:
    cache = Cache()

    class Repo:
        @cache.cached()
        def get(self, x: int) -> int:
            return x

    assert Repo().get(5) == 5
    assert Repo().get(5) == 5
    assert cache.stats().hits == 1


def test_long_keys_are_hashed_but_keep_their_head(cache: Cache) -> None:
    @cache.cached(key="gene:{name}")
    def f(name: str) -> str:
        return name

    long = "x" * 1000
    key = f.cache_key(long)
    assert len(key) < 200
    assert key.startswith("gene:xxx")
    assert f.cache_key(long) == key
    assert f.cache_key(long + "y") != key
    assert f(long) == long
    assert cache.sync.invalidate("gene:*") == 1


# ---------------------------------------------------------------- TTL


@pytest.mark.anyio
async def test_entries_expire_after_their_ttl_on_a_fake_clock() -> None:
    clock = Clock()
    cache = Cache(MemoryBackend(clock=clock), clock=clock, default_ttl="10m")
    calls = 0

    @cache.cached()
    async def f() -> int:
        nonlocal calls
        calls += 1
        return calls

    @cache.cached(ttl=5)
    def short() -> int:
        return int(clock.now)

    assert await f() == 1
    assert short() == 1000
    clock.now += 6
    assert short() == 1006
    clock.now += 590
    assert await f() == 1
    clock.now += 5
    assert await f() == 2


def test_ttl_accepts_durations_and_refuses_nonsense() -> None:
    cache = Cache()
    cache.sync.set("a", 1, ttl="1h")
    cache.sync.set("b", 1, ttl=None)
    for bad in (0, -1, "soon", True, float("inf")):
        with pytest.raises(ConfigurationError):
            cache.cached(ttl=bad)
    with pytest.raises(ConfigurationError):
        cache.cached(jitter=1.5)


def test_jitter_shortens_ttls_within_the_fraction() -> None:
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    cache = Cache(backend, clock=clock)
    seen = set()
    for i in range(20):
        cache._get_or_load(f"k{i}", (), (lambda: 1, (), {}), cache._policy(100, jitter=0.2))
        ttl = backend.sync.ttl(f"v1:k:k{i}")
        assert ttl is not None
        assert 80 <= ttl <= 100
        seen.add(round(ttl, 3))
    assert len(seen) > 1


# ---------------------------------------------------------------- invalidation


@pytest.mark.anyio
async def test_invalidate_tags_drops_every_entry_under_the_tag(cache: Cache) -> None:
    calls: list[str] = []

    @cache.cached(key="gene:{symbol}", tags=["organism:{organism}", "genes"])
    async def gene(symbol: str, organism: str) -> str:
        calls.append(symbol)
        return symbol

    for s, o in [("lacZ", "ecoli"), ("lacY", "ecoli"), ("GAL4", "yeast")]:
        await gene(s, o)
    await cache.invalidate_tags("organism:ecoli")
    for s, o in [("lacZ", "ecoli"), ("lacY", "ecoli"), ("GAL4", "yeast")]:
        await gene(s, o)
    assert calls == ["lacZ", "lacY", "GAL4", "lacZ", "lacY"]
    # a plain get also honours the entry's tags
    await cache.invalidate_tags("genes")
    assert await cache.get("gene:GAL4", MISS) is MISS


def test_sync_tags_and_manual_set_with_tags(cache: Cache) -> None:
    cache.sync.set("a", 1, tags=["t"])
    cache.sync.set("b", 2, tags=["u"])
    assert cache.sync.get("a") == 1
    cache.sync.invalidate_tags("t")
    assert cache.sync.get("a", MISS) is MISS
    assert cache.sync.get("b") == 2


@pytest.mark.anyio
async def test_an_invalidation_during_a_load_makes_its_result_stale(cache: Cache) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    calls = 0

    @cache.cached(key="g", tags=["t"])
    async def slow() -> int:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return calls

    task = asyncio.create_task(slow())
    await started.wait()
    await cache.invalidate_tags("t")
    release.set()
    assert await task == 1
    assert await slow() == 2  # the value loaded before the invalidation is not served


@pytest.mark.anyio
async def test_invalidate_by_prefix_leaves_other_entries(cache: Cache) -> None:
    for key in ("gene:lacZ", "gene:lacY", "genome:ecoli", "protein:LacI"):
        await cache.set(key, key)
    assert await cache.invalidate("gene:*") == 2
    assert await cache.get("gene:lacZ", MISS) is MISS
    assert await cache.get("genome:ecoli") == "genome:ecoli"
    assert await cache.invalidate("protein:LacI") == 1
    assert await cache.delete("genome:ecoli") == 1
    assert await cache.get("genome:ecoli", MISS) is MISS


@pytest.mark.anyio
async def test_namespaces_and_versions_do_not_see_each_other(backend: Backend) -> None:
    a, b, a2 = (
        Cache(backend, namespace="a"),
        Cache(backend, namespace="b"),
        Cache(backend, namespace="a", version=2),
    )
    await a.set("k", 1)
    await b.set("k", 2)
    assert await a2.get("k", MISS) is MISS
    assert await b.invalidate("*") == 1
    assert await a.get("k") == 1
    assert await a.clear() >= 1
    assert await a.get("k", MISS) is MISS


def test_glob_patterns_other_than_a_trailing_star_are_refused() -> None:
    cache = Cache()
    for bad in ("gene:*:x", "ge?e", "gene[12]"):
        with pytest.raises(ValueError, match="prefix"):
            cache.sync.invalidate(bad)


# ---------------------------------------------------------------- single-flight


@pytest.mark.anyio
async def test_fifty_concurrent_async_callers_run_the_loader_once(cache: Cache) -> None:
    calls = 0

    @cache.cached(ttl=60)
    async def expensive(x: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return x * 2

    results = await asyncio.gather(*[expensive(21) for _ in range(50)])
    assert results == [42] * 50
    assert calls == 1
    assert cache.stats().coalesced == 49


@pytest.mark.anyio
async def test_waiters_share_the_loaders_exception(cache: Cache) -> None:
    calls = 0

    @cache.cached()
    async def broken() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        raise LookupError("no such gene")

    results = await asyncio.gather(*[broken() for _ in range(10)], return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, LookupError) for r in results)


@pytest.mark.anyio
async def test_a_cancelled_loader_lets_a_waiter_load_instead(cache: Cache) -> None:
    calls = 0
    started = asyncio.Event()

    @cache.cached()
    async def slow() -> int:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(0.05)
        return calls

    first = asyncio.create_task(slow())
    await started.wait()
    second = asyncio.create_task(slow())
    await asyncio.sleep(0)
    first.cancel()
    assert await second == 2
    with pytest.raises(asyncio.CancelledError):
        await first


def test_concurrent_threads_run_the_loader_once(cache: Cache) -> None:
    calls = 0
    barrier = threading.Barrier(10)
    results: list[int] = []

    @cache.cached(ttl=60)
    def expensive() -> int:
        nonlocal calls
        calls += 1
        threading.Event().wait(0.1)
        return 7

    def run() -> None:
        barrier.wait()
        results.append(expensive())

    threads = [threading.Thread(target=run) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [7] * 10
    assert calls == 1


@pytest.mark.anyio
async def test_early_refresh_recomputes_before_expiry_while_serving_the_value() -> None:
    clock = Clock()
    cache = Cache(MemoryBackend(clock=clock), clock=clock, early_refresh=1e9)
    calls = 0

    @cache.cached(ttl=60)
    async def f() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.001)  # a measurable compute time drives the refresh
        return calls

    assert await f() == 1
    assert await f() == 2  # refreshed early: beta is huge
    assert cache.stats().refreshes == 1

    calm = Cache(MemoryBackend(clock=clock), clock=clock, early_refresh=0)
    g = calm.cached(ttl=60)(f.__wrapped__)  # type: ignore[attr-defined]
    await g()
    await g()
    assert calm.stats().refreshes == 0


@pytest.mark.anyio
async def test_callers_get_the_current_value_while_one_refreshes_early(cache: Cache) -> None:
    refreshing = Cache(cache.backend, namespace="r", early_refresh=1e9)
    calls = 0

    @refreshing.cached(ttl=60)
    async def f() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return calls

    assert await f() == 1
    results = await asyncio.gather(*[f() for _ in range(10)])
    assert calls == 2
    assert sorted(results) == [1] * 9 + [2]


def test_returned_values_are_copies_mutating_them_changes_nothing(cache: Cache) -> None:
    @cache.cached()
    def f() -> dict[str, list[int]]:
        return {"xs": [1]}

    f()["xs"].append(2)
    assert f() == {"xs": [1]}


# ---------------------------------------------------------------- serializers


@pytest.mark.parametrize(
    "value",
    [(1, 2), {1: "a"}, object(), {"x": (1,)}, float("nan"), b"raw", {"s": {1, 2}}],
    ids=["tuple", "int-keys", "object", "nested-tuple", "nan", "bytes", "set"],
)
def test_json_serializer_refuses_values_it_would_change(value: Any) -> None:
    cache = Cache()
    with pytest.raises(UnsafeValueError):
        cache.sync.set("k", value)

    @cache.cached()
    def f() -> Any:
        return value

    with pytest.raises(UnsafeValueError):
        f()


def test_json_serializer_round_trips_plain_data() -> None:
    cache = Cache()
    value = {"a": [1, 2.5, "x", None, True, {"b": []}], "é": "ü"}
    cache.sync.set("k", value)
    assert cache.sync.get("k") == value


def test_pickle_needs_a_secret_and_unknown_serializers_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="secret"):
        Cache(serializer="pickle")
    with pytest.raises(ConfigurationError, match="serializer"):
        Cache(serializer="yaml")
    with pytest.raises(ConfigurationError, match="16 bytes"):
        Cache(serializer="pickle", secret="short")


def test_msgpack_is_optional_and_says_how_to_install_it() -> None:
    import importlib.util

    if importlib.util.find_spec("msgpack") is None:
        with pytest.raises(ImportError, match="pip install"):
            Cache(serializer="msgpack")
        return
    cache = Cache(serializer="msgpack")
    cache.sync.set("k", {"b": b"\x00", "xs": [1, 2]})
    assert cache.sync.get("k") == {"b": b"\x00", "xs": [1, 2]}
    with pytest.raises(UnsafeValueError):
        cache.sync.set("k", (1, 2))


def test_custom_serializers_are_accepted_and_used() -> None:
    class Upper:
        name = "upper"

        def dumps(self, value: Any) -> bytes:
            return str(value).upper().encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    cache = Cache(serializer=Upper())
    cache.sync.set("k", "abc")
    assert cache.sync.get("k") == "ABC"


def test_pickle_values_with_a_bad_signature_read_as_misses() -> None:
    backend = MemoryBackend()
    writer = Cache(backend, serializer="pickle", secret="first-secret-16-bytes")
    reader = Cache(backend, serializer="pickle", secret="second-secret-16-bytes")
    writer.sync.set("k", (1, {2, 3}))
    assert writer.sync.get("k") == (1, {2, 3})
    assert reader.sync.get("k", MISS) is MISS
    assert reader.stats().errors == 1
    with pytest.raises(ValueError, match="signature"):
        PickleSerializer("first-secret-16-bytes").loads(b"\x00" * 40)


def test_garbage_in_the_store_reads_as_a_miss() -> None:
    backend = MemoryBackend()
    cache = Cache(backend)
    backend.sync.set("v1:k:k", b"not a record")
    assert cache.sync.get("k", MISS) is MISS
    backend.sync.set("v1:k:k", b"g1|||||{broken")
    assert cache.sync.get("k", MISS) is MISS
    assert cache.stats().errors == 2


# ---------------------------------------------------------------- configuration


def test_from_env_reads_the_cache_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_CACHE_URL", "memory://")
    monkeypatch.setenv("APP_CACHE_NAMESPACE", "grn")
    monkeypatch.setenv("APP_CACHE_DEFAULT_TTL", "5m")
    monkeypatch.setenv("APP_CACHE_FAIL_OPEN", "false")
    cache = Cache.from_env("APP_")
    assert cache.namespace == "grn"
    assert cache.fail_open is False
    assert cache._default_ttl == 300
    monkeypatch.setenv("APP_CACHE_FAIL_OPEN", "maybe")
    with pytest.raises(ConfigurationError, match="APP_CACHE_FAIL_OPEN"):
        Cache.from_env("APP_")


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        Cache("ftp://x")
    with pytest.raises(ConfigurationError):
        Cache(namespace="a:b")
    with pytest.raises(ConfigurationError):
        Cache(lock_wait=-1)
    with pytest.raises(ConfigurationError, match="ignore"):
        Cache().cached(ignore=["nope"])(lambda x: x)


def test_the_docs_example_runs_as_shown() -> None:
    import pathlib
    import re
    import subprocess
    import sys

    page = pathlib.Path(__file__).parent.parent / "docs" / "cache.md"
    code = re.search(r"```python\n(.*?)```", page.read_text(), re.S)
    assert code is not None
    done = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "CacheStats(" in done.stdout
