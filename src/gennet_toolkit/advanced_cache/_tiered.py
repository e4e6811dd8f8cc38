"""TieredCache: a bounded in-memory L1 in front of a shared backend (memory:// or redis://)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from gennet_toolkit._env import env_bool, env_float, env_int, env_str
from gennet_toolkit._singleflight import AsyncFlights, SyncFlights
from gennet_toolkit.advanced_cache._policies import _MISSING, BaseCache, CacheStats, LRUCache
from gennet_toolkit.advanced_cache._serializers import Serializer, resolve_serializer
from gennet_toolkit.advanced_cache._ttl import TTLCache, _check_ttl
from gennet_toolkit.backends import Backend, Subscription, SyncSubscription
from gennet_toolkit.backends import from_url as backend_from_url
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable

__all__ = ["TieredCache", "TieredStats"]

T = TypeVar("T")

logger = logging.getLogger("gennet_toolkit.advanced_cache")

_CHANNEL = "advanced_cache:invalidate:"
_RETRY_MAX = 5.0


@dataclass(frozen=True, slots=True)
class TieredStats:
    """Counters of a :class:`TieredCache` and the stats of its L1."""

    l1_hits: int
    l2_hits: int
    misses: int
    loads: int
    coalesced: int
    l2_errors: int
    invalidations: int
    l1: CacheStats

    @property
    def hit_ratio(self) -> float:
        """Lookups answered by L1 or L2 over all lookups; 0.0 before the first."""
        total = self.l1_hits + self.l2_hits + self.misses
        return (self.l1_hits + self.l2_hits) / total if total else 0.0


class TieredCache:
    """A memory L1 (one of this module's caches) in front of a shared L2 backend.

    Reads look in L1, then L2 (filling L1), then call the loader (``get_or_load``) and
    write the value through to L2 and L1. Writes and deletes go to L2 first, then L1, and
    are announced on the backend's pub/sub channel so every other process drops the key
    from its L1 (after ``await cache.start()``, or ``cache.sync.start()`` for a listener
    thread). Values cross L2 as bytes through ``serializer`` (strict JSON by default;
    pickle only with :class:`SignedPickleSerializer`).

    When L2 fails, ``fail_open=True`` (default) serves from L1 and the loader and logs once
    per outage; ``fail_open=False`` raises :class:`ServiceUnavailable` (a 503, never a
    500). L1 keeps an entry no longer than its L2 TTL, capped by ``l1_ttl``. L1 values are
    shared objects: treat them as immutable.
    """

    def __init__(
        self,
        l1: BaseCache[str, Any],
        l2: Backend | str = "memory://",
        *,
        ttl: float | None = 300.0,
        namespace: str = "",
        serializer: Serializer | str = "json",
        invalidate: bool = True,
        fail_open: bool = True,
        negative_ttl: float | None = None,
        l1_ttl: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(l1, BaseCache):
            raise ConfigurationError("l1 must be an LRUCache, LFUCache, FIFOCache or TTLCache")
        self.l1 = l1
        self._owns_l2 = isinstance(l2, str)
        self.l2: Backend = backend_from_url(l2) if isinstance(l2, str) else l2
        self.ttl = None if ttl is None else _check_ttl(ttl)
        if negative_ttl is not None and negative_ttl != 0:
            _check_ttl(negative_ttl, "negative_ttl")
        self.negative_ttl = negative_ttl
        self.l1_ttl = None if l1_ttl is None else _check_ttl(l1_ttl, "l1_ttl")
        self._timer = timer
        # A TTLCache expires L1 entries itself; other L1s hold (value, deadline) pairs.
        self._timed = not isinstance(l1, TTLCache)
        self.namespace = namespace
        self.serializer = resolve_serializer(serializer)
        self.invalidate = invalidate
        self.fail_open = fail_open
        self.channel = _CHANNEL + namespace
        self._origin = uuid.uuid4().hex
        self._flights = AsyncFlights()
        self._sync_flights = SyncFlights()
        self._counts = {"l1": 0, "l2": 0, "miss": 0, "load": 0, "err": 0, "inv": 0}
        self._down = False
        self._listener: asyncio.Task[None] | None = None
        self._sync_view = SyncTieredCache(self)

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> TieredCache:
        """Build from ``{prefix}TIERED_L1_MAXSIZE`` (1024), ``…_L1_TTL`` (none: LRU L1),
        ``…_TTL`` (300), ``…_NAMESPACE``, ``…_FAIL_OPEN`` (true), ``…_NEGATIVE_TTL`` and
        the backend from :func:`gennet_toolkit.backends.from_env`; ``overrides`` win."""
        from gennet_toolkit.backends import from_env as backend_from_env

        p = prefix + "TIERED_"
        if "l1" not in overrides:
            maxsize = env_int(p + "L1_MAXSIZE", 1024)
            l1_ttl = env_float(p + "L1_TTL")
            overrides["l1"] = LRUCache(maxsize) if l1_ttl is None else TTLCache(maxsize, l1_ttl)
        if "l2" not in overrides:
            overrides["l2"] = backend_from_env(prefix)
        overrides.setdefault("ttl", env_float(p + "TTL", 300.0))
        overrides.setdefault("namespace", env_str(p + "NAMESPACE", ""))
        overrides.setdefault("fail_open", env_bool(p + "FAIL_OPEN", True))
        overrides.setdefault("negative_ttl", env_float(p + "NEGATIVE_TTL"))
        return cls(**overrides)

    @property
    def sync(self) -> SyncTieredCache:
        """The same cache with blocking methods (uses the backend's sync client)."""
        return self._sync_view

    # -- shared helpers -------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        # Unlocked, like the caches' hit counters: exact per thread, may undercount a
        # little under heavy thread contention, never slows the hit path.
        self._counts[name] += n

    def _key(self, key: str) -> str:
        if not isinstance(key, str):
            raise TypeError("TieredCache keys are strings")
        return self.namespace + key

    def _l1_get(self, key: str) -> Any:
        entry = self.l1.get(key, _MISSING)
        if entry is _MISSING or not self._timed:
            return entry
        if entry[1] <= self._timer():
            if self.l1.peek(key) is entry:  # not a newer value written meanwhile
                self.l1.pop(key, None)
            return _MISSING
        return entry[0]

    def _l1_put(self, key: str, value: Any, ttl: float | None) -> None:
        # L1 keeps an entry no longer than its L2 TTL (the full TTL for values read from
        # L2, whose remaining TTL is unknown), capped by l1_ttl.
        life = self.ttl if ttl is None else ttl
        if self.l1_ttl is not None:
            life = self.l1_ttl if life is None else min(life, self.l1_ttl)
        # A value heavier than the whole L1 (weighted caches) raises ValueError: it then
        # lives in L2 only.
        with contextlib.suppress(ValueError):
            if isinstance(self.l1, TTLCache):
                self.l1.set(key, value, ttl=self.l1.ttl if life is None else min(life, self.l1.ttl))
            else:
                deadline = math.inf if life is None else self._timer() + life
                self.l1[key] = (value, deadline)

    def _ttl_for(self, value: Any, ttl: float | None) -> float | None:
        if value is None and self.negative_ttl:
            return self.negative_ttl
        return self.ttl if ttl is None else _check_ttl(ttl)

    def _decode(self, raw: bytes) -> Any:
        try:
            return self.serializer.loads(raw)
        except ValueError:
            logger.warning("advanced_cache: undecodable value in L2 treated as a miss")
            return _MISSING

    def _failed(self, exc: Exception, op: str) -> None:
        self._count("err")
        if not self._down:
            self._down = True
            logger.warning(
                "advanced_cache: L2 %s failed (%s); %s until it recovers",
                op,
                type(exc).__name__,
                "serving from L1" if self.fail_open else "raising 503",
            )
        if not self.fail_open:
            raise ServiceUnavailable("The cache store is unavailable.", retry_after=1) from exc

    def _ok(self) -> None:
        if self._down:
            self._down = False
            logger.warning("advanced_cache: L2 is reachable again")

    def _message(self, keys: list[str] | None) -> bytes:
        return json.dumps({"o": self._origin, "k": keys}).encode()

    def _on_message(self, data: bytes) -> None:
        try:
            msg = json.loads(data)
            origin, keys = msg["o"], msg["k"]
        except (ValueError, TypeError, KeyError):
            return
        if origin == self._origin:
            return
        self._count("inv")
        if keys is None:
            self.l1.clear()
            return
        for key in keys:
            if isinstance(key, str):
                self.l1.pop(key, None)

    # -- async API ------------------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key`` from L1, else from L2 (then kept in L1), else ``default``."""
        value = await self._lookup(key)
        return default if value is _MISSING else value

    async def _lookup(self, key: str) -> Any:
        value = self._l1_get(key)
        if value is not _MISSING:
            self._count("l1")
            return value
        l2_key = self._key(key)
        try:
            raw = await self.l2.get(l2_key)
        except Exception as exc:
            self._failed(exc, "get")
            self._count("miss")
            return _MISSING
        self._ok()
        value = _MISSING if raw is None else self._decode(raw)
        if value is _MISSING:
            self._count("miss")
            return _MISSING
        self._count("l2")
        self._l1_put(key, value, None)
        return value

    async def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` in L2 (for ``ttl`` seconds, default the cache's) and L1."""
        l2_key = self._key(key)
        item_ttl = self._ttl_for(value, ttl)
        data = self.serializer.dumps(value)
        try:
            await self.l2.set(l2_key, data, ttl=item_ttl)
        except Exception as exc:
            self.l1.pop(key, None)
            self._failed(exc, "set")
        else:
            self._ok()
        self._l1_put(key, value, item_ttl)
        await self._publish([key])

    async def delete(self, key: str) -> None:
        """Remove ``key`` from L1, from L2 and from every subscribed process's L1."""
        l2_key = self._key(key)
        self.l1.pop(key, None)
        try:
            await self.l2.delete(l2_key)
        except Exception as exc:
            self._failed(exc, "delete")
        else:
            self._ok()
        await self._publish([key])

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]] | Callable[[], T],
        *,
        ttl: float | None = None,
    ) -> T:
        """The cached value, or ``loader()``'s result stored in L2 and L1 (read-through).

        Concurrent callers for one key share a single loader call in this process.
        ``loader`` may be sync or async. A ``None`` result is cached for ``negative_ttl``
        seconds when set (``0``: not cached), else like any value.
        """
        self._key(key)  # a bad key fails here, not inside the single-flight
        value = self._l1_get(key)
        if value is not _MISSING:
            self._count("l1")
            return cast(T, value)

        async def fill() -> Any:
            found = await self._lookup(key)
            if found is not _MISSING:
                return found
            self._count("load")
            result = loader()
            if inspect.isawaitable(result):
                result = await result
            if not (result is None and self.negative_ttl == 0):
                await self.set(key, result, ttl=ttl)
            return result

        return cast(T, await self._flights.run(key, fill))

    async def clear_local(self, *, everywhere: bool = False) -> None:
        """Empty this process's L1; with ``everywhere=True`` every subscriber's L1 too."""
        self.l1.clear()
        if everywhere:
            await self._publish(None)

    async def _publish(self, keys: list[str] | None) -> None:
        if not self.invalidate:
            return
        try:
            await self.l2.publish(self.channel, self._message(keys))
        except Exception as exc:  # the write itself already succeeded or was reported
            self._count("err")
            logger.debug("advanced_cache: invalidation publish failed (%s)", type(exc).__name__)

    async def start(self) -> None:
        """Listen for other processes' invalidations (idempotent).

        Subscribes before returning when L2 answers; otherwise the listener keeps retrying
        with backoff. After a lost subscription L1 is cleared on resubscribing, since
        invalidations may have been missed meanwhile.
        """
        if self._listener is not None or not self.invalidate:
            return
        sub: Subscription | None
        try:
            sub = await self.l2.subscribe(self.channel)
        except Exception as exc:
            logger.warning("advanced_cache: cannot subscribe yet (%s)", type(exc).__name__)
            sub = None
        self._listener = asyncio.create_task(self._listen(sub), name="advanced_cache-listener")

    async def _listen(self, sub: Subscription | None) -> None:
        delay = 0.05
        lost = sub is None
        try:
            while True:
                if sub is None:
                    try:
                        sub = await self.l2.subscribe(self.channel)
                    except Exception:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, _RETRY_MAX)
                        continue
                    delay = 0.05
                    if lost:
                        self.l1.clear()
                        logger.warning("advanced_cache: invalidation channel back; L1 cleared")
                try:
                    msg = await sub.get(timeout=1.0)
                except Exception:
                    await sub.aclose()
                    sub, lost = None, True
                    continue
                if msg is not None:
                    self._on_message(msg.data)
        finally:
            if sub is not None:
                await sub.aclose()

    async def aclose(self) -> None:
        """Stop the listener and close L2 if this cache opened it from a URL."""
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self._sync_view.stop()
        if self._owns_l2:
            await self.l2.aclose()

    async def __aenter__(self) -> TieredCache:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def stats(self) -> TieredStats:
        """L1 hits, L2 hits, misses, loads, coalesced loads, L2 errors, invalidations."""
        c = dict(self._counts)
        return TieredStats(
            l1_hits=c["l1"],
            l2_hits=c["l2"],
            misses=c["miss"],
            loads=c["load"],
            coalesced=self._flights.coalesced + self._sync_flights.coalesced,
            l2_errors=c["err"],
            invalidations=c["inv"],
            l1=self.l1.stats(),
        )


class SyncTieredCache:
    """The blocking twin of :class:`TieredCache` (``tiered.sync``): same L1, same L2."""

    def __init__(self, parent: TieredCache) -> None:
        self._p = parent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, key: str, default: Any = None) -> Any:
        """See :meth:`TieredCache.get`."""
        value = self._lookup(key)
        return default if value is _MISSING else value

    def _lookup(self, key: str) -> Any:
        p = self._p
        value = p._l1_get(key)
        if value is not _MISSING:
            p._count("l1")
            return value
        l2_key = p._key(key)
        try:
            raw = p.l2.sync.get(l2_key)
        except Exception as exc:
            p._failed(exc, "get")
            p._count("miss")
            return _MISSING
        p._ok()
        value = _MISSING if raw is None else p._decode(raw)
        if value is _MISSING:
            p._count("miss")
            return _MISSING
        p._count("l2")
        p._l1_put(key, value, None)
        return value

    def set(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        """See :meth:`TieredCache.set`."""
        p = self._p
        l2_key = p._key(key)
        item_ttl = p._ttl_for(value, ttl)
        data = p.serializer.dumps(value)
        try:
            p.l2.sync.set(l2_key, data, ttl=item_ttl)
        except Exception as exc:
            p.l1.pop(key, None)
            p._failed(exc, "set")
        else:
            p._ok()
        p._l1_put(key, value, item_ttl)
        self._publish([key])

    def delete(self, key: str) -> None:
        """See :meth:`TieredCache.delete`."""
        p = self._p
        l2_key = p._key(key)
        p.l1.pop(key, None)
        try:
            p.l2.sync.delete(l2_key)
        except Exception as exc:
            p._failed(exc, "delete")
        else:
            p._ok()
        self._publish([key])

    def get_or_load(self, key: str, loader: Callable[[], T], *, ttl: float | None = None) -> T:
        """See :meth:`TieredCache.get_or_load`; threads share one loader call per key."""
        p = self._p
        value = p._l1_get(key)
        if value is not _MISSING:
            p._count("l1")
            return cast(T, value)

        def fill() -> Any:
            found = self._lookup(key)
            if found is not _MISSING:
                return found
            p._count("load")
            result = loader()
            if not (result is None and p.negative_ttl == 0):
                self.set(key, result, ttl=ttl)
            return result

        return cast(T, p._sync_flights.run(key, fill))

    def _publish(self, keys: list[str] | None) -> None:
        p = self._p
        if not p.invalidate:
            return
        try:
            p.l2.sync.publish(p.channel, p._message(keys))
        except Exception as exc:
            p._count("err")
            logger.debug("advanced_cache: invalidation publish failed (%s)", type(exc).__name__)

    def start(self) -> None:
        """Listen for invalidations on a daemon thread (idempotent); ``stop()`` ends it."""
        if self._thread is not None or not self._p.invalidate:
            return
        self._stop.clear()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._listen, args=(ready,), name="advanced_cache-listener", daemon=True
        )
        self._thread.start()
        ready.wait(timeout=5.0)

    def _listen(self, ready: threading.Event) -> None:
        p = self._p
        sub: SyncSubscription | None = None
        delay, lost = 0.05, False
        try:
            while not self._stop.is_set():
                if sub is None:
                    try:
                        sub = p.l2.sync.subscribe(p.channel)
                    except Exception:
                        ready.set()
                        lost = True
                        self._stop.wait(delay)
                        delay = min(delay * 2, _RETRY_MAX)
                        continue
                    ready.set()
                    delay = 0.05
                    if lost:
                        p.l1.clear()
                try:
                    msg = sub.get(timeout=0.2)
                except Exception:
                    sub.close()
                    sub, lost = None, True
                    continue
                if msg is not None:
                    p._on_message(msg.data)
        finally:
            if sub is not None:
                sub.close()

    def stop(self) -> None:
        """Stop the listener thread, if running, and wait for it."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=5.0)
