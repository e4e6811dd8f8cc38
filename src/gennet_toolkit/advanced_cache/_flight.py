"""Single-flight: one loader call per key at a time, for threads and for asyncio tasks."""

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
    """Threads asking for the same key while a load runs wait for its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}
        self.coalesced = 0

    def run(self, key: Hashable, fn: Callable[[], T]) -> T:
        """``fn()``, unless a call for ``key`` is running: then that call's outcome."""
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
            call.value = fn()
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
    cancelled itself), so cancellation never leaks to other callers.
    """

    def __init__(self) -> None:
        self._calls: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Future[Any]] = {}
        self.coalesced = 0

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()``, unless a call for ``key`` is running: then that call's outcome."""
        # Futures belong to one event loop: calls on another loop never share them.
        slot = (asyncio.get_running_loop(), key)
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
        fut = slot[0].create_future()
        self._calls[slot] = fut
        try:
            value = await fn()
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: no "never retrieved" log when nobody waited
            raise
        else:
            fut.set_result(value)
            return value
        finally:
            if self._calls.get(slot) is fut:
                del self._calls[slot]
