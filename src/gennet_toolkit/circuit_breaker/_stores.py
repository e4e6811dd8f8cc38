"""Where a breaker's record lives: in this process, or under one key of a shared backend."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from gennet_toolkit.backends import Backend
from gennet_toolkit.circuit_breaker._state import CLOSED_RECORD, Record, decode, encode
from gennet_toolkit.exceptions import ServiceUnavailable

__all__ = ["LocalStore", "SharedStore", "Transition"]

T = TypeVar("T")

#: A pure transition: the current record and the time in, the new record (or ``None``
#: for "no change") and a result out.
Transition = Callable[[Record, float], tuple[Record | None, T]]

logger = logging.getLogger("gennet_toolkit.circuit_breaker")

# Compare-and-set retries before giving up: contention on one breaker key clears within
# a few rounds; a loop that never wins means the store misbehaves.
_CAS_ATTEMPTS = 200


def _pause(attempt: int) -> float:
    return 0.0 if attempt < 8 else min(0.02, 0.0005 * attempt) * random.random()


class LocalStore:
    """The record in this process, changed under a lock held only for the transition."""

    __slots__ = ("_clock", "_lock", "record")

    def __init__(self, clock: Callable[[], float]) -> None:
        # Read without the lock on the fast path: swapping one reference is atomic.
        self.record = CLOSED_RECORD
        self._lock = threading.Lock()
        self._clock = clock

    def read(self) -> Record:
        """The current record."""
        return self.record

    def apply(self, fn: Transition[T]) -> tuple[Record, Record | None, T]:
        """Apply ``fn`` atomically; the record before, the record after (or None), the result."""
        with self._lock:
            old = self.record
            new, result = fn(old, self._clock())
            if new is not None:
                self.record = new
        return old, new, result

    async def aread(self) -> Record:
        """The current record (async form)."""
        return self.record

    async def aapply(self, fn: Transition[T]) -> tuple[Record, Record | None, T]:
        """See :meth:`apply` (the lock is never held across an ``await``)."""
        return self.apply(fn)


class SharedStore:
    """The record under one key of a :class:`~gennet_toolkit.backends.Backend`.

    Every transition is a compare-and-set loop on that single key: read the record,
    decide, swap only if nobody changed it meanwhile. Backend errors propagate as
    :class:`~gennet_toolkit.exceptions.ServiceUnavailable`.
    """

    __slots__ = ("_clock", "_warned", "backend", "key", "ttl")

    def __init__(self, backend: Backend, key: str, clock: Callable[[], float], ttl: float) -> None:
        self.backend = backend
        self.key = key
        self.ttl = ttl
        self._clock = clock
        self._warned = False

    def _decode(self, raw: bytes | None) -> Record:
        try:
            return decode(raw)
        except (ValueError, KeyError):
            # Not written by us (or by an incompatible version): start closed and let
            # the next transition overwrite it, rather than fail every call.
            if not self._warned:
                self._warned = True
                logger.warning("circuit breaker key %r holds an unreadable record", self.key)
            return CLOSED_RECORD

    def read(self) -> Record:
        """The current record (one GET)."""
        return self._decode(self.backend.sync.get(self.key))

    def apply(self, fn: Transition[T]) -> tuple[Record, Record | None, T]:
        """Apply ``fn`` atomically: one GET, plus one compare-and-set when it changes."""
        sync = self.backend.sync
        for attempt in range(_CAS_ATTEMPTS):
            raw = sync.get(self.key)
            old = self._decode(raw)
            new, result = fn(old, self._clock())
            if new is None or sync.compare_and_set(self.key, raw, encode(new), ttl=self.ttl):
                return old, new, result
            if pause := _pause(attempt):
                time.sleep(pause)
        raise ServiceUnavailable("The circuit breaker state is under too much contention.")

    async def aread(self) -> Record:
        """The current record (async form)."""
        return self._decode(await self.backend.get(self.key))

    async def aapply(self, fn: Transition[T]) -> tuple[Record, Record | None, T]:
        """See :meth:`apply`."""
        backend = self.backend
        for attempt in range(_CAS_ATTEMPTS):
            raw = await backend.get(self.key)
            old = self._decode(raw)
            new, result = fn(old, self._clock())
            if new is None or await backend.compare_and_set(
                self.key, raw, encode(new), ttl=self.ttl
            ):
                return old, new, result
            if pause := _pause(attempt):
                await asyncio.sleep(pause)
        raise ServiceUnavailable("The circuit breaker state is under too much contention.")
