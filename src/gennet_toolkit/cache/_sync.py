"""The blocking core (threads, single-flight by event) and ``cache.sync``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from gennet_toolkit.cache._common import (
    _UNSET,
    MISS,
    TTL,
    _Call,
    _exact,
    _Miss,
    _pattern_prefix,
    _Policy,
)
from gennet_toolkit.cache._plan import (
    Plan,
    _Acquire,
    _Get,
    _GetMany,
    _Lock,
    _Lookup,
    _Planner,
    _Put,
    _Release,
    _Sleep,
)
from gennet_toolkit.exceptions import ServiceUnavailable

if TYPE_CHECKING:
    from gennet_toolkit.cache._core import Cache

__all__ = ["SyncCache"]

T = TypeVar("T")


class _SyncCore(_Planner):
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
            value, refresh, missing = self._read(raw, fetched)
            if missing:
                more = backend.get_many([self._tp + t for t in missing])
                fetched.update(zip(missing, more, strict=True))
                value, refresh, _ = self._read(raw, fetched)
            return value, refresh
        except ServiceUnavailable as exc:
            self._failed(exc)
            return MISS, False

    def _run(self, plan: Plan[T]) -> T:
        """Execute a plan blocking, feeding results and errors back into it."""
        backend = self._backend.sync
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
                    send = self._lookup(op.ekey, op.tags)
                elif isinstance(op, _Get):
                    send = backend.get(op.key)
                elif isinstance(op, _GetMany):
                    send = backend.get_many(op.keys)
                elif isinstance(op, _Put):
                    send = backend.set(op.key, op.value, ttl=op.ttl, nx=op.nx)
                elif isinstance(op, _Lock):
                    send = backend.lock(op.name, ttl=op.ttl)
                elif isinstance(op, _Acquire):
                    send = op.lock.acquire(wait=0)
                elif isinstance(op, _Release):
                    op.lock.release()
                elif isinstance(op, _Sleep):
                    time.sleep(op.seconds)
                else:
                    send = op.call[0](*op.call[1], **op.call[2])
            except BaseException as exc:  # the plan decides (its finally releases the lock)
                error = exc

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
        self, ekey: str, tags: tuple[str, ...], call: _Call, policy: _Policy, stale: Any
    ) -> Any:
        return self._run(self._load_plan(ekey, tags, call, policy, stale))


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
        return c._run(c._set_plan(ekey, value, policy, tuple(tags)))

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
