"""Plumbing for the registry: thread runner, failure categories, number checks."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import inspect
import math
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["failure_category"]

_CHAIN_LIMIT = 16


def seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    """``value`` as a finite number of seconds (> 0, or >= 0 with ``allow_zero``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{what} must be a finite number of seconds {bound}")
    return float(value)


@dataclass(slots=True)
class State:
    # Mutable bookkeeping per check; flipped from the event loop and from the check thread.
    thread_busy: bool = False
    failing: bool = False


def is_async_callable(obj: object) -> bool:
    # iscoroutinefunction sees through partials and methods, not through instances
    # whose __call__ is async: look there too.
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004
    )


async def in_daemon_thread(fn: Callable[[], Any], state: State, name: str) -> Any:
    # A daemon thread rather than the loop's executor: a hung check can neither starve
    # the executor the app uses nor block interpreter exit.
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    ctx = contextvars.copy_context()

    def settle(value: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    def target() -> None:
        value: Any = None
        exc: BaseException | None = None
        try:
            value = ctx.run(fn)
        except Exception as e:
            exc = e
        finally:
            state.thread_busy = False
        # RuntimeError: the loop closed while the check hung; nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, value, exc)

    state.thread_busy = True
    thread = threading.Thread(target=target, name=f"health-check:{name}", daemon=True)
    try:
        thread.start()
    except BaseException:
        state.thread_busy = False
        raise
    return await fut


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _CHAIN_LIMIT:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def failure_category(exc: BaseException) -> str:
    """A short, address-free description of why a check failed.

    ``"connection refused"``, ``"name resolution failed"``, ``"timeout"``,
    ``"connection error"``, or else the exception's class name. The exception text
    itself (hosts, ports, credentials in DSNs) never leaves the server.
    """
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, ConnectionRefusedError) or (
            isinstance(e, OSError) and e.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "name resolution failed"
    if any(isinstance(e, TimeoutError) or "timeout" in type(e).__name__.lower() for e in chain):
        return "timeout"
    # Drivers that flatten the OS error into text (psycopg, redis-py): classify by the
    # message, never echo it.
    for e in chain:
        text = str(e).lower()
        if "connection refused" in text:
            return "connection refused"
        if "timed out" in text or "timeout" in text:
            return "timeout"
    if any(isinstance(e, ConnectionError) for e in chain) or any(
        type(e).__name__ == "ConnectionError" for e in chain
    ):
        return "connection error"
    return type(exc).__name__


def debug_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
