"""Single-flight: one loader call per key at a time, for threads and for asyncio tasks.

Shared by ``cache`` and ``advanced_cache``. Callers asking for a key while its load
runs wait for that load's outcome (value or exception) instead of calling again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

__all__ = ["AsyncFlights", "SyncFlights"]

T = TypeVar("T")


class _Call:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SyncFlights:
    """Threads asking for the same key while a load runs wait for its result.

    ``coalesced`` counts the callers that waited instead of loading (approximate
    under threads, like every counter here).
    """

    __slots__ = ("_calls", "_lock", "coalesced")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}
        self.coalesced = 0

    def running(self, key: Hashable) -> bool:
        """Whether a load for ``key`` is running now."""
        return key in self._calls

    def run(self, key: Hashable, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, unless a call for ``key`` is running: then that call's outcome."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
            else:
                self.coalesced += 1
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return cast(T, call.value)
        try:
            call.value = fn(*args)
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
        return cast(T, call.value)


class AsyncFlights:
    """Tasks asking for the same key while a load runs await its result.

    If the task running the load is cancelled, a waiter takes over (it was not
    cancelled itself), so cancellation never leaks to other callers. Futures belong to
    one event loop, so loads in different loops never share (nor disturb) each other.
    """

    __slots__ = ("_calls", "coalesced")

    def __init__(self) -> None:
        self._calls: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Future[Any]] = {}
        self.coalesced = 0

    def running(self, key: Hashable) -> bool:
        """Whether a load for ``key`` is running in the current event loop."""
        return (asyncio.get_running_loop(), key) in self._calls

    def release(self, key: Hashable, value: Any) -> None:
        """Hand ``value`` to the callers waiting on ``key`` now; the load carries on alone.

        Callers arriving after this start (or join) a new flight. For a loader that
        has a good-enough value early (a stale entry) and keeps working to refresh it.
        """
        fut = self._calls.pop((asyncio.get_running_loop(), key), None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    async def run(self, key: Hashable, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)``, unless a call for ``key`` is running: then its outcome."""
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        while True:
            fut = self._calls.get(slot)
            if fut is None:
                break
            self.coalesced += 1
            try:
                return cast(T, await asyncio.shield(fut))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if fut.cancelled() and task is not None and not task.cancelling():
                    continue  # the leader was cancelled, not us: retry as leader
                raise
        fut = loop.create_future()
        self._calls[slot] = fut
        try:
            value = await fn(*args)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            if not fut.done():  # (done already when released early)
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" log when nobody waited
            raise
        else:
            if not fut.done():
                fut.set_result(value)
            return value
        finally:
            if self._calls.get(slot) is fut:
                del self._calls[slot]
