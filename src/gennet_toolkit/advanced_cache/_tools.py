"""``cached`` (sync and async, single-flight), ``warm`` and ``stats``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, cast, overload

from gennet_toolkit._cache_keys import KeyBuilder
from gennet_toolkit._singleflight import AsyncFlights, SyncFlights
from gennet_toolkit.advanced_cache._policies import _MISSING, BaseCache, CacheStats
from gennet_toolkit.advanced_cache._tiered import TieredCache, TieredStats
from gennet_toolkit.advanced_cache._ttl import TTLCache, _check_ttl
from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["WarmResult", "cached", "hashkey", "stats", "warm"]

P = ParamSpec("P")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_KWMARK = object()


def hashkey(*args: Any, **kwargs: Any) -> Hashable:
    """The default memory-cache key: the arguments themselves (hash-based, never ``repr``)."""
    if not kwargs:
        return args
    return (*args, _KWMARK, *sorted(kwargs.items()))


def _digest_key(fn: Callable[..., Any]) -> Callable[..., str]:
    # L2 keys must be strings shared by processes: the cache module's key builder (a
    # digest of a type-tagged canonical encoding of the bound arguments, never repr()).
    # ``self`` stays in the key: instances must not share entries unless they say how.
    build = KeyBuilder(fn, None, (), (), sys.maxsize, ignore_self=False).key

    def key(*args: Any, **kwargs: Any) -> str:
        return build(args, kwargs)

    return key


def _storer(cache: MutableMapping[Any, Any], ttl: float | None) -> Callable[[Any, Any], None]:
    if ttl is not None:
        if not isinstance(cache, TTLCache):
            raise ConfigurationError("ttl= needs a TTLCache (or a TieredCache)")
        item_ttl = _check_ttl(ttl)
        ttl_cache = cache

        def store_ttl(key: Any, value: Any) -> None:
            ttl_cache.set(key, value, ttl=item_ttl)

        return store_ttl

    def store(key: Any, value: Any) -> None:
        cache[key] = value

    return store


def cached(
    cache: MutableMapping[Any, Any] | TieredCache,
    *,
    key: Callable[..., Hashable] | None = None,
    ttl: float | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Cache a sync or async function's results in ``cache``, keeping its signature.

    ``key(*args, **kwargs)`` builds the cache key (default :func:`hashkey`; on a
    :class:`TieredCache`, a digest of the JSON-encoded arguments). ``ttl`` sets a
    per-item TTL (a :class:`TTLCache` or :class:`TieredCache` is required). Concurrent
    calls with the same key run the function once: threads for sync functions, tasks for
    async ones; the others wait for that result. Exceptions are not cached. A result
    too heavy for the cache is returned without being stored.
    """
    if ttl is not None:
        _check_ttl(ttl)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if isinstance(cache, TieredCache):
            return _tiered(cache, fn, key or _digest_key(fn), ttl)
        make_key = key or hashkey
        store = _storer(cache, ttl)
        lookup = cache.peek if isinstance(cache, BaseCache) else cache.get

        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[..., Awaitable[Any]], fn)
            aflights = AsyncFlights()

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                k = make_key(*args, **kwargs)
                value = cache.get(k, _MISSING)
                if value is not _MISSING:
                    return value

                async def load() -> Any:
                    found = lookup(k, _MISSING)  # filled while we waited for the flight
                    if found is not _MISSING:
                        return found
                    result = await afn(*args, **kwargs)
                    with contextlib.suppress(ValueError):  # too heavy: returned, not kept
                        store(k, result)
                    return result

                return await aflights.run(k, load)

            return cast(Callable[P, R], async_wrapper)

        flights = SyncFlights()

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            k = make_key(*args, **kwargs)
            value = cache.get(k, _MISSING)
            if value is not _MISSING:
                return cast(R, value)

            def load() -> R:
                found = lookup(k, _MISSING)
                if found is not _MISSING:
                    return cast(R, found)
                result = fn(*args, **kwargs)
                with contextlib.suppress(ValueError):  # too heavy: returned, not kept
                    store(k, result)
                return result

            return flights.run(k, load)

        return wrapper

    return decorate


