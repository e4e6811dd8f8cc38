"""TTLCache: an LRU cache whose items also expire, with per-item TTLs in O(1)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Self, TypeVar, cast, overload

from gennet_toolkit._env import env_float
from gennet_toolkit.advanced_cache._policies import _MISSING, BaseCache
from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["TTLCache"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


def _check_ttl(ttl: object, what: str = "ttl") -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not (0 < ttl < math.inf):
        raise ConfigurationError(f"{what} must be a positive finite number of seconds")
    return float(ttl)


class TTLCache(BaseCache[K, V]):
    """An LRU cache whose items expire ``ttl`` seconds after they were stored.

    ``cache[key] = value`` uses the default ``ttl``; ``cache.set(key, value, ttl=5)``
    gives one item its own. Reads do not extend an item's life. When the cache is full,
    expired items go first, then the least recently used one.

    Expiry order is kept per distinct TTL value: items sharing a TTL expire in the order
    they were stored, so each TTL value has one queue and purging pops from the queue
    heads. Every operation is O(1) for a bounded number of distinct TTL values (purging
    visits each distinct live TTL once). ``timer`` (default ``time.monotonic``) can be
    replaced, e.g. by a fake clock in tests; it must never go backwards.
    """

    def __init__(
        self,
        maxsize: int,
        ttl: float,
        *,
        timer: Callable[[], float] = time.monotonic,
        getsizeof: Callable[[V], int] | None = None,
    ) -> None:
        super().__init__(maxsize, getsizeof=getsizeof)
        self._ttl = _check_ttl(ttl)
        self._timer = timer
        # key -> (value, deadline, ttl), least recently used first.
        self._data: OrderedDict[K, tuple[V, float, float]] = OrderedDict()
        # ttl -> keys stored with that ttl, earliest deadline first.
        self._queues: dict[float, OrderedDict[K, None]] = {}

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> Self:
        """Build from ``{prefix}CACHE_MAXSIZE`` (1024) and ``{prefix}CACHE_TTL`` (300 s)."""
        overrides.setdefault("ttl", env_float(prefix + "CACHE_TTL", 300.0))
        return super().from_env(prefix, **overrides)

    @property
    def ttl(self) -> float:
        """The default time to live, in seconds."""
        return self._ttl

    @property
    def timer(self) -> Callable[[], float]:
        """The clock deadlines are measured on."""
        return self._timer

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._timer())
            return len(self._data)

    def _count(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        entry = self._data.get(cast(K, key))
        return entry is not None and entry[1] > self._timer()

    def __getitem__(self, key: K) -> V:
        data = self._data
        entry = data.get(key)
        if entry is not None:
            if entry[1] > self._timer():
                # Lock-free hit, as in LRUCache: each OrderedDict call is atomic.
                try:  # noqa: SIM105 - contextlib.suppress costs more than the hit itself
                    data.move_to_end(key)
                except KeyError:
                    pass
                self._hits += 1
                return entry[0]
            self._expire_one(key)
        self._misses += 1
        return self.__missing__(key)

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: V) -> V: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...
    def get(self, key: K, default: Any = None) -> Any:
        """The live value at ``key`` (a use and a hit), or ``default`` (a miss)."""
        data = self._data
        entry = data.get(key)
        if entry is not None:
            if entry[1] > self._timer():
                try:  # noqa: SIM105 - contextlib.suppress costs more than the hit itself
                    data.move_to_end(key)
                except KeyError:
                    pass
                self._hits += 1
                return entry[0]
            self._expire_one(key)
        self._misses += 1
        return default

    def _expire_one(self, key: K) -> None:
        with self._lock:
            entry = self._data.get(key)  # re-read: another thread may have replaced it
            if entry is not None and entry[1] <= self._timer():
                self._drop(key, entry[2])
                self._expirations += 1

    def __setitem__(self, key: K, value: V) -> None:
        self.set(key, value)

    def set(self, key: K, value: V, *, ttl: float | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds (default: the cache's ``ttl``)."""
        item_ttl = self._ttl if ttl is None else _check_ttl(ttl)
        size = self._size(value)
        now = self._timer()
        with self._lock:
            self._purge(now)
            self._put(key, value, size, now, item_ttl)

    def expires_at(self, key: K) -> float | None:
        """When ``key`` expires, on ``timer``'s clock; ``None`` if absent or expired."""
        entry = self._data.get(key)
        if entry is None or entry[1] <= self._timer():
            return None
        return entry[1]

    def peek(self, key: K, default: Any = None) -> Any:
        """The live value at ``key`` without counting a use or a hit."""
        entry = self._data.get(key)
        if entry is None or entry[1] <= self._timer():
            return default
        return entry[0]

    def expire(self) -> list[tuple[K, V]]:
        """Remove every expired item now and return them (oldest deadline first per TTL)."""
        with self._lock:
            return self._purge(self._timer())

    # -- internals (lock held) -----------------------------------------------------------

    def _put(self, key: K, value: V, size: int, now: float, ttl: float) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self._unqueue(key, old[2])
            self._forget_size(key)
        self._make_room(size)
        self._data[key] = (value, now + ttl, ttl)
        queue = self._queues.get(ttl)
        if queue is None:
            queue = self._queues[ttl] = OrderedDict()
        queue[key] = None
        self._note_size(key, size)

    def _unqueue(self, key: K, ttl: float) -> None:
        queue = self._queues[ttl]
        del queue[key]
        if not queue:
            del self._queues[ttl]

    def _drop(self, key: K, ttl: float) -> None:
        del self._data[key]
        self._unqueue(key, ttl)
        self._forget_size(key)

    def _purge(self, now: float) -> list[tuple[K, V]]:
        if not self._queues:
            return []
        expired: list[tuple[K, V]] = []
        data = self._data
        for ttl, queue in list(self._queues.items()):
            while queue:
                key = next(iter(queue))
                entry = data[key]
                if entry[1] > now:
                    break
                queue.popitem(last=False)
                del data[key]
                self._forget_size(key)
                expired.append((key, entry[0]))
            if not queue:
                del self._queues[ttl]
        self._expirations += len(expired)
        return expired

    def _before_read(self) -> None:
        self._purge(self._timer())

    def _lookup(self, key: K) -> Any:
        entry = self._data.get(key)
        if entry is None:
            return _MISSING
        if entry[1] <= self._timer():
            self._drop(key, entry[2])
            self._expirations += 1
            return _MISSING
        self._data.move_to_end(key)
        return entry[0]

    def _store(self, key: K, value: V, size: int) -> None:
        now = self._timer()
        self._purge(now)
        self._put(key, value, size, now, self._ttl)

    def _remove(self, key: K, default: Any) -> Any:
        entry = self._data.get(key)
        if entry is None:
            return default
        self._drop(key, entry[2])
        if entry[1] <= self._timer():
            self._expirations += 1
            return default
        return entry[0]

    def _victim(self) -> tuple[K, V] | None:
        if not self._data:
            return None
        key, (value, _, ttl) = self._data.popitem(last=False)
        self._unqueue(key, ttl)
        self._forget_size(key)
        return key, value

    def _keys(self) -> Iterator[K]:
        return iter(self._data)

    def _clear(self) -> None:
        self._data.clear()
        self._queues.clear()

    def _export(self, state: dict[str, Any]) -> None:
        state["_data"] = OrderedDict(self._data)
        state["_queues"] = {ttl: OrderedDict(q) for ttl, q in self._queues.items()}
