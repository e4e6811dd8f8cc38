"""What every backend shares: the JSON envelope and running one task with its policy.

The envelope is the only thing that crosses a process boundary; the same code runs a
task in the in-process executor, an RQ work horse and a Celery worker, so retries,
timeouts and the correlation id behave identically everywhere.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import math
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.task_queue._errors import TaskArgumentsError

__all__ = [
    "ENVELOPE_VERSION",
    "Outcome",
    "RetryHook",
    "RetryPolicy",
    "build_envelope",
    "describe_exception",
    "dumps",
    "run_attempts_async",
    "run_attempts_sync",
    "task_context",
]

ENVELOPE_VERSION = 1

#: Called before sleeping between attempts: (attempt that failed, its exception, delay).
RetryHook = Callable[[int, BaseException, float], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one task is retried and timed out; the same on every backend.

    ``backoff`` is either a base delay doubled after each attempt (capped at
    ``backoff_max``, with up to 10 % jitter) or an explicit list of delays.
    ``timeout`` bounds each attempt, in seconds.
    """

    retries: int = 0
    backoff: float | tuple[float, ...] = 1.0
    backoff_max: float = 60.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    timeout: float | None = None

    def _nominal(self, attempt: int) -> float:
        if isinstance(self.backoff, tuple):
            if not self.backoff:
                return 0.0
            return min(self.backoff[min(attempt, len(self.backoff)) - 1], self.backoff_max)
        return min(self.backoff * 2.0 ** (attempt - 1), self.backoff_max)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed ``attempt`` (1-based) before the next one."""
        base = self._nominal(attempt)
        if isinstance(self.backoff, tuple) or not base:
            return base
        # Jitter spreads the retries of tasks that failed together (same outage).
        return base * (1 + random.random() / 10)

    def should_retry(self, attempt: int, exc: BaseException) -> bool:
        """Whether failed ``attempt`` is followed by another one."""
        return attempt <= self.retries and isinstance(exc, self.retry_on)

    def budget(self) -> float | None:
        """Worst-case seconds for all attempts and waits (None when unbounded)."""
        if self.timeout is None:
            return None
        waits = sum(self._nominal(i) * 1.1 for i in range(1, self.retries + 1))
        return self.timeout * (self.retries + 1) + waits


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished task: its JSON value, or the remote exception's type, message, traceback."""

    ok: bool
    value: Any = None
    exc_type: str = ""
    message: str | None = None
    traceback: str | None = None


def describe_exception(exc: BaseException) -> Outcome:
    """A failed :class:`Outcome` for ``exc`` (type name, message, formatted traceback)."""
    return Outcome(
        ok=False,
        exc_type=type(exc).__name__,
        message=str(exc) or None,
        traceback="".join(traceback.format_exception(exc)),
    )


def _find_unserialisable(value: Any, path: str) -> tuple[str, str] | None:
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, "non-finite float")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_unserialisable(item, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (f"{path} key", type(key).__name__)
            found = _find_unserialisable(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return (path, type(value).__name__)


def dumps(value: Any, *, what: str) -> str:
    """Strict JSON (no NaN, string keys only); the error names the path and type, not the value."""
    found = _find_unserialisable(value, what)
    if found is not None:
        where, kind = found
        raise TaskArgumentsError(
            f"{where} is not JSON-serialisable ({kind}); pass plain JSON values "
            "(str, int, float, bool, None, list, dict with str keys)"
        )
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def build_envelope(
    name: str, module: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON-safe message for one task run: arguments, correlation id and trace context.

    Arguments go through a JSON round trip here so that every backend, the in-process
    one included, hands the task exactly what a remote worker would receive.
    """
    encoded = dumps({"args": list(args), "kwargs": dict(kwargs)}, what=f"task {name!r} arguments")
    body: dict[str, Any] = json.loads(encoded)
    envelope: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "task": name,
        "module": module,
        "args": body["args"],
        "kwargs": body["kwargs"],
        "cid": correlation_id_var.get(),
    }
    carrier = _trace_carrier()
    if carrier:
        envelope["trace"] = carrier
    return envelope


def _trace_carrier() -> dict[str, str]:
    # Only when the application already uses OpenTelemetry: importing it here would
    # pull an optional dependency into every enqueue.
    if "opentelemetry.propagate" not in sys.modules:
        return {}
    propagate = sys.modules["opentelemetry.propagate"]
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def task_context(envelope: Mapping[str, Any]) -> Iterator[None]:
    """Set the correlation id (and trace context, when sent) while a task runs."""
    cid = envelope.get("cid")
    token = correlation_id_var.set(cid if isinstance(cid, str) else None)
    detach: Callable[[], None] | None = None
    carrier = envelope.get("trace")
    if isinstance(carrier, dict) and carrier:
        detach = _attach_trace(carrier)
    try:
        yield
    finally:
        if detach is not None:
            detach()
        correlation_id_var.reset(token)


def _attach_trace(carrier: dict[str, Any]) -> Callable[[], None] | None:
    try:
        propagate = importlib.import_module("opentelemetry.propagate")
        otel_context = importlib.import_module("opentelemetry.context")
    except ImportError:
        return None
    token = otel_context.attach(propagate.extract(carrier))
    return lambda: otel_context.detach(token)


def _call_with_timeout(fn: Callable[..., Any], args: Any, kwargs: Any, timeout: float) -> Any:
    # A thread cannot be killed: past the timeout the attempt counts as failed and the
    # call is abandoned (it finishes in the background). Documented in docs/task_queue.md.
    box: dict[str, Any] = {}
    done = threading.Event()
    cid = correlation_id_var.get()

    def target() -> None:
        correlation_id_var.set(cid)
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="gennet-task-attempt", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"task attempt exceeded its {timeout:g} s timeout")
    if "error" in box:
        raise box["error"]
    return box["value"]


def run_attempts_sync(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    policy: RetryPolicy,
    on_retry: RetryHook | None = None,
) -> Any:
    """Run ``fn`` (sync or async) until it succeeds or the policy gives up, in this thread."""
    attempt = 0
    while True:
        attempt += 1
        try:
            if inspect.iscoroutinefunction(fn):
                return asyncio.run(_one_async_attempt(fn, args, kwargs, policy.timeout))
            if policy.timeout is not None:
                return _call_with_timeout(fn, args, kwargs, policy.timeout)
            return fn(*args, **kwargs)
        except Exception as exc:
            if not policy.should_retry(attempt, exc):
                raise
            wait = policy.delay(attempt)
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            time.sleep(wait)


async def _one_async_attempt(
    fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], limit: float | None
) -> Any:
    if limit is None:
        return await fn(*args, **kwargs)
    try:
        return await asyncio.wait_for(fn(*args, **kwargs), limit)
    except TimeoutError:
        raise TimeoutError(f"task attempt exceeded its {limit:g} s timeout") from None


async def run_attempts_async(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    policy: RetryPolicy,
    on_retry: RetryHook | None = None,
) -> Any:
    """Await async ``fn`` until it succeeds or the policy gives up, on the running loop."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await _one_async_attempt(fn, args, kwargs, policy.timeout)
        except Exception as exc:
            if not policy.should_retry(attempt, exc):
                raise
            wait = policy.delay(attempt)
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            await asyncio.sleep(wait)