def _tiered(
    cache: TieredCache, fn: Callable[P, R], make_key: Callable[..., Hashable], ttl: float | None
) -> Callable[P, R]:
    def str_key(*args: Any, **kwargs: Any) -> str:
        k = make_key(*args, **kwargs)
        if not isinstance(k, str):
            raise TypeError("key= must return a str for a TieredCache")
        return k

    if inspect.iscoroutinefunction(fn):
        afn = cast(Callable[..., Awaitable[Any]], fn)

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await cache.get_or_load(
                str_key(*args, **kwargs), lambda: afn(*args, **kwargs), ttl=ttl
            )

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return cache.sync.get_or_load(
            str_key(*args, **kwargs), lambda: fn(*args, **kwargs), ttl=ttl
        )

    return wrapper


@dataclass
class WarmResult:
    """What :func:`warm` did: how many keys it loaded and which ones failed, with why."""

    loaded: int = 0
    failed: dict[Hashable, Exception] = field(default_factory=dict)


def _store_for(cache: Any, ttl: float | None, *, is_async: bool) -> Callable[[Any, Any], Any]:
    if isinstance(cache, TieredCache):
        if is_async:

            async def aset(key: Any, value: Any) -> None:
                await cache.set(key, value, ttl=ttl)

            return aset
        return lambda key, value: cache.sync.set(key, value, ttl=ttl)
    return _storer(cache, ttl)


@overload
def warm(
    cache: MutableMapping[Any, Any] | TieredCache,
    loader: Callable[[K], Coroutine[Any, Any, Any]],
    keys: Iterable[K],
    *,
    concurrency: int = 8,
    ttl: float | None = None,
) -> Coroutine[Any, Any, WarmResult]: ...
@overload
def warm(
    cache: MutableMapping[Any, Any] | TieredCache,
    loader: Callable[[K], Any],
    keys: Iterable[K],
    *,
    concurrency: int = 8,
    ttl: float | None = None,
) -> WarmResult: ...
def warm(
    cache: MutableMapping[Any, Any] | TieredCache,
    loader: Callable[[K], Any],
    keys: Iterable[K],
    *,
    concurrency: int = 8,
    ttl: float | None = None,
) -> WarmResult | Coroutine[Any, Any, WarmResult]:
    """Fill ``cache`` with ``loader(key)`` for every key, at most ``concurrency`` at once.

    With an ``async def`` loader, returns a coroutine to await (tasks); with a sync one,
    runs on up to ``concurrency`` threads and returns when done. ``keys`` is consumed
    lazily. A failing key is recorded in :attr:`WarmResult.failed` and the others go on.
    """
    n: object = concurrency
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError("concurrency must be an integer >= 1")
    if inspect.iscoroutinefunction(loader):
        return _awarm(cache, loader, keys, concurrency, ttl)
    return _warm_sync(cache, loader, keys, concurrency, ttl)


def _warm_sync(
    cache: Any, loader: Callable[[K], Any], keys: Iterable[K], concurrency: int, ttl: float | None
) -> WarmResult:
    store = _store_for(cache, ttl, is_async=False)
    result = WarmResult()
    it = iter(keys)
    guard = threading.Lock()

    def worker() -> None:
        while True:
            with guard:
                key = next(it, _MISSING)
            if key is _MISSING:
                return
            try:
                value = loader(key)
                if inspect.isawaitable(value):
                    if inspect.iscoroutine(value):
                        value.close()  # never awaited: close it rather than warn
                    raise TypeError(
                        "warm() got a sync loader returning an awaitable: use async def"
                    )
                store(key, value)
            except Exception as exc:
                with guard:
                    result.failed[key] = exc
            else:
                with guard:
                    result.loaded += 1

    if concurrency == 1:
        worker()
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cache-warm") as pool:
            for fut in [pool.submit(worker) for _ in range(concurrency)]:
                fut.result()
    return result


async def _awarm(
    cache: Any, loader: Callable[[K], Any], keys: Iterable[K], concurrency: int, ttl: float | None
) -> WarmResult:
    store = _store_for(cache, ttl, is_async=True)
    result = WarmResult()
    it = iter(keys)

    async def worker() -> None:
        for key in it:  # one shared iterator: each worker takes the next key
            try:
                value = await loader(key)
                stored = store(key, value)
                if inspect.isawaitable(stored):
                    await stored
            except Exception as exc:
                result.failed[key] = exc
            else:
                result.loaded += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


@overload
def stats(cache: TieredCache) -> TieredStats: ...
@overload
def stats(cache: BaseCache[Any, Any]) -> CacheStats: ...
def stats(cache: BaseCache[Any, Any] | TieredCache) -> CacheStats | TieredStats:
    """``cache.stats()``: hits, misses, hit ratio, evictions, expirations, sizes."""
    return cache.stats()
