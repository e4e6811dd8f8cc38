"""The :class:`Cache`: configuration, the async core and the public async API."""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from gennet_toolkit._env import env_bool, env_float, env_str
from gennet_toolkit._singleflight import AsyncFlights, SyncFlights
from gennet_toolkit.backends import Backend, MemoryBackend, from_url
from gennet_toolkit.cache._common import (
    _UNSET,
    MISS,
    TTL,
    _Call,
    _Counters,
    _exact,
    _Miss,
    _pattern_prefix,
    _Policy,
    _ttl,
)
from gennet_toolkit.cache._decorator import _Decorator
from gennet_toolkit.cache._plan import (
    Plan,
    _Acquire,
    _Get,
    _GetMany,
    _Lock,
    _Lookup,
    _Put,
    _Release,
    _Sleep,
)
from gennet_toolkit.cache._serializers import Serializer, resolve_serializer
from gennet_toolkit.cache._sync import SyncCache, _SyncCore
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable

__all__ = ["Cache"]

T = TypeVar("T")


class Cache(_SyncCore):
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
        self._aflights = AsyncFlights()
        self._tflights = SyncFlights()
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
            value, refresh, missing = self._read(raw, fetched)
            if missing:
                more = await backend.get_many([self._tp + t for t in missing])
                fetched.update(zip(missing, more, strict=True))
                value, refresh, _ = self._read(raw, fetched)
            return value, refresh
        except ServiceUnavailable as exc:
            self._failed(exc)
            return MISS, False

    async def _arun(self, plan: Plan[T]) -> T:
        """Execute a plan with ``await``, feeding results and errors back into it."""
        backend = self._backend
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = plan.throw(error) if error is not None else plan.send(send)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            send = error = None
            try:
                if isinstance(op, _Lookup):
                    send = await self._alookup(op.ekey, op.tags)
                elif isinstance(op, _Get):
                    send = await backend.get(op.key)
                elif isinstance(op, _GetMany):
                    send = await backend.get_many(op.keys)
                elif isinstance(op, _Put):
                    send = await backend.set(op.key, op.value, ttl=op.ttl, nx=op.nx)
                elif isinstance(op, _Lock):
                    send = backend.lock(op.name, ttl=op.ttl)
                elif isinstance(op, _Acquire):
                    send = await op.lock.acquire(wait=0)
                elif isinstance(op, _Release):
                    await op.lock.release()
                elif isinstance(op, _Sleep):
                    await asyncio.sleep(op.seconds)
                else:
                    send = op.call[0](*op.call[1], **op.call[2])
                    if inspect.isawaitable(send):
                        send = await send
            except BaseException as exc:  # the plan decides (its finally releases the lock)
                error = exc

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
            return await self._aflights.run(ekey, self._aresolve, ekey, tags, call, policy)
        value, refresh = await self._alookup(ekey, tags)
        n = self._n
        if type(value) is not _Miss:
            if not refresh or self._aflights.running(ekey):
                # (a refresh already running: serve the current value meanwhile)
                n.hits += 1
                return value
            n.refreshes += 1
            stale = value
        else:
            n.misses += 1
            stale = MISS
        return await self._aflights.run(ekey, self._aload, ekey, tags, call, policy, stale)

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
            self._aflights.release(ekey, value)
            return await self._aload(ekey, tags, call, policy, value)
        n.misses += 1
        return await self._aload(ekey, tags, call, policy, MISS)

    async def _aload(
        self, ekey: str, tags: tuple[str, ...], call: _Call, policy: _Policy, stale: Any
    ) -> Any:
        return await self._arun(self._load_plan(ekey, tags, call, policy, stale))

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
        return await self._arun(self._set_plan(ekey, value, policy, tuple(tags)))

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
