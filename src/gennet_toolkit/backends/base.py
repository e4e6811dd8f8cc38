"""The backend interface: one async API, its sync twin, and the shared lock and result types.

A backend stores bytes under string keys and offers the atomic operations the
stateful modules need. :class:`Backend` is async; ``backend.sync`` is a
:class:`SyncBackend` with the same operations and the same semantics, for code that
runs outside an event loop (decorated sync functions, worker threads). The sync form
never starts an event loop.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import NamedTuple, Self

from gennet_toolkit.exceptions import ServiceUnavailable

__all__ = [
    "Backend",
    "Lock",
    "Limits",
    "LockNotAcquired",
    "Message",
    "RateLimitResult",
    "Subscription",
    "SyncBackend",
    "SyncLock",
    "SyncSubscription",
    "Value",
]

#: What a backend accepts as a value; ``str`` is stored as UTF-8. Reads return ``bytes``.
Value = bytes | str


class RateLimitResult(NamedTuple):
    """The outcome of one rate-limit window update.

    ``remaining`` is the quota left after this call; ``reset_after`` the seconds until
    the quota is fully restored (for fixed windows: until the window ends);
    ``retry_after`` the seconds to wait before the same request could pass (0 when
    ``allowed``). A named tuple, not a frozen dataclass: every check builds one, and
    this is the cheapest immutable record to build.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float


@dataclass(frozen=True, slots=True)
class Message:
    """One pub/sub message: the channel it was published on and its payload."""

    channel: str
    data: bytes


class LockNotAcquired(ServiceUnavailable):
    """A lock could not be acquired within its bounded wait (503)."""

    code = "lock_not_acquired"
    default_detail = "A shared resource is busy; retry later."


def encode(value: Value) -> bytes:
    """``value`` as bytes (``str`` as UTF-8)."""
    return value.encode() if isinstance(value, str) else bytes(value)


def check_ttl(ttl: float | None) -> None:
    """Reject a non-positive TTL: ``None`` means "no expiry", zero is a bug."""
    if ttl is not None and not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")


