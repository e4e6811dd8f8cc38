"""The :class:`Cache`: entries, tags, single-flight loading and the failure policy."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import inspect
import logging
import math
import random
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar, overload
from urllib.parse import quote, unquote

from gennet_toolkit._env import env_bool, env_float, env_str
from gennet_toolkit.backends import Backend, MemoryBackend, from_url
from gennet_toolkit.cache._keys import KeyBuilder, shorten
from gennet_toolkit.cache._serializers import Serializer, resolve_serializer
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable

__all__ = [
    "MISS",
    "AsyncCachedFunction",
    "Cache",
    "CacheStats",
    "SyncCache",
    "SyncCachedFunction",
]

logger = logging.getLogger("gennet_toolkit.cache")

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class _Miss:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"

    def __bool__(self) -> bool:
        return False


#: Returned by ``get(key, default=MISS)`` for a missing entry; ``None`` is a value.
MISS: Any = _Miss()


class _Unset:
    __slots__ = ()


_UNSET: Any = _Unset()

TTL = float | int | str | dt.timedelta | None

_TTL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _ttl(spec: TTL, what: str = "ttl") -> float | None:
    """Seconds from ``60``, ``"10m"``, ``"1h"``, ``timedelta``; ``None`` means no expiry."""
    if spec is None:
        return None
    if isinstance(spec, dt.timedelta):
        seconds = spec.total_seconds()
    elif isinstance(spec, str):
        m = _TTL_RE.match(spec)
        if m is None:
            raise ConfigurationError(f"{what} {spec!r} is not a duration like 30, '30s', '10m'")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    elif isinstance(spec, bool) or not isinstance(spec, int | float):
        raise ConfigurationError(f"{what} must be seconds, a duration string or a timedelta")
    else:
        seconds = float(spec)
    if not 0 < seconds < math.inf:
        raise ConfigurationError(f"{what} must be positive and finite, got {spec!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the cache was made (or :meth:`Cache.reset_stats`).

    ``hits``/``misses`` count lookups; ``coalesced`` callers that waited for another's
    load instead of calling the function; ``refreshes`` early recomputations before
    expiry; ``loads`` function calls whose result was offered to the cache; ``errors``
    backend failures and unreadable entries. Counts are approximate under threads.
    """

    hits: int
    misses: int
    coalesced: int
    refreshes: int
    loads: int
    errors: int

    @property
    def hit_ratio(self) -> float:
        """``hits / (hits + misses)``; 0.0 before the first lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class _Counters:
    __slots__ = ("coalesced", "errors", "hits", "loads", "misses", "refreshes")

    def __init__(self) -> None:
        self.hits = self.misses = self.coalesced = self.refreshes = self.loads = self.errors = 0


class _SyncFlight:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


def _backoff(attempt: int) -> float:
    # Growing, jittered polls: waiters in several processes do not hit Redis in lockstep.
    return min(0.05, 0.002 * 2.0**attempt) * (0.5 + random.random() / 2)


class AsyncCachedFunction(Protocol[P, R_co]):
    """What ``@cache.cached`` makes of an ``async def``: same call, plus key helpers."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]:
        """Return the cached result, calling the function on a miss."""

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key this call's result is stored under (without namespace)."""

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, int]:
        """Drop this call's entry; 1 if there was one."""


class SyncCachedFunction(Protocol[P, R_co]):
    """What ``@cache.cached`` makes of a plain ``def``: same call, plus key helpers."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Return the cached result, calling the function on a miss."""

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key this call's result is stored under (without namespace)."""

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Drop this call's entry; 1 if there was one."""


#: A deferred call: the function and its arguments (no functools.partial per hit).
_Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Policy:
    ttl: float | None
    jitter: float
    condition: Callable[[Any], bool] | None
    early: float


