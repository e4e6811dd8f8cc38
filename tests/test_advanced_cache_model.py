"""advanced_cache against plain reference models: random operation sequences (hypothesis)
must give the same results, contents, order and victims as the documented policy."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gennet_toolkit.advanced_cache import FIFOCache, LFUCache, LRUCache, TTLCache

MAXSIZE = 6

# Mostly writes and reads over few keys, so the cache is full and evicting most of the time.
ops = st.lists(
    st.tuples(
        st.sampled_from(["set"] * 4 + ["get"] * 3 + ["del", "pop", "tick", "setttl"]),
        st.integers(0, 9),
        st.integers(1, 4),
    ),
    max_size=60,
)


class Model:
    """The policy written the obvious, slow way: a list scan per operation."""

    def __init__(self, policy: str, weighted: bool) -> None:
        self.policy = policy
        self.weighted = weighted
        self.items: dict[int, int] = {}
        self.order: list[int] = []  # LRU/FIFO/TTL: oldest first
        self.count: dict[int, int] = {}  # LFU uses
        self.stamp: dict[int, int] = {}  # LFU: when the key reached its count
        self.deadline: dict[int, float] = {}
        self.ticks = itertools.count()
        self.now = 0.0

    def size(self, v: int) -> int:
        return v if self.weighted else 1

    def used(self) -> int:
        return sum(self.size(v) for v in self.items.values())

    def _forget(self, k: int) -> None:
        del self.items[k]
        if k in self.order:
            self.order.remove(k)
        self.count.pop(k, None)
        self.stamp.pop(k, None)
        self.deadline.pop(k, None)

    def _purge(self) -> None:
        for k in [k for k, d in self.deadline.items() if d <= self.now]:
            self._forget(k)

    def victim(self) -> int:
        if self.policy == "lfu":
            return min(self.items, key=lambda k: (self.count[k], self.stamp[k]))
        return self.order[0]

    def _use(self, k: int) -> None:
        if self.policy == "lfu":
            self.count[k] += 1
            self.stamp[k] = next(self.ticks)
        elif self.policy in ("lru", "ttl"):
            self.order.remove(k)
            self.order.append(k)

    def set(self, k: int, v: int, ttl: float = 10.0) -> None:
        if self.policy == "ttl":
            self._purge()
        if self.size(v) > MAXSIZE:
            raise ValueError
        existed = k in self.items
        count = self.count.get(k, 0)
        if existed:
            self._forget(k)
        while self.used() + self.size(v) > MAXSIZE:
            self._forget(self.victim())
        self.items[k] = v
        self.order.append(k)
        self.count[k] = count + 1
        self.stamp[k] = next(self.ticks)
        if self.policy == "ttl":
            self.deadline[k] = self.now + ttl

    def get(self, k: int) -> int | None:
        if k in self.deadline and self.deadline[k] <= self.now:
            self._forget(k)
        if k not in self.items:
            return None
        self._use(k)
        return self.items[k]

    def delete(self, k: int) -> bool:
        if self.policy == "ttl":
            self._purge()
        if k not in self.items:
            return False
        self._forget(k)
        return True

    def popitem(self) -> tuple[int, int] | None:
        if self.policy == "ttl":
            self._purge()
        if not self.items:
            return None
        k = self.victim()
        v = self.items[k]
        self._forget(k)
        return k, v


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def build(policy: str, weighted: bool, clock: Clock) -> Any:
    kw: dict[str, Any] = {"getsizeof": (lambda v: v)} if weighted else {}
    if policy == "lru":
        return LRUCache(MAXSIZE, **kw)
    if policy == "lfu":
        return LFUCache(MAXSIZE, **kw)
    if policy == "fifo":
        return FIFOCache(MAXSIZE, **kw)
    return TTLCache(MAXSIZE, ttl=10, timer=clock, **kw)


@pytest.mark.parametrize("weighted", [False, True], ids=["count", "weighted"])
@pytest.mark.parametrize("policy", ["lru", "lfu", "fifo", "ttl"])
@settings(max_examples=300, deadline=None)
@given(sequence=ops)
def test_cache_matches_reference_model(
    policy: str, weighted: bool, sequence: list[tuple[str, int, int]]
) -> None:
    clock = Clock()
    cache = build(policy, weighted, clock)
    model = Model(policy, weighted)
    for op, k, v in sequence:
        if op == "set":
            cache[k] = v
            model.set(k, v)
        elif op == "setttl":
            if policy != "ttl":
                continue
            cache.set(k, v, ttl=v)
            model.set(k, v, ttl=v)
        elif op == "get":
            assert cache.get(k) == model.get(k), (op, k)
        elif op == "del":
            expected = model.delete(k)
            assert (cache.pop(k, None) is not None) == expected
        elif op == "pop":
            expected_item = model.popitem()
            if expected_item is None:
                with pytest.raises(KeyError):
                    cache.popitem()
            else:
                assert cache.popitem() == expected_item
        elif op == "tick":
            clock.now += v
            model.now += v
        if policy == "ttl":
            model._purge()
        assert sorted(cache) == sorted(model.items)
        if policy in ("lru", "fifo", "ttl"):
            assert list(cache) == model.order
        if policy == "lfu":
            assert {key: cache.use_count(key) for key in cache} == model.count
        assert cache.currsize == model.used() <= MAXSIZE