def check_rate(limit: int, period: float, cost: int) -> None:
    """Validate rate-limit arguments the same way for every backend."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    if not 0 < period < math.inf:
        raise ValueError(f"period must be > 0 seconds and finite, got {period!r}")
    if not 0 <= cost <= limit:
        raise ValueError(f"cost must be between 0 and limit ({limit}), got {cost!r}")


#: The algorithms of :meth:`Backend.rate_limits`, with the short name their keys carry.
RATE_ALGORITHMS = {"fixed_window": "fw", "sliding_window": "sw", "gcra": "gcra"}

#: ``(limit, period)`` pairs: the limits of one rule, for :meth:`Backend.rate_limits`.
Limits = Sequence[tuple[int, float]]


def limits_key(limits: Limits) -> tuple[tuple[int, float], ...]:
    """``limits`` as a hashable tuple (already one in the usual case: no copy)."""
    return limits if isinstance(limits, tuple) else tuple((lim, per) for lim, per in limits)


@lru_cache(maxsize=1024)
def plan_limits(
    algorithm: str, limits: tuple[tuple[int, float], ...], cost: int
) -> tuple[str, tuple[str, ...]]:
    """Validate a :meth:`Backend.rate_limits` call once per distinct set of limits.

    Returns the algorithm's short key name and each limit's key suffix (its period).
    Cached (bounded): a rule checks the same limits on every request, so neither the
    validation nor the period formatting belongs on the per-check path.
    """
    short = RATE_ALGORITHMS.get(algorithm)
    if short is None:
        raise ValueError(f"unknown rate-limit algorithm {algorithm!r}")
    if not limits:
        raise ValueError("at least one (limit, period) pair is needed")
    for limit, period in limits:
        check_rate(limit, period, cost)
    if len({period for _, period in limits}) != len(limits):
        raise ValueError("two limits share a period: they would share one counter")
    tags = tuple(
        str(int(period)) if period == int(period) else repr(float(period)) for _, period in limits
    )
    return short, tags


def _new_token() -> str:
    return secrets.token_hex(16)


def _backoff(attempt: int) -> float:
    # Short, growing, jittered sleeps keep waiters from polling in lockstep.
    return min(0.1, 0.005 * 2.0**attempt) * (0.5 + random.random() / 2)


class Subscription(ABC):
    """An async iterator of :class:`Message` for the channels subscribed to.

    ``async for msg in sub`` waits for messages; ``await sub.get(timeout)`` returns
    one or ``None``; ``await sub.aclose()`` (or ``async with``) unsubscribes.
    """

    # A timeout argument, not asyncio.timeout(): cancelling a Redis pub/sub read midway
    # would drop its connection, so reads are bounded from inside.
    @abstractmethod
    async def get(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109
        """The next message, or ``None`` after ``timeout`` seconds (``None``: wait)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Unsubscribe and release the connection; iteration then stops."""

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        msg = await self.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SyncSubscription(ABC):
    """The sync twin of :class:`Subscription`: an iterator with ``get`` and ``close``."""

    @abstractmethod
    def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or ``None`` after ``timeout`` seconds (``None``: wait)."""

    @abstractmethod
    def close(self) -> None:
        """Unsubscribe and release the connection; iteration then stops."""

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        msg = self.get()
        if msg is None:
            raise StopIteration
        return msg

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(ABC):
    """Shared state for the stateful modules, async form; ``.sync`` is the sync form.

    Keys are strings (the backend's ``prefix`` is prepended), values bytes. TTLs are
    seconds (``float``); ``None`` means no expiry. Every read-modify-write is atomic.
    """

    #: Prepended to every key this backend touches.
    prefix: str

    @property
    @abstractmethod
    def sync(self) -> SyncBackend:
        """The same backend with blocking methods of identical semantics."""

    @abstractmethod
    async def ping(self) -> None:
        """Check the store answers; raise ``ServiceUnavailable`` if it does not."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` when it is missing or expired."""

    @abstractmethod
    async def set(
        self, key: str, value: Value, *, ttl: float | None = None, nx: bool = False
    ) -> bool:
        """Store ``value``; with ``nx=True`` only if ``key`` is absent. True if stored."""

    @abstractmethod
    async def delete(self, *keys: str) -> int:
        """Delete ``keys``; the number that existed."""

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values at ``keys``, in order, ``None`` for missing ones."""

    @abstractmethod
    async def set_many(self, items: Mapping[str, Value], *, ttl: float | None = None) -> None:
        """Store every item atomically, each with the same ``ttl``."""

    @abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Seconds ``key`` has left; ``math.inf`` without expiry; ``None`` if missing."""

    @abstractmethod
    async def expire(self, key: str, ttl: float) -> bool:
        """Give ``key`` a new TTL; False if it does not exist."""

    @abstractmethod
    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add ``amount`` to the integer at ``key`` (0 if missing) and return the result.

        ``ttl`` is applied when the key is created (or has no expiry), never extended.
        A non-integer value raises :class:`ValueError`.
        """

    @abstractmethod
    async def compare_and_set(
        self, key: str, expected: Value | None, new: Value | None, *, ttl: float | None = None
    ) -> bool:
        """Replace the value at ``key`` with ``new`` only if it equals ``expected``.

        ``expected=None`` means "only if absent"; ``new=None`` deletes the key.
        True if the swap happened.
        """

    @abstractmethod
    async def release_lock(self, key: str, token: str) -> bool:
        """Delete lock ``key`` only if ``token`` owns it; True if it was released."""

    @abstractmethod
    async def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        """Reset lock ``key``'s TTL only if ``token`` owns it; True if extended."""

    @abstractmethod
    async def publish(self, channel: str, message: Value) -> int:
        """Send ``message`` to ``channel``; the number of subscribers that got it."""

    @abstractmethod
    async def subscribe(self, *channels: str) -> Subscription:
        """Subscribe to ``channels``; messages published after this returns arrive."""

    @abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix`` (incrementally, never ``KEYS``)."""

    @abstractmethod
    async def fixed_window(
        self, key: str, limit: int, period: float, cost: int = 1
    ) -> RateLimitResult:
        """Count ``cost`` hits in a fixed window of ``period`` seconds started by the first."""

    @abstractmethod
    async def sliding_window(
        self, key: str, limit: int, period: float, cost: int = 1
    ) -> RateLimitResult:
        """Count ``cost`` hits in a sliding window (two-window weighted counter, O(1))."""

    @abstractmethod
    async def gcra(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """Take ``cost`` tokens from a bucket of ``limit`` refilled over ``period`` (GCRA)."""

    @abstractmethod
    async def rate_limits(
        self, algorithm: str, key: str, limits: Limits, cost: int = 1
    ) -> tuple[RateLimitResult, ...]:
        """Check several limits of one ``key`` in one atomic call; spend only if all allow.

        ``algorithm`` is ``"fixed_window"``, ``"sliding_window"`` or ``"gcra"``;
        ``limits`` are ``(limit, period)`` pairs with distinct periods. Each limit's
        state lives at ``rl:<fw|sw|gcra>:{key}:<period>`` (one hash tag, so one Redis
        Cluster slot). ``cost`` is spent on every limit only if every limit allows it;
        otherwise nothing is spent anywhere. Returns one result per limit, in order:
        a refusing limit reports ``allowed=False``; when another limit refused, the
        others report ``allowed=True`` with the quota they still have (nothing spent).
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections (the async ones of the running loop and the sync ones)."""

    def lock(self, name: str, *, ttl: float, wait: float = 0.0) -> Lock:
        """A lock on ``name`` held for at most ``ttl`` seconds; see :class:`Lock`."""
        return Lock(self, name, ttl=ttl, wait=wait)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class SyncBackend(ABC):
    """The blocking form of :class:`Backend`: same methods, same semantics, no ``await``."""

    prefix: str

    @abstractmethod
    def ping(self) -> None:
        """See :meth:`Backend.ping`."""

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """See :meth:`Backend.get`."""

    @abstractmethod
    def set(self, key: str, value: Value, *, ttl: float | None = None, nx: bool = False) -> bool:
        """See :meth:`Backend.set`."""

    @abstractmethod
    def delete(self, *keys: str) -> int:
        """See :meth:`Backend.delete`."""

    @abstractmethod
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See :meth:`Backend.get_many`."""

    @abstractmethod
    def set_many(self, items: Mapping[str, Value], *, ttl: float | None = None) -> None:
        """See :meth:`Backend.set_many`."""

    @abstractmethod
    def ttl(self, key: str) -> float | None:
        """See :meth:`Backend.ttl`."""

    @abstractmethod
    def expire(self, key: str, ttl: float) -> bool:
        """See :meth:`Backend.expire`."""

    @abstractmethod
    def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """See :meth:`Backend.incr`."""

    @abstractmethod
    def compare_and_set(
        self, key: str, expected: Value | None, new: Value | None, *, ttl: float | None = None
    ) -> bool:
        """See :meth:`Backend.compare_and_set`."""

    @abstractmethod
    def release_lock(self, key: str, token: str) -> bool:
        """See :meth:`Backend.release_lock`."""

    @abstractmethod
    def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`Backend.extend_lock`."""

    @abstractmethod
    def publish(self, channel: str, message: Value) -> int:
        """See :meth:`Backend.publish`."""

    @abstractmethod
    def subscribe(self, *channels: str) -> SyncSubscription:
        """See :meth:`Backend.subscribe`."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """See :meth:`Backend.delete_prefix`."""

    @abstractmethod
    def fixed_window(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """See :meth:`Backend.fixed_window`."""

    @abstractmethod
    def sliding_window(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """See :meth:`Backend.sliding_window`."""

    @abstractmethod
    def gcra(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """See :meth:`Backend.gcra`."""

    @abstractmethod
    def rate_limits(
        self, algorithm: str, key: str, limits: Limits, cost: int = 1
    ) -> tuple[RateLimitResult, ...]:
        """See :meth:`Backend.rate_limits`."""

    @abstractmethod
    def close(self) -> None:
        """Release the sync connections."""

    def lock(self, name: str, *, ttl: float, wait: float = 0.0) -> SyncLock:
        """A lock on ``name`` held for at most ``ttl`` seconds; see :class:`SyncLock`."""
        return SyncLock(self, name, ttl=ttl, wait=wait)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LockBase:
    __slots__ = ("key", "name", "token", "ttl", "wait")

    def __init__(self, name: str, *, ttl: float, wait: float) -> None:
        check_ttl(ttl)
        if wait < 0:
            raise ValueError(f"wait must be >= 0 seconds, got {wait!r}")
        self.name = name
        self.key = "lock:" + name
        self.ttl = ttl
        self.wait = wait
        # The token proves ownership: only its holder may release or extend.
        self.token = _new_token()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, ttl={self.ttl}, wait={self.wait})"


class Lock(_LockBase):
    """A distributed lock with an owner token and a TTL (it frees itself if the owner dies).

    ``await lock.acquire()`` tries for at most ``wait`` seconds and returns whether it
    got the lock; ``release()`` and ``extend()`` act only while this owner holds it.
    ``async with backend.lock("job", ttl=30, wait=5):`` raises :class:`LockNotAcquired`
    when the wait runs out.
    """

    __slots__ = ("_backend",)

    def __init__(self, backend: Backend, name: str, *, ttl: float, wait: float = 0.0) -> None:
        super().__init__(name, ttl=ttl, wait=wait)
        self._backend = backend

    async def acquire(self, *, wait: float | None = None) -> bool:
        """Take the lock, waiting at most ``wait`` seconds (default: the lock's ``wait``)."""
        deadline = time.monotonic() + (self.wait if wait is None else wait)
        attempt = 0
        while True:
            if await self._backend.set(self.key, self.token, ttl=self.ttl, nx=True):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(left, _backoff(attempt)))
            attempt += 1

    async def release(self) -> bool:
        """Release the lock; False if it had expired or belongs to someone else now."""
        return await self._backend.release_lock(self.key, self.token)

    async def extend(self, ttl: float | None = None) -> bool:
        """Reset the TTL to ``ttl`` (default: the lock's); False if no longer owned."""
        return await self._backend.extend_lock(
            self.key, self.token, self.ttl if ttl is None else ttl
        )

    async def locked(self) -> bool:
        """Whether anyone holds the lock right now."""
        return await self._backend.get(self.key) is not None

    async def __aenter__(self) -> Self:
        if not await self.acquire():
            raise LockNotAcquired()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # An expired lock is not an error of the block that held it: report nothing.
        await self.release()


