"""The embedded default backend: in-process state, safe under asyncio and threads.

``MemoryBackend()`` needs no server. Both API forms share one store guarded by a
``threading.Lock``; each operation holds it for a few dict operations, so the async
form calls straight into it without awaiting anything or blocking the loop for long.
State lives in this process only: several workers each get their own (use Redis to
share it). Pass ``clock=`` (a ``time.monotonic``-like callable) to move time in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from gennet_toolkit.backends._memory_store import MemoryStore
from gennet_toolkit.backends.base import Backend, Limits, RateLimitResult, Subscription, Value

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """In-process :class:`Backend` (``memory://``), with an injectable clock.

    ``queue_size`` bounds each subscriber's queue: a subscriber that does not keep up
    loses its oldest messages instead of growing without limit.
    """

    def __init__(
        self,
        *,
        prefix: str = "",
        clock: Callable[[], float] | None = None,
        queue_size: int = 1000,
    ) -> None:
        self.prefix = prefix
        self._store = MemoryStore(prefix=prefix, clock=clock, queue_size=queue_size)

    def __repr__(self) -> str:
        return f"MemoryBackend(prefix={self.prefix!r})"

    @property
    def sync(self) -> MemoryStore:
        """The blocking form, sharing this backend's state."""
        return self._store

    async def ping(self) -> None:
        """Always answers: the store is this process."""

    async def get(self, key: str) -> bytes | None:
        """See :meth:`Backend.get`."""
        return self._store.get(key)

    async def set(
        self, key: str, value: Value, *, ttl: float | None = None, nx: bool = False
    ) -> bool:
        """See :meth:`Backend.set`."""
        return self._store.set(key, value, ttl=ttl, nx=nx)

    async def delete(self, *keys: str) -> int:
        """See :meth:`Backend.delete`."""
        return self._store.delete(*keys)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See :meth:`Backend.get_many`."""
        return self._store.get_many(keys)

    async def set_many(self, items: Mapping[str, Value], *, ttl: float | None = None) -> None:
        """See :meth:`Backend.set_many`."""
        self._store.set_many(items, ttl=ttl)

    async def ttl(self, key: str) -> float | None:
        """See :meth:`Backend.ttl`."""
        return self._store.ttl(key)

    async def expire(self, key: str, ttl: float) -> bool:
        """See :meth:`Backend.expire`."""
        return self._store.expire(key, ttl)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """See :meth:`Backend.incr`."""
        return self._store.incr(key, amount, ttl=ttl)

    async def compare_and_set(
        self, key: str, expected: Value | None, new: Value | None, *, ttl: float | None = None
    ) -> bool:
        """See :meth:`Backend.compare_and_set`."""
        return self._store.compare_and_set(key, expected, new, ttl=ttl)

    async def release_lock(self, key: str, token: str) -> bool:
        """See :meth:`Backend.release_lock`."""
        return self._store.release_lock(key, token)

    async def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`Backend.extend_lock`."""
        return self._store.extend_lock(key, token, ttl)

    async def publish(self, channel: str, message: Value) -> int:
        """See :meth:`Backend.publish`."""
        return self._store.publish(channel, message)

    async def subscribe(self, *channels: str) -> Subscription:
        """See :meth:`Backend.subscribe`."""
        return self._store.hub.subscribe_async([self.prefix + c for c in channels])

    async def delete_prefix(self, prefix: str) -> int:
        """See :meth:`Backend.delete_prefix`."""
        return self._store.delete_prefix(prefix)

    async def fixed_window(
        self, key: str, limit: int, period: float, cost: int = 1
    ) -> RateLimitResult:
        """See :meth:`Backend.fixed_window`."""
        return self._store.fixed_window(key, limit, period, cost)

    async def sliding_window(
        self, key: str, limit: int, period: float, cost: int = 1
    ) -> RateLimitResult:
        """See :meth:`Backend.sliding_window`."""
        return self._store.sliding_window(key, limit, period, cost)

    async def gcra(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """See :meth:`Backend.gcra`."""
        return self._store.gcra(key, limit, period, cost)

    async def rate_limits(
        self, algorithm: str, key: str, limits: Limits, cost: int = 1
    ) -> tuple[RateLimitResult, ...]:
        """See :meth:`Backend.rate_limits`."""
        return self._store.rate_limits(algorithm, key, limits, cost)

    async def aclose(self) -> None:
        """Nothing to release; present for symmetry with the Redis backend."""