class Cache:
    """An application cache over a backend URL (``memory://`` or ``redis://``).

    ``@cache.cached(...)`` caches sync and async functions; ``get``/``set``/``delete``,
    ``invalidate(pattern)`` and ``invalidate_tags(*tags)`` are async, and ``cache.sync``
    offers the same operations blocking. Values go through ``serializer`` (JSON unless
    told otherwise); ``None`` is a value like any other. See docs/cache.md.
    """

    def __init__(
        self,
        backend: str | Backend = "memory://",
        *,
        namespace: str = "",
        version: str | int = 1,
        serializer: str | Serializer = "json",
        secret: str | bytes | None = None,
        default_ttl: TTL = 60,
        fail_open: bool = True,
        lock: bool | None = None,
        lock_ttl: TTL = 30,
        lock_wait: float = 5.0,
        early_refresh: float = 1.0,
        tag_ttl: TTL = "30d",
        max_key_length: int = 200,
        retry_interval: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(backend, str):
            is_memory = backend.lower().startswith("memory:")
            self._backend = from_url(backend, clock=clock if is_memory else None)
            self._owns_backend = True
        elif isinstance(backend, Backend):
            self._backend = backend
            self._owns_backend = False
        else:
            raise ConfigurationError("backend must be a URL or a Backend")
        if ":" in namespace or "*" in namespace:
            raise ConfigurationError("namespace may not contain ':' or '*'")
        if lock_wait < 0 or not 0 <= early_refresh < math.inf or retry_interval < 0:
            raise ConfigurationError("lock_wait, early_refresh, retry_interval must be >= 0")
        if max_key_length < 64:
            raise ConfigurationError("max_key_length must be at least 64")
        self.namespace = namespace
        self.fail_open = fail_open
        self._serializer = resolve_serializer(serializer, secret)
        self._default_ttl = _ttl(default_ttl, "default_ttl")
        lt = _ttl(lock_ttl, "lock_ttl")
        self._lock_ttl = 30.0 if lt is None else lt
        self._lock_wait = float(lock_wait)
        self._early = float(early_refresh)
        self._tag_ttl = _ttl(tag_ttl, "tag_ttl")
        self._max_key = max_key_length
        self._retry_interval = float(retry_interval)
        self._clock = clock or time.time
        # In-process single-flight covers one memory backend; Redis needs the shared lock.
        in_memory = isinstance(self._backend, MemoryBackend)
        self._use_lock = not in_memory if lock is None else lock
        self._coalesce_reads = not in_memory
        base = f"{namespace}:" if namespace else ""
        self._prefix = f"{base}v{version}:"
        self._kp = self._prefix + "k:"
        self._tp = self._prefix + "t:"
        self._lp = self._prefix + "l:"
        self._n = _Counters()
        self._aflights: dict[str, asyncio.Future[Any]] = {}
        self._tflights: dict[str, _SyncFlight] = {}
        self._tguard = threading.Lock()
        self._down = False
        self._down_until = 0.0
        self.sync = SyncCache(self)

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> Cache:
        """Configure from ``{prefix}CACHE_*``: ``URL`` (else ``{prefix}BACKEND_URL``, else
        ``memory://``), ``NAMESPACE``, ``VERSION``, ``SERIALIZER``, ``SECRET``,
        ``DEFAULT_TTL``, ``FAIL_OPEN``, ``LOCK_WAIT``, ``LOCK_TTL``, ``EARLY_REFRESH``.
        Keywords override the environment."""
        p = prefix + "CACHE_"
        opts: dict[str, Any] = {
            "backend": env_str(p + "URL") or env_str(prefix + "BACKEND_URL", "memory://"),
            "namespace": env_str(p + "NAMESPACE", ""),
            "version": env_str(p + "VERSION", "1"),
            "serializer": env_str(p + "SERIALIZER", "json"),
            "secret": env_str(p + "SECRET"),
            "default_ttl": env_str(p + "DEFAULT_TTL", "60"),
            "fail_open": env_bool(p + "FAIL_OPEN", True),
            "lock_wait": env_float(p + "LOCK_WAIT", 5.0),
            "lock_ttl": env_str(p + "LOCK_TTL", "30"),
            "early_refresh": env_float(p + "EARLY_REFRESH", 1.0),
        }
        opts.update(overrides)
        return cls(**opts)

    @property
    def backend(self) -> Backend:
        """The backend entries live in."""
        return self._backend

    # ------------------------------------------------------------------ stats

    def stats(self) -> CacheStats:
        """A snapshot of the hit/miss/error counters."""
        n = self._n
        return CacheStats(n.hits, n.misses, n.coalesced, n.refreshes, n.loads, n.errors)

    def reset_stats(self) -> None:
        """Zero the counters."""
        self._n = _Counters()

    # ------------------------------------------------------------------ failure policy

    def _bypass(self) -> bool:
        # After a failure the backend is skipped for retry_interval: an unreachable host
        # would otherwise cost a connect timeout on every call.
        if self._down and time.monotonic() < self._down_until:
            if not self.fail_open:
                raise ServiceUnavailable("The cache is unavailable; retry later.")
            return True
        return False

    def _failed(self, exc: ServiceUnavailable) -> None:
        self._n.errors += 1
        self._down_until = time.monotonic() + self._retry_interval
        if not self._down:
            self._down = True
            logger.warning(
                "cache backend unavailable (%s); %s until it answers again",
                type(exc.__cause__ or exc).__name__,
                "calling functions uncached" if self.fail_open else "answering 503",
            )
        if not self.fail_open:
            raise ServiceUnavailable("The cache is unavailable; retry later.") from exc

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            logger.warning("cache backend answers again; caching resumed")

    # ------------------------------------------------------------------ records

    def _ekey(self, key: str) -> str:
        return self._kp + key

    def _encode(
        self, value: Any, policy: _Policy, delta: float, tokens: dict[str, bytes]
    ) -> tuple[bytes, float | None]:
        payload = self._serializer.dumps(value)
        ttl = policy.ttl
        if ttl is not None and policy.jitter:
            ttl *= 1.0 - random.random() * policy.jitter
        exp = b"" if ttl is None else repr(self._clock() + ttl).encode()
        early = b"" if not policy.early else repr(policy.early).encode()
        tags = b",".join(quote(t, safe=":").encode() + b"=" + tok for t, tok in tokens.items())
        d = repr(round(delta, 6)).encode()
        return b"g1|" + exp + b"|" + d + b"|" + early + b"|" + tags + b"|" + payload, ttl

    def _decode(self, raw: bytes, fetched: dict[str, bytes | None]) -> tuple[Any, bool, list[str]]:
        """``(value, refresh_now, record_tags_not_fetched)``; value MISS if stale."""
        head, exp, d, early, tags, payload = raw.split(b"|", 5)
        if head != b"g1":
            raise ValueError("not a cache record")
        if tags:
            missing = []
            for item in tags.split(b","):
                name_b, _, tok = item.partition(b"=")
                name = unquote(name_b.decode())
                if name not in fetched:
                    missing.append(name)
                elif fetched[name] != tok:
                    return MISS, False, []
            if missing:
                return MISS, False, missing
        value = self._serializer.loads(payload)
        refresh = False
        if exp and early:
            # XFetch (Vattani et al.): recompute before expiry with a probability that
            # grows as expiry nears and with how long the value took to compute.
            beta_delta = float(early) * float(d)
            if beta_delta > 0:
                gap = -beta_delta * math.log(1.0 - random.random())
                refresh = self._clock() + gap >= float(exp)
        return value, refresh, []

    def _bad_record(self, exc: Exception) -> None:
        self._n.errors += 1
        logger.warning("unreadable cache entry treated as a miss (%s)", type(exc).__name__)

    # ------------------------------------------------------------------ async core

    async def _alookup(self, ekey: str, tags: tuple[str, ...]) -> tuple[Any, bool]:
        """``(value or MISS, refresh_now)``; a backend failure counts as a miss."""
        if self._bypass():
            return MISS, False
        backend = self._backend
        try:
            if tags:
                raws = await backend.get_many([ekey, *[self._tp + t for t in tags]])
                raw = raws[0]
                fetched = dict(zip(tags, raws[1:], strict=True))
            else:
                raw = await backend.get(ekey)
                fetched = {}
            if self._down:
                self._recovered()
            if raw is None:
                return MISS, False
            try:
                value, refresh, missing = self._decode(raw, fetched)
                if missing:
                    more = await backend.get_many([self._tp + t for t in missing])
                    fetched.update(zip(missing, more, strict=True))
                    value, refresh, _ = self._decode(raw, fetched)
            except ValueError as exc:
                self._bad_record(exc)
                return MISS, False
            return value, refresh
        except ServiceUnavailable as exc:
            self._failed(exc)
            return MISS, False

    async def _atokens(self, tags: tuple[str, ...]) -> dict[str, bytes] | None:
        # Read before the load: an invalidation during the load then makes the entry
        # stale at once (its recorded token no longer matches).
        if not tags:
            return {}
        keys = [self._tp + t for t in tags]
        current = await self._backend.get_many(keys)
        out: dict[str, bytes] = {}
        for tag, key, found in zip(tags, keys, current, strict=True):
            tok = found
            if tok is None:
                new = secrets.token_hex(8).encode()
                if await self._backend.set(key, new, ttl=self._tag_ttl, nx=True):
                    tok = new
                else:
                    tok = await self._backend.get(key)
                    if tok is None:
                        return None
            out[tag] = tok
        return out

    async def _awrite(
        self, ekey: str, value: Any, policy: _Policy, delta: float, tokens: dict[str, bytes] | None
    ) -> bool:
        record, ttl = self._encode(value, policy, delta, tokens or {})
        if tokens is None or self._bypass():
            return False
        try:
            return await self._backend.set(ekey, record, ttl=ttl)
        except ServiceUnavailable as exc:
            self._failed(exc)
            return False

    async def _aget_or_load(
        self,
        key: str,
        tags: tuple[str, ...],
        call: _Call,
        policy: _Policy,
    ) -> Any:
        ekey = self._kp + key
        if self._coalesce_reads:
            # Over the network, concurrent callers of one key share the read too: 50
            # callers cost one GET, not 50 (the in-memory read never yields, so there
            # it would only add cost).
            return await self._aflight(ekey, self._aresolve, ekey, tags, call, policy)
        value, refresh = await self._alookup(ekey, tags)
        n = self._n
        if type(value) is not _Miss:
            if not refresh or ekey in self._aflights:
                # (a refresh already running: serve the current value meanwhile)
                n.hits += 1
                return value
            n.refreshes += 1
            stale = value
        else:
            n.misses += 1
            stale = MISS
        return await self._aflight(ekey, self._aload, ekey, tags, call, policy, stale)

    async def _aresolve(
        self, ekey: str, tags: tuple[str, ...], call: _Call, policy: _Policy
    ) -> Any:
        value, refresh = await self._alookup(ekey, tags)
        n = self._n
        if type(value) is not _Miss:
            if not refresh:
                n.hits += 1
                return value
            n.refreshes += 1
            # Release the callers waiting on this read with the current value; this
            # caller refreshes (the shared lock keeps other refreshers away).
            flight = self._aflights.pop(ekey, None)
            if flight is not None and not flight.done():
                flight.set_result(value)
            return await self._aload(ekey, tags, call, policy, value)
        n.misses += 1
        return await self._aload(ekey, tags, call, policy, MISS)

    async def _aflight(self, ekey: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``fn(*args)`` once per key at a time in this loop; others await its result."""
        loop = asyncio.get_running_loop()
        while True:
            fut = self._aflights.get(ekey)
            if fut is None or fut.get_loop() is not loop:
                break
            self._n.coalesced += 1
            try:
                return await asyncio.shield(fut)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if fut.cancelled() and task is not None and not task.cancelling():
                    continue  # the loading caller was cancelled, not us: try again
                raise
        fut = loop.create_future()
        self._aflights[ekey] = fut
        try:
            result = await fn(*args)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" noise when nobody waited
            raise
        else:
            if not fut.done():
                fut.set_result(result)
            return result
        finally:
            if self._aflights.get(ekey) is fut:
                del self._aflights[ekey]

    async def _aload(
        self,
        ekey: str,
        tags: tuple[str, ...],
        call: _Call,
        policy: _Policy,
        stale: Any,
    ) -> Any:
        lock = None
        tokens: dict[str, bytes] | None = None
        try:
            if not self._bypass():
                try:
                    tokens = await self._atokens(tags)
                    if self._use_lock:
                        lock = self._backend.lock(self._lp + ekey, ttl=self._lock_ttl)
                        if not await lock.acquire(wait=0):
                            if type(stale) is not _Miss:
                                lock = None
                                return stale  # another process refreshes; serve stale
                            found, lock = await self._await_other(ekey, tags, lock)
                            if type(found) is not _Miss:
                                self._n.coalesced += 1
                                return found
                            if lock is not None:
                                tokens = await self._atokens(tags)
                        if lock is not None and type(stale) is _Miss:
                            found, _ = await self._alookup(ekey, tags)
                            if type(found) is not _Miss:
                                self._n.coalesced += 1
                                return found
                except ServiceUnavailable as exc:
                    self._failed(exc)
                    tokens = None
            t0 = time.perf_counter()
            result = call[0](*call[1], **call[2])
            if inspect.isawaitable(result):
                result = await result
            delta = time.perf_counter() - t0
            self._n.loads += 1
            if policy.condition is None or policy.condition(result):
                await self._awrite(ekey, result, policy, delta, tokens)
            return result
        finally:
            if lock is not None:
                with contextlib.suppress(ServiceUnavailable):  # it expires by itself
                    await lock.release()

    async def _await_other(self, ekey: str, tags: tuple[str, ...], lock: Any) -> tuple[Any, Any]:
        """Wait (bounded) for the process holding the lock; ``(value, lock-if-taken)``."""
        deadline = time.monotonic() + self._lock_wait
        attempt = 0
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, _backoff(attempt)))
            attempt += 1
            found, _ = await self._alookup(ekey, tags)
            if type(found) is not _Miss or self._down:
                return found, None
            if await lock.acquire(wait=0):
                return MISS, lock
        logger.info("cache lock wait ran out after %.1fs; loading without it", self._lock_wait)
        return MISS, None

    # ------------------------------------------------------------------ sync core

    def _lookup(self, ekey: str, tags: tuple[str, ...]) -> tuple[Any, bool]:
        if self._bypass():
            return MISS, False
        backend = self._backend.sync
        try:
            if tags:
                raws = backend.get_many([ekey, *[self._tp + t for t in tags]])
                raw = raws[0]
                fetched = dict(zip(tags, raws[1:], strict=True))
            else:
                raw = backend.get(ekey)
                fetched = {}
            if self._down:
                self._recovered()
            if raw is None:
                return MISS, False
            try:
                value, refresh, missing = self._decode(raw, fetched)
                if missing:
                    more = backend.get_many([self._tp + t for t in missing])
                    fetched.update(zip(missing, more, strict=True))
                    value, refresh, _ = self._decode(raw, fetched)
            except ValueError as exc:
                self._bad_record(exc)
                return MISS, False
            return value, refresh
        except ServiceUnavailable as exc:
            self._failed(exc)
            return MISS, False

    def _tokens(self, tags: tuple[str, ...]) -> dict[str, bytes] | None:
        if not tags:
            return {}
        backend = self._backend.sync
        keys = [self._tp + t for t in tags]
        out: dict[str, bytes] = {}
        for tag, key, found in zip(tags, keys, backend.get_many(keys), strict=True):
            tok = found
            if tok is None:
                new = secrets.token_hex(8).encode()
                if backend.set(key, new, ttl=self._tag_ttl, nx=True):
                    tok = new
                else:
                    tok = backend.get(key)
                    if tok is None:
                        return None
            out[tag] = tok
        return out

    def _write(
        self, ekey: str, value: Any, policy: _Policy, delta: float, tokens: dict[str, bytes] | None
    ) -> bool:
        record, ttl = self._encode(value, policy, delta, tokens or {})
        if tokens is None or self._bypass():
            return False
        try:
            return self._backend.sync.set(ekey, record, ttl=ttl)
        except ServiceUnavailable as exc:
            self._failed(exc)
            return False

    def _get_or_load(
        self,
        key: str,
        tags: tuple[str, ...],
        call: _Call,
        policy: _Policy,
    ) -> Any:
        ekey = self._kp + key
        value, refresh = self._lookup(ekey, tags)
        n = self._n
        if type(value) is not _Miss:
            if not refresh or ekey in self._tflights:
                n.hits += 1
                return value
            n.refreshes += 1
            stale = value
        else:
            n.misses += 1
            stale = MISS
        with self._tguard:
            flight = self._tflights.get(ekey)
            leader = flight is None
            if flight is None:
                flight = self._tflights[ekey] = _SyncFlight()
        if not leader:
            n.coalesced += 1
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = self._load(ekey, tags, call, policy, stale)
            return flight.value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._tguard:
                del self._tflights[ekey]
            flight.done.set()

    def _load(
        self,
        ekey: str,
        tags: tuple[str, ...],
        call: _Call,
        policy: _Policy,
        stale: Any,
    ) -> Any:
        lock = None
        tokens: dict[str, bytes] | None = None
        try:
            if not self._bypass():
                try:
                    tokens = self._tokens(tags)
                    if self._use_lock:
                        lock = self._backend.sync.lock(self._lp + ekey, ttl=self._lock_ttl)
                        if not lock.acquire(wait=0):
                            if type(stale) is not _Miss:
                                lock = None
                                return stale
                            found, lock = self._wait_other(ekey, tags, lock)
                            if type(found) is not _Miss:
                                self._n.coalesced += 1
                                return found
                            if lock is not None:
                                tokens = self._tokens(tags)
                        if lock is not None and type(stale) is _Miss:
                            found, _ = self._lookup(ekey, tags)
                            if type(found) is not _Miss:
                                self._n.coalesced += 1
                                return found
                except ServiceUnavailable as exc:
                    self._failed(exc)
                    tokens = None
            t0 = time.perf_counter()
            result = call[0](*call[1], **call[2])
            delta = time.perf_counter() - t0
            self._n.loads += 1
            if policy.condition is None or policy.condition(result):
                self._write(ekey, result, policy, delta, tokens)
            return result
        finally:
            if lock is not None:
                with contextlib.suppress(ServiceUnavailable):
                    lock.release()

    def _wait_other(self, ekey: str, tags: tuple[str, ...], lock: Any) -> tuple[Any, Any]:
        deadline = time.monotonic() + self._lock_wait
        attempt = 0
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, _backoff(attempt)))
            attempt += 1
            found, _ = self._lookup(ekey, tags)
            if type(found) is not _Miss or self._down:
                return found, None
            if lock.acquire(wait=0):
                return MISS, lock
        logger.info("cache lock wait ran out after %.1fs; loading without it", self._lock_wait)
        return MISS, None

    # ------------------------------------------------------------------ public async API

    def _policy(
        self,
        ttl: TTL,
        jitter: float = 0.0,
        condition: Callable[[Any], bool] | None = None,
        early_refresh: float | None = None,
    ) -> _Policy:
        seconds = self._default_ttl if ttl is _UNSET else _ttl(ttl)
        if not 0 <= jitter < 1:
            raise ConfigurationError(f"jitter must be a fraction in [0, 1), got {jitter!r}")
        early = self._early if early_refresh is None else float(early_refresh)
        if not 0 <= early < math.inf:
            raise ConfigurationError("early_refresh must be >= 0")
        return _Policy(seconds, jitter, condition, early)

    def _check_key(self, key: str) -> str:
        if not key:
            raise ValueError("cache keys are non-empty strings")
        return shorten(key, self._max_key)

    async def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default`` when missing (pass ``MISS`` to tell
        a cached ``None`` from a miss). A backend failure reads as a miss when
        ``fail_open``, else raises ``ServiceUnavailable``."""
        value, _ = await self._alookup(self._ekey(self._check_key(key)), ())
        if type(value) is _Miss:
            self._n.misses += 1
            return default
        self._n.hits += 1
        return value

    async def set(
        self, key: str, value: Any, *, ttl: TTL = _UNSET, tags: Iterable[str] = ()
    ) -> bool:
        """Store ``value`` at ``key`` (default TTL unless ``ttl``), under ``tags``.

        False when the backend is down and ``fail_open``. An unstorable value raises
        :class:`UnsafeValueError` whatever the policy."""
        ekey = self._ekey(self._check_key(key))
        policy = self._policy(ttl)
        if self._bypass():
            self._encode(value, policy, 0.0, {})  # still refuse unsafe values
            return False
        try:
            tokens = await self._atokens(tuple(tags))
        except ServiceUnavailable as exc:
            self._failed(exc)
            tokens = None
        return await self._awrite(ekey, value, policy, 0.0, tokens)

    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]] | Callable[[], Any],
        *,
        ttl: TTL = _UNSET,
        tags: Iterable[str] = (),
    ) -> Any:
        """The value at ``key``; on a miss, ``loader()`` (sync or async) once, stored."""
        return await self._aget_or_load(
            self._check_key(key), tuple(tags), (loader, (), {}), self._policy(ttl)
        )

    async def delete(self, *keys: str) -> int:
        """Delete entries; the number that existed. Raises ``ServiceUnavailable`` when
        the backend is down, whatever ``fail_open`` says: a lost delete serves stale data."""
        if not keys:
            return 0
        return await self._backend.delete(*[self._ekey(self._check_key(k)) for k in keys])

    async def invalidate(self, pattern: str) -> int:
        """Delete entries matching ``pattern``: an exact key, or a prefix ending in ``*``
        (``"gene:*"``; SCAN-based, never ``KEYS``). Returns the number deleted."""
        return (
            await self._backend.delete_prefix(self._kp + _pattern_prefix(pattern))
            if (pattern.endswith("*"))
            else await self.delete(_exact(pattern))
        )

    async def invalidate_tags(self, *tags: str) -> None:
        """Invalidate every entry stored under any of ``tags`` in O(1) per tag.

        Each tag has a generation token that entries record; deleting the token makes
        them stale at once (they are then overwritten or expire)."""
        if tags:
            await self._backend.delete(*[self._tp + t for t in tags])

    async def clear(self) -> int:
        """Delete every entry and tag token of this namespace and version."""
        return await self._backend.delete_prefix(self._prefix)

    async def aclose(self) -> None:
        """Close the backend if this cache made it from a URL."""
        if self._owns_backend:
            await self._backend.aclose()

    # ------------------------------------------------------------------ decorator

    def cached(
        self,
        ttl: TTL = _UNSET,
        *,
        key: str | Callable[..., str] | None = None,
        tags: Iterable[str | Callable[..., str]] = (),
        condition: Callable[[Any], bool] | None = None,
        jitter: float = 0.0,
        early_refresh: float | None = None,
        ignore: Iterable[str] = (),
    ) -> _Decorator:
        """Cache a sync or async function's results; see docs/cache.md.

        ``key``: a template over argument names (``"gene:{symbol}"``) or a callable
        taking the function's arguments; default: qualified name + digest of the bound
        arguments. ``tags``: templates or callables, for :meth:`invalidate_tags`.
        ``condition(result)``: store only when true. ``jitter``: shorten each TTL by up
        to this fraction. ``early_refresh``: XFetch beta (0 disables). ``ignore``:
        parameters left out of the default key (default: a leading ``self``/``cls``).
        """
        return _Decorator(
            self,
            self._policy(ttl, jitter, condition, early_refresh),
            key,
            tuple(tags),
            tuple(ignore),
        )


