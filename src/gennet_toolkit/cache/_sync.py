"""The blocking core (threads, single-flight by event) and ``cache.sync``."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gennet_toolkit.cache._base import _CacheBase
from gennet_toolkit.cache._common import (
    _UNSET,
    MISS,
    TTL,
    _backoff,
    _Call,
    _exact,
    _Miss,
    _pattern_prefix,
    _Policy,
    logger,
)
from gennet_toolkit.exceptions import ServiceUnavailable

if TYPE_CHECKING:
    from gennet_toolkit.cache._core import Cache

__all__ = ["SyncCache"]


class _SyncCore(_CacheBase):
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
            if not refresh or self._tflights.running(ekey):
                n.hits += 1
                return value
            n.refreshes += 1
            stale = value
        else:
            n.misses += 1
            stale = MISS
        return self._tflights.run(ekey, self._load, ekey, tags, call, policy, stale)

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
