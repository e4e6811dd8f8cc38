"""The in-process store: plain dicts behind one ``threading.Lock``, used by both API forms.

Every operation takes the lock once, does its read-modify-write and returns, so it is
atomic across threads and never yields to the event loop halfway. Expired keys are
dropped when touched and by a bounded sweep every thousand writes (no thread).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import TypeAlias

from gennet_toolkit.backends._memory_pubsub import Hub
from gennet_toolkit.backends.base import (
    Limits,
    RateLimitResult,
    SyncBackend,
    SyncSubscription,
    Value,
    check_rate,
    check_ttl,
    encode,
    limits_key,
    plan_limits,
)

__all__ = ()

# Counters stay ints, GCRA arrival times floats, sliding windows (window, cur, prev).
_Stored: TypeAlias = bytes | int | float | tuple[int, int, int]

# RateLimitResult's own __new__ is a Python function wrapping this one; every check
# builds a result, and calling tuple.__new__ directly skips that extra frame.
_new = tuple.__new__

_SWEEP_EVERY = 1024
_SWEEP_BATCH = 2 * _SWEEP_EVERY
_EPS = 1e-9


class MemoryStore(SyncBackend):
    """The sync form of :class:`~gennet_toolkit.backends.MemoryBackend`."""

    def __init__(
        self,
        *,
        prefix: str = "",
        clock: Callable[[], float] | None = None,
        queue_size: int = 1000,
    ) -> None:
        self.prefix = prefix
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._values: dict[str, _Stored] = {}
        self._expires: dict[str, float] = {}
        self._writes = 0
        self.hub = Hub(queue_size=queue_size)

    def __repr__(self) -> str:
        return f"MemoryStore(prefix={self.prefix!r}, keys={len(self._values)})"

    # -- internals (call with the lock held) ----------------------------------------

    def _live(self, key: str, now: float) -> _Stored | None:
        exp = self._expires.get(key)
        if exp is not None and exp <= now:
            del self._expires[key]
            self._values.pop(key, None)
            return None
        return self._values.get(key)

    def _put(self, key: str, value: _Stored, ttl: float | None, now: float) -> None:
        self._values[key] = value
        self._expires.pop(key, None)
        if ttl is not None:
            self._expires[key] = now + ttl
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._sweep(now)

    def _drop(self, key: str) -> bool:
        self._expires.pop(key, None)
        return self._values.pop(key, None) is not None

    def _sweep(self, now: float) -> None:
        # Look at twice as many keys as were written since the last sweep, and send the
        # live ones to the back: the sweep walks the whole dict in turn, so expired keys
        # that nobody reads again cannot pile up faster than they are found.
        expires = self._expires
        for key in list(islice(expires, _SWEEP_BATCH)):
            when = expires.pop(key)
            if when <= now:
                self._values.pop(key, None)
            else:
                expires[key] = when

    @staticmethod
    def _as_bytes(value: _Stored | None) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, tuple):
            return repr(value).encode()
        return str(value).encode()

    # -- plain keys ------------------------------------------------------------------

    def ping(self) -> None:
        """Always answers: the store is this process."""

    def get(self, key: str) -> bytes | None:
        """See :meth:`Backend.get`."""
        with self._lock:
            return self._as_bytes(self._live(self.prefix + key, self._clock()))

    def set(self, key: str, value: Value, *, ttl: float | None = None, nx: bool = False) -> bool:
        """See :meth:`Backend.set`."""
        check_ttl(ttl)
        data = encode(value)
        k = self.prefix + key
        with self._lock:
            now = self._clock()
            if nx and self._live(k, now) is not None:
                return False
            self._put(k, data, ttl, now)
            return True

    def delete(self, *keys: str) -> int:
        """See :meth:`Backend.delete`."""
        with self._lock:
            now = self._clock()
            return sum(
                self._live(self.prefix + k, now) is not None and self._drop(self.prefix + k)
                for k in keys
            )

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """See :meth:`Backend.get_many`."""
        with self._lock:
            now = self._clock()
            return [self._as_bytes(self._live(self.prefix + k, now)) for k in keys]

    def set_many(self, items: Mapping[str, Value], *, ttl: float | None = None) -> None:
        """See :meth:`Backend.set_many`."""
        check_ttl(ttl)
        data = {self.prefix + k: encode(v) for k, v in items.items()}
        with self._lock:
            now = self._clock()
            for k, v in data.items():
                self._put(k, v, ttl, now)

    def ttl(self, key: str) -> float | None:
        """See :meth:`Backend.ttl`."""
        k = self.prefix + key
        with self._lock:
            now = self._clock()
            if self._live(k, now) is None:
                return None
            exp = self._expires.get(k)
            return math.inf if exp is None else exp - now

    def expire(self, key: str, ttl: float) -> bool:
        """See :meth:`Backend.expire`."""
        check_ttl(ttl)
        k = self.prefix + key
        with self._lock:
            now = self._clock()
            if self._live(k, now) is None:
                return False
            self._expires.pop(k, None)
            self._expires[k] = now + ttl
            return True

    def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """See :meth:`Backend.incr`."""
        check_ttl(ttl)
        k = self.prefix + key
        with self._lock:
            now = self._clock()
            current = self._live(k, now)
            if current is None:
                number = 0
            elif isinstance(current, int):
                number = current
            else:
                number = _parse_int(current)
            number += amount
            keep = self._expires.get(k)
            if keep is not None:
                self._values[k] = number  # keeps its expiry: TTL applies on create only
            else:
                self._put(k, number, ttl, now)
            return number

    def compare_and_set(
        self, key: str, expected: Value | None, new: Value | None, *, ttl: float | None = None
    ) -> bool:
        """See :meth:`Backend.compare_and_set`."""
        check_ttl(ttl)
        want = None if expected is None else encode(expected)
        data = None if new is None else encode(new)
        k = self.prefix + key
        with self._lock:
            now = self._clock()
            if self._as_bytes(self._live(k, now)) != want:
                return False
            if data is None:
                self._drop(k)
            else:
                self._put(k, data, ttl, now)
            return True

    def release_lock(self, key: str, token: str) -> bool:
        """See :meth:`Backend.release_lock`."""
        k = self.prefix + key
        with self._lock:
            if self._live(k, self._clock()) != token.encode():
                return False
            return self._drop(k)

    def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`Backend.extend_lock`."""
        check_ttl(ttl)
        k = self.prefix + key
        with self._lock:
            now = self._clock()
            if self._live(k, now) != token.encode():
                return False
            self._expires.pop(k, None)
            self._expires[k] = now + ttl
            return True

    def delete_prefix(self, prefix: str) -> int:
        """See :meth:`Backend.delete_prefix`."""
        full = self.prefix + prefix
        with self._lock:
            now = self._clock()
            doomed = [k for k in self._values if k.startswith(full)]
            return sum(self._live(k, now) is not None and self._drop(k) for k in doomed)

    # -- pub/sub ---------------------------------------------------------------------

    def publish(self, channel: str, message: Value) -> int:
        """See :meth:`Backend.publish`."""
        return self.hub.publish(self.prefix + channel, encode(message), len(self.prefix))

    def subscribe(self, *channels: str) -> SyncSubscription:
        """See :meth:`Backend.subscribe`."""
        return self.hub.subscribe_sync([self.prefix + c for c in channels])

    # -- rate limits -----------------------------------------------------------------
    #
    # Each algorithm is one step: decide one (limit, period) from its stored state at
    # ``now`` and, if ``write``, spend ``cost`` when it allows. Steps run with the lock
    # held and keep the hot path lean: two dict lookups, no intermediate objects.

    def fixed_window(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """See :meth:`Backend.fixed_window`."""
        check_rate(limit, period, cost)
        k = f"{self.prefix}rl:fw:{{{key}}}"
        with self._lock:
            return self._fixed_step(k, (limit, period), cost, self._clock(), True)

    def sliding_window(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """See :meth:`Backend.sliding_window`."""
        check_rate(limit, period, cost)
        k = f"{self.prefix}rl:sw:{{{key}}}"
        with self._lock:
            return self._sliding_step(k, (limit, period), cost, self._clock(), True)

    def gcra(self, key: str, limit: int, period: float, cost: int = 1) -> RateLimitResult:
        """See :meth:`Backend.gcra`."""
        check_rate(limit, period, cost)
        k = f"{self.prefix}rl:gcra:{{{key}}}"
        with self._lock:
            return self._gcra_step(k, (limit, period), cost, self._clock(), True)

    def rate_limits(
        self, algorithm: str, key: str, limits: Limits, cost: int = 1
    ) -> tuple[RateLimitResult, ...]:
        """See :meth:`Backend.rate_limits`."""
        pairs = limits if type(limits) is tuple else limits_key(limits)
        short, tags = plan_limits(algorithm, pairs, cost)
        step = _STEPS[short]
        if len(pairs) == 1:  # most rules: nothing to coordinate
            k = f"{self.prefix}rl:{short}:{{{key}}}:{tags[0]}"
            with self._lock:
                return (step(self, k, pairs[0], cost, self._clock(), True),)
        base = f"{self.prefix}rl:{short}:{{{key}}}:"
        with self._lock:
            now = self._clock()
            keys = [base + tag for tag in tags]
            # All or nothing: a dry run of every limit first, then spend on all of them
            # (same state, same clock: the same decisions) or on none.
            trial = [
                step(self, k, pair, cost, now, False) for k, pair in zip(keys, pairs, strict=True)
            ]
            if all(r.allowed for r in trial):
                return tuple(
                    step(self, k, pair, cost, now, True)
                    for k, pair in zip(keys, pairs, strict=True)
                )
            # Refused: the limits that would allow report the quota they still have.
            return tuple(
                r if not r.allowed else step(self, k, pair, 0, now, False)
                for r, k, pair in zip(trial, keys, pairs, strict=True)
            )

    def _fixed_step(
        self, k: str, pair: tuple[int, float], cost: int, now: float, write: bool
    ) -> RateLimitResult:
        limit, period = pair
        exp = self._expires.get(k)
        if exp is None or exp <= now:  # no window yet: this hit starts one
            if write and cost:
                self._put(k, cost, period, now)
            return _new(RateLimitResult, (True, limit, limit - cost, period, 0.0))
        stored = self._values.get(k)
        count = stored if type(stored) is int else 0
        left = exp - now
        if count + cost > limit:
            return _new(RateLimitResult, (False, limit, limit - count, left, left))
        if write and cost:
            self._values[k] = count + cost  # keeps the window's expiry
        return _new(RateLimitResult, (True, limit, limit - count - cost, left, 0.0))

    def _sliding_step(
        self, k: str, pair: tuple[int, float], cost: int, now: float, write: bool
    ) -> RateLimitResult:
        limit, period = pair
        # The two-window weighted counter, mirrored in lua/sliding_window.lua and
        # lua/rate_limits.lua: the previous window's count, weighted by how much of it
        # still overlaps the sliding window, plus the current one.
        window = math.floor(now / period)
        elapsed = now - window * period
        exp = self._expires.get(k)
        stored = self._values.get(k) if exp is not None and exp > now else None
        cur = prev = 0
        if type(stored) is tuple:
            w, c, p = stored
            if w == window:
                cur, prev = c, p
            elif w == window - 1:
                prev = c
        estimate = prev * (1 - elapsed / period) + cur
        if estimate + cost > limit + _EPS:
            if cur + cost <= limit:
                # Wait until the previous window's weight has faded enough.
                retry = (1 - (limit - cur - cost) / prev) * period - elapsed
            else:
                # Only the next window helps, once this one's weight has faded enough.
                retry = (period - elapsed) + max(0.0, 1 - (limit - cost) / cur) * period
            remaining = max(0, math.floor(limit - estimate + _EPS))
            reset = _reset(cur, prev, period, elapsed)
            return _new(RateLimitResult, (False, limit, remaining, reset, retry))
        if write and cost:
            # Kept until the next window ends: it is that window's "previous".
            self._put(k, (window, cur + cost, prev), 2 * period - elapsed, now)
        remaining = max(0, math.floor(limit - estimate - cost + _EPS))
        reset = _reset(cur + cost, prev, period, elapsed)
        return _new(RateLimitResult, (True, limit, remaining, reset, 0.0))

    def _gcra_step(
        self, k: str, pair: tuple[int, float], cost: int, now: float, write: bool
    ) -> RateLimitResult:
        limit, period = pair
        interval = period / limit
        exp = self._expires.get(k)
        stored = self._values.get(k) if exp is not None and exp > now else None
        tat = stored if type(stored) is float and stored > now else now
        new_tat = tat + cost * interval
        allow_at = new_tat - period
        if allow_at - now > _EPS:
            remaining = math.floor((period - (tat - now)) / interval + _EPS)
            return _new(RateLimitResult, (False, limit, remaining, tat - now, allow_at - now))
        if write and cost:
            self._put(k, new_tat, new_tat - now, now)
        remaining = math.floor((period - (new_tat - now)) / interval + _EPS)
        return _new(RateLimitResult, (True, limit, remaining, new_tat - now, 0.0))

    def close(self) -> None:
        """Nothing to release; present for symmetry with the Redis backend."""


_STEPS = {
    "fw": MemoryStore._fixed_step,
    "sw": MemoryStore._sliding_step,
    "gcra": MemoryStore._gcra_step,
}


def _parse_int(value: _Stored) -> int:
    try:
        if isinstance(value, bytes):
            return int(value)
    except ValueError:
        pass
    raise ValueError("the value at this key is not an integer")


def _reset(cur: int, prev: int, period: float, elapsed: float) -> float:
    if cur:
        return 2 * period - elapsed
    if prev:
        return period - elapsed
    return 0.0