class SyncLock(_LockBase):
    """The blocking twin of :class:`Lock` (``with backend.sync.lock("job", ttl=30):``)."""

    __slots__ = ("_backend",)

    def __init__(self, backend: SyncBackend, name: str, *, ttl: float, wait: float = 0.0) -> None:
        super().__init__(name, ttl=ttl, wait=wait)
        self._backend = backend

    def acquire(self, *, wait: float | None = None) -> bool:
        """Take the lock, waiting at most ``wait`` seconds (default: the lock's ``wait``)."""
        deadline = time.monotonic() + (self.wait if wait is None else wait)
        attempt = 0
        while True:
            if self._backend.set(self.key, self.token, ttl=self.ttl, nx=True):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, _backoff(attempt)))
            attempt += 1

    def release(self) -> bool:
        """Release the lock; False if it had expired or belongs to someone else now."""
        return self._backend.release_lock(self.key, self.token)

    def extend(self, ttl: float | None = None) -> bool:
        """Reset the TTL to ``ttl`` (default: the lock's); False if no longer owned."""
        return self._backend.extend_lock(self.key, self.token, self.ttl if ttl is None else ttl)

    def locked(self) -> bool:
        """Whether anyone holds the lock right now."""
        return self._backend.get(self.key) is not None

    def __enter__(self) -> Self:
        if not self.acquire():
            raise LockNotAcquired()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
