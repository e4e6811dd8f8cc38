"""Bounded in-memory caches: the shared base, LRU and FIFO.

Every public operation takes the cache's one ``threading.Lock`` for its whole
read-modify-write, so ``pop``, ``setdefault``, ``popitem`` and ``get`` are atomic and
the structure stays consistent under threads. User callbacks (``getsizeof``,
``__missing__``) run outside the lock, so they may use the cache themselves.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar, overload

from gennet_toolkit._env import env_int
from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["BaseCache", "CacheStats", "FIFOCache", "LRUCache"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")
T = TypeVar("T")

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of a cache's counters (since creation or the last ``reset_stats``)."""

    hits: int
    misses: int
    evictions: int
    expirations: int
    currsize: int
    maxsize: int

    @property
    def hit_ratio(self) -> float:
        """``hits / (hits + misses)``; 0.0 before the first lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """The counters and ``hit_ratio`` as a plain dict (for logs and JSON)."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hit_ratio,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "currsize": self.currsize,
            "maxsize": self.maxsize,
        }


def _check_maxsize(maxsize: object) -> int:
    if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
        raise ConfigurationError("maxsize must be an integer >= 0")
    return maxsize


class BaseCache(MutableMapping[K, V], Generic[K, V]):
    """What every policy shares: ``maxsize``, optional weights, stats and the lock.

    ``getsizeof(value) -> int`` weighs items (default: every item weighs 1, so
    ``currsize == len(cache)``); ``maxsize`` bounds the total weight. An item heavier
    than ``maxsize`` raises ``ValueError`` and leaves the cache unchanged.
    """

    def __init__(self, maxsize: int, *, getsizeof: Callable[[V], int] | None = None) -> None:
        self._maxsize = _check_maxsize(maxsize)
        self._getsizeof = getsizeof
        # Weights are tracked only when getsizeof is given, to keep the default path lean.
        self._sizes: dict[K, int] | None = {} if getsizeof is not None else None
        self._weight = 0
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0

    # -- helpers called with the lock held ------------------------------------------------

    def _size(self, value: V) -> int:
        if self._getsizeof is None:
            size = 1
        else:
            weight: object = self._getsizeof(value)
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise ValueError("getsizeof must return an integer >= 0")
            size = weight
        if size > self._maxsize:
            raise ValueError("value too large for this cache's maxsize")
        return size

    def _used(self) -> int:
        return self._weight if self._sizes is not None else self._count()

    def _forget_size(self, key: K) -> None:
        if self._sizes is not None:
            self._weight -= self._sizes.pop(key)

    def _note_size(self, key: K, size: int) -> None:
        if self._sizes is not None:
            self._sizes[key] = size
            self._weight += size

    # -- public -----------------------------------------------------------------------

    @property
    def maxsize(self) -> int:
        """The capacity: the largest total weight the cache holds."""
        return self._maxsize

    @property
    def currsize(self) -> int:
        """The current total weight (the number of items without ``getsizeof``)."""
        with self._lock:
            self._before_read()
            return self._used()

    @abstractmethod
    def peek(self, key: K, default: Any = None) -> Any:
        """The value at ``key`` without counting a use or a hit; ``default`` if absent."""

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> Self:
        """Build from ``{prefix}CACHE_MAXSIZE`` (default 1024) and, for TTLCache,
        ``{prefix}CACHE_TTL`` (default 300 s); ``overrides`` win."""
        overrides.setdefault("maxsize", env_int(prefix + "CACHE_MAXSIZE", 1024))
        return cls(**overrides)

    def __missing__(self, key: K) -> V:
        """Called (outside the lock) on a miss by ``cache[key]``; raises ``KeyError``."""
        raise KeyError(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(maxsize={self._maxsize}, currsize={self.currsize})"

    @overload
    def pop(self, key: K) -> V: ...
    @overload
    def pop(self, key: K, default: V) -> V: ...
    @overload
    def pop(self, key: K, default: D) -> V | D: ...
    def pop(self, key: K, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (atomic); ``default`` or ``KeyError`` if absent."""
        with self._lock:
            value = self._remove(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return value

    def __delitem__(self, key: K) -> None:
        with self._lock:
            value = self._remove(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)

    @overload
    def setdefault(self: BaseCache[K, T | None], key: K, default: None = None) -> T | None: ...
    @overload
    def setdefault(self, key: K, default: V) -> V: ...
    def setdefault(self, key: K, default: Any = None) -> Any:
        """The value at ``key``; if absent, store ``default`` and return it (atomic)."""
        size = self._size(default)
        with self._lock:
            value = self._lookup(key)
            if value is not _MISSING:
                self._hits += 1
                return value
            self._misses += 1
            self._store(key, default, size)
            return default

    def popitem(self) -> tuple[K, V]:
        """Remove and return the item the policy would evict next; ``KeyError`` if empty."""
        with self._lock:
            self._before_read()
            item = self._victim()
        if item is None:
            raise KeyError(f"{type(self).__name__} is empty")
        return item

    def stats(self) -> CacheStats:
        """Hits, misses, evictions, expirations, ``currsize`` and ``maxsize``, atomically."""
        with self._lock:
            self._before_read()
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                expirations=self._expirations,
                currsize=self._used(),
                maxsize=self._maxsize,
            )

    def reset_stats(self) -> None:
        """Zero the hit, miss, eviction and expiration counters."""
        with self._lock:
            self._hits = self._misses = self._evictions = self._expirations = 0

    def clear(self) -> None:
        """Remove every item (not counted as evictions)."""
        with self._lock:
            self._clear()
            if self._sizes is not None:
                self._sizes.clear()
                self._weight = 0

    def __getstate__(self) -> dict[str, Any]:
        # Pickle and copy get fresh containers and no lock (a lock is not picklable,
        # and a copy sharing one would serialize two caches for nothing).
        with self._lock:
            state = dict(self.__dict__)
            del state["_lock"]
            if self._sizes is not None:
                state["_sizes"] = dict(self._sizes)
            self._export(state)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._import(state)
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __copy__(self) -> Self:
        new = type(self).__new__(type(self))
        new.__setstate__(self.__getstate__())
        return new

    def __iter__(self) -> Iterator[K]:
        # A snapshot: iterating while other threads write never raises.
        with self._lock:
            self._before_read()
            keys = list(self._keys())
        return iter(keys)

    # -- policy hooks (lock held) -------------------------------------------------------

    def _before_read(self) -> None:
        """Bring the structure up to date before it is reported (TTL: drop expired)."""

    def _export(self, state: dict[str, Any]) -> None:
        """Replace the policy's containers in ``state`` by independent copies."""

    def _import(self, state: dict[str, Any]) -> None:
        """Rebuild whatever :meth:`_export` flattened."""

    @abstractmethod
    def _lookup(self, key: K) -> Any:
        """The value at ``key`` counted as a use, or ``_MISSING``."""

    @abstractmethod
    def _store(self, key: K, value: V, size: int) -> None:
        """Insert or replace ``key`` (its weight is ``size``), evicting as the policy says."""

    @abstractmethod
    def _remove(self, key: K, default: Any) -> Any:
        """Remove ``key`` and return its value, or ``default`` if absent."""

    @abstractmethod
    def _victim(self) -> tuple[K, V] | None:
        """Remove and return the next item to evict, or ``None`` when empty."""

    @abstractmethod
    def _keys(self) -> Iterator[K]:
        """The keys in the policy's order."""

    @abstractmethod
    def _count(self) -> int:
        """The number of items."""

    @abstractmethod
    def _clear(self) -> None:
        """Drop every item."""

    def _make_room(self, size: int) -> None:
        # Called after the replaced key (if any) is gone, so it is never its own victim.
        if self._sizes is None:
            while self._count() + size > self._maxsize:
                self._victim()
                self._evictions += 1
        else:
            while self._weight + size > self._maxsize:
                self._victim()
                self._evictions += 1


class _OrderedCache(BaseCache[K, V]):
    """Items in one ``OrderedDict``: oldest first; set moves a key to the end."""

    def __init__(self, maxsize: int, *, getsizeof: Callable[[V], int] | None = None) -> None:
        super().__init__(maxsize, getsizeof=getsizeof)
        self._data: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def _count(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        # Membership is not a use: it changes neither order nor stats.
        return key in self._data

    def __setitem__(self, key: K, value: V) -> None:
        if self._sizes is not None or self._maxsize == 0:
            size = self._size(value)
            with self._lock:
                self._store(key, value, size)
            return
        # Unweighted fast path, inlined: this is the set-and-evict hot loop.
        with self._lock:
            data = self._data
            if key in data:
                data[key] = value
                data.move_to_end(key)
                return
            if len(data) >= self._maxsize:
                data.popitem(last=False)
                self._evictions += 1
            data[key] = value

    def _store(self, key: K, value: V, size: int) -> None:
        data = self._data
        if key in data:
            self._forget_size(key)
            del data[key]
        self._make_room(size)
        data[key] = value
        self._note_size(key, size)

    def _remove(self, key: K, default: Any) -> Any:
        value = self._data.pop(key, _MISSING)
        if value is _MISSING:
            return default
        self._forget_size(key)
        return value

    def _victim(self) -> tuple[K, V] | None:
        if not self._data:
            return None
        key, value = self._data.popitem(last=False)
        self._forget_size(key)
        return key, value

    def _keys(self) -> Iterator[K]:
        return iter(self._data)

    def _clear(self) -> None:
        self._data.clear()

    def _export(self, state: dict[str, Any]) -> None:
        state["_data"] = OrderedDict(self._data)

    def peek(self, key: K, default: Any = None) -> Any:
        """The value at ``key`` without counting a use or a hit; ``default`` if absent."""
        return self._data.get(key, default)


class LRUCache(_OrderedCache[K, V]):
    """Evicts the least recently used item; a read or a write is a use.

    ``cache[key]`` and ``cache.get(key)`` move the key to the most-recent end;
    ``key in cache`` and ``peek`` do not. Every operation is O(1).
    """

    # Reads take no lock: OrderedDict.get and move_to_end are each atomic C calls, and a
    # key deleted between them by another thread is simply not moved. Writes lock.
    def __getitem__(self, key: K) -> V:
        data = self._data
        try:  # try blocks cost nothing until they catch (3.11+); a subscript beats .get
            value = data[key]
            data.move_to_end(key)
        except KeyError:
            if key in data:  # deleted and re-set between the two calls: still a hit
                return self.__getitem__(key)
            self._misses += 1
            return self.__missing__(key)
        self._hits += 1
        return value

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: V) -> V: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...
    def get(self, key: K, default: Any = None) -> Any:
        """The value at ``key`` (a use and a hit), or ``default`` (a miss)."""
        data = self._data
        value = data.get(key, _MISSING)
        if value is not _MISSING:
            try:  # noqa: SIM105 - contextlib.suppress costs more than the hit itself
                data.move_to_end(key)
            except KeyError:
                pass
            self._hits += 1
            return value
        self._misses += 1
        return default

    def _lookup(self, key: K) -> Any:
        value = self._data.get(key, _MISSING)
        if value is not _MISSING:
            self._data.move_to_end(key)
        return value


class FIFOCache(_OrderedCache[K, V]):
    """Evicts the item stored (inserted or replaced) longest ago; reads change nothing.

    Same order as ``cachetools.FIFOCache``: replacing a value moves the key to the
    newest end. Every operation is O(1).
    """

    def __getitem__(self, key: K) -> V:
        try:
            value = self._data[key]  # one atomic C call: no lock needed
        except KeyError:
            self._misses += 1
            return self.__missing__(key)
        self._hits += 1
        return value

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: V) -> V: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...
    def get(self, key: K, default: Any = None) -> Any:
        """The value at ``key`` (a hit), or ``default`` (a miss)."""
        value = self._data.get(key, _MISSING)
        if value is not _MISSING:
            self._hits += 1
            return value
        self._misses += 1
        return default

    def _lookup(self, key: K) -> Any:
        return self._data.get(key, _MISSING)