def _exact(pattern: str) -> str:
    if any(c in pattern for c in "*?["):
        raise ValueError("invalidate() takes an exact key or a prefix ending in '*'")
    return pattern


def _pattern_prefix(pattern: str) -> str:
    return _exact(pattern[:-1])


class _Decorator:
    __slots__ = ("_cache", "_ignore", "_key", "_policy", "_tags")

    def __init__(
        self,
        cache: Cache,
        policy: _Policy,
        key: str | Callable[..., str] | None,
        tags: tuple[str | Callable[..., str], ...],
        ignore: tuple[str, ...],
    ) -> None:
        self._cache = cache
        self._policy = policy
        self._key = key
        self._tags = tags
        self._ignore = ignore

    # The overlap is intended: a coroutine function matches the first overload.
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncCachedFunction[P, R]: ...
    @overload
    def __call__(self, func: Callable[P, R]) -> SyncCachedFunction[P, R]: ...
    def __call__(self, func: Callable[P, Any]) -> Any:
        """Wrap ``func``; the wrapper keeps its signature and docstring."""
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise ConfigurationError("cannot cache a generator function: cache a list instead")
        cache, policy = self._cache, self._policy
        kb = KeyBuilder(func, self._key, self._tags, self._ignore, cache._max_key)
        build_key, build_tags = kb.key, kb.tags

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await cache._aget_or_load(
                    build_key(args, kwargs), build_tags(args, kwargs), (func, args, kwargs), policy
                )

            async def ainvalidate(*args: P.args, **kwargs: P.kwargs) -> int:
                return await cache.delete(build_key(args, kwargs))

            wrapper: Any = awrapper
            wrapper.invalidate = ainvalidate
        else:

            @functools.wraps(func)
            def swrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return cache._get_or_load(
                    build_key(args, kwargs), build_tags(args, kwargs), (func, args, kwargs), policy
                )

            def sinvalidate(*args: P.args, **kwargs: P.kwargs) -> int:
                return cache.sync.delete(build_key(args, kwargs))

            wrapper = swrapper
            wrapper.invalidate = sinvalidate

        def cache_key(*args: P.args, **kwargs: P.kwargs) -> str:
            return build_key(args, kwargs)

        wrapper.cache_key = cache_key
        return wrapper


