"""LFUCache: least frequently used eviction with O(1) frequency buckets."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

from gennet_toolkit.advanced_cache._policies import _MISSING, BaseCache

__all__ = ["LFUCache"]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class _Bucket:
    """One use count and the keys that have it, oldest first (a node of a ring)."""

    __slots__ = ("count", "keys", "next", "prev")

    def __init__(self, count: int) -> None:
        self.count = count
        # OrderedDict, not dict: popping a dict's first key repeatedly degrades to O(n)
        # (deleted slots are scanned), OrderedDict.popitem(last=False) stays O(1).
        self.keys: OrderedDict[Any, None] = OrderedDict()
        self.next: _Bucket = self
        self.prev: _Bucket = self

    def insert_after(self, node: _Bucket) -> None:
        self.prev = node
        self.next = node.next
        node.next.prev = self
        node.next = self

    def unlink(self) -> None:
        self.prev.next = self.next
        self.next.prev = self.prev


class LFUCache(BaseCache[K, V]):
    """Evicts the least frequently used item; ties go to the one at that count longest.

    Use counts live in a ring of buckets ordered by count (one bucket per distinct
    count), so a use moves a key to the neighbouring bucket and eviction pops the
    lowest bucket's oldest key: O(1) each, no heap and no scan. A read or a write is
    a use; a new key starts at count 1.
    """

    def __init__(self, maxsize: int, *, getsizeof: Callable[[V], int] | None = None) -> None:
        super().__init__(maxsize, getsizeof=getsizeof)
        self._data: dict[K, V] = {}
        self._node: dict[K, _Bucket] = {}
        self._root = _Bucket(0)

    def __len__(self) -> int:
        return len(self._data)

    def _count(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def _touch(self, key: K) -> None:
        node = self._node[key]
        nxt = node.next
        if nxt.count != node.count + 1:
            if len(node.keys) == 1:
                # Sole key at this count: bump the bucket itself, nothing moves.
                node.count += 1
                return
            nxt = _Bucket(node.count + 1)
            nxt.insert_after(node)
        del node.keys[key]
        nxt.keys[key] = None
        self._node[key] = nxt
        if not node.keys:
            node.unlink()

    def __getitem__(self, key: K) -> V:
        with self._lock:
            value: V = self._data.get(key, _MISSING)
            if value is not _MISSING:
                # _touch, inlined: this is the LFU hit path.
                node = self._node[key]
                nxt = node.next
                count = node.count + 1
                if nxt.count != count:
                    if len(node.keys) == 1:
                        node.count = count
                        self._hits += 1
                        return value
                    nxt = _Bucket(count)
                    nxt.insert_after(node)
                keys = node.keys
                del keys[key]
                nxt.keys[key] = None
                self._node[key] = nxt
                if not keys:
                    node.unlink()
                self._hits += 1
                return value
            self._misses += 1
        return self.__missing__(key)

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: V) -> V: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...
    def get(self, key: K, default: Any = None) -> Any:
        """The value at ``key`` (a use and a hit), or ``default`` (a miss)."""
        with self._lock:
            value = self._data.get(key, _MISSING)
            if value is not _MISSING:
                self._touch(key)
                self._hits += 1
                return value
            self._misses += 1
            return default

    def __setitem__(self, key: K, value: V) -> None:
        if self._sizes is not None or self._maxsize == 0:
            size = self._size(value)
            with self._lock:
                self._store(key, value, size)
            return
        with self._lock:
            data = self._data
            if key in data:
                data[key] = value
                self._touch(key)
                return
            root = self._root
            if len(data) >= self._maxsize:
                low = root.next
                old, _ = low.keys.popitem(last=False)
                if not low.keys:
                    low.unlink()
                del self._node[old]
                del data[old]
                self._evictions += 1
            node = root.next
            if node.count != 1:
                node = _Bucket(1)
                node.insert_after(root)
            node.keys[key] = None
            self._node[key] = node
            data[key] = value

    def use_count(self, key: K) -> int:
        """How many times ``key`` was used (0 if absent); not itself a use."""
        with self._lock:
            node = self._node.get(key)
            return node.count if node is not None else 0

    def peek(self, key: K, default: Any = None) -> Any:
        """The value at ``key`` without counting a use or a hit; ``default`` if absent."""
        return self._data.get(key, default)

    def _lookup(self, key: K) -> Any:
        value = self._data.get(key, _MISSING)
        if value is not _MISSING:
            self._touch(key)
        return value

    def _store(self, key: K, value: V, size: int) -> None:
        if key in self._data:
            self._forget_size(key)
            if self._sizes is not None and self._weight + size > self._maxsize:
                # A heavier replacement may need room; the key itself must not be evicted.
                old = self._data.pop(key)
                node = self._node.pop(key)
                count = node.count
                del node.keys[key]
                if not node.keys:
                    node.unlink()
                del old
                self._make_room(size)
                self._insert(key, value, count + 1)
            else:
                self._data[key] = value
                self._touch(key)
            self._note_size(key, size)
            return
        self._make_room(size)
        self._insert(key, value, 1)
        self._note_size(key, size)

    def _insert(self, key: K, value: V, count: int) -> None:
        # Only count 1 (a new key) is O(1); a re-inserted heavy key walks to its count,
        # which is rare (weighted caches replacing a value by a heavier one).
        node = self._root
        while node.next is not self._root and node.next.count <= count:
            node = node.next
        if node is self._root or node.count != count:
            bucket = _Bucket(count)
            bucket.insert_after(node)
            node = bucket
        node.keys[key] = None
        self._node[key] = node
        self._data[key] = value

    def _remove(self, key: K, default: Any) -> Any:
        value = self._data.pop(key, _MISSING)
        if value is _MISSING:
            return default
        node = self._node.pop(key)
        del node.keys[key]
        if not node.keys:
            node.unlink()
        self._forget_size(key)
        return value

    def _victim(self) -> tuple[K, V] | None:
        node = self._root.next
        if node is self._root:
            return None
        key, _ = node.keys.popitem(last=False)
        if not node.keys:
            node.unlink()
        del self._node[key]
        value = self._data.pop(key)
        self._forget_size(key)
        return key, value

    def _keys(self) -> Iterator[K]:
        return iter(self._data)

    def _clear(self) -> None:
        self._data.clear()
        self._node.clear()
        self._root.next = self._root.prev = self._root

    def _export(self, state: dict[str, Any]) -> None:
        # The bucket ring is flattened: pickling linked nodes recurses once per bucket.
        state["_data"] = dict(self._data)
        state["_buckets"] = [(b.count, list(b.keys)) for b in self._ring()]
        del state["_root"], state["_node"]

    def _import(self, state: dict[str, Any]) -> None:
        root = _Bucket(0)
        nodes: dict[Any, _Bucket] = {}
        last = root
        for count, keys in state.pop("_buckets"):
            bucket = _Bucket(count)
            bucket.insert_after(last)
            for key in keys:
                bucket.keys[key] = None
                nodes[key] = bucket
            last = bucket
        state["_root"], state["_node"] = root, nodes

    def _ring(self) -> Iterator[_Bucket]:
        node = self._root.next
        while node is not self._root:
            yield node
            node = node.next