class SyncCache:
    """The blocking operations of a :class:`Cache` (``cache.sync``), for sync code.

    Uses the backend's sync form: never starts an event loop. On Redis, do not call it
    from async code (it blocks the loop for a round trip).
    """

    __slots__ = ("_c",)

    def __init__(self, cache: Cache) -> None:
        self._c = cache

    def get(self, key: str, default: Any = None) -> Any:
        """See :meth:`Cache.get`."""
        c = self._c
        value, _ = c._lookup(c._ekey(c._check_key(key)), ())
        if type(value) is _Miss:
            c._n.misses += 1
            return default
        c._n.hits += 1
        return value

    def set(self, key: str, value: Any, *, ttl: TTL = _UNSET, tags: Iterable[str] = ()) -> bool:
        """See :meth:`Cache.set`."""
        c = self._c
        ekey = c._ekey(c._check_key(key))
        policy = c._policy(ttl)
        if c._bypass():
            c._encode(value, policy, 0.0, {})
            return False
        try:
            tokens = c._tokens(tuple(tags))
        except ServiceUnavailable as exc:
            c._failed(exc)
            tokens = None
        return c._write(ekey, value, policy, 0.0, tokens)

    def get_or_set(
        self, key: str, loader: Callable[[], Any], *, ttl: TTL = _UNSET, tags: Iterable[str] = ()
    ) -> Any:
        """See :meth:`Cache.get_or_set` (``loader`` is a plain callable here)."""
        c = self._c
        return c._get_or_load(c._check_key(key), tuple(tags), (loader, (), {}), c._policy(ttl))

    def delete(self, *keys: str) -> int:
        """See :meth:`Cache.delete`."""
        if not keys:
            return 0
        c = self._c
        return c._backend.sync.delete(*[c._ekey(c._check_key(k)) for k in keys])

    def invalidate(self, pattern: str) -> int:
        """See :meth:`Cache.invalidate`."""
        c = self._c
        if pattern.endswith("*"):
            return c._backend.sync.delete_prefix(c._kp + _pattern_prefix(pattern))
        return self.delete(_exact(pattern))

    def invalidate_tags(self, *tags: str) -> None:
        """See :meth:`Cache.invalidate_tags`."""
        c = self._c
        if tags:
            c._backend.sync.delete(*[c._tp + t for t in tags])

    def clear(self) -> int:
        """See :meth:`Cache.clear`."""
        return self._c._backend.sync.delete_prefix(self._c._prefix)

    def close(self) -> None:
        """Close the backend's sync connections if the cache made the backend."""
        if self._c._owns_backend:
            self._c._backend.sync.close()
