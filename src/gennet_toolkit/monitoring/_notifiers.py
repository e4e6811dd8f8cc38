"""Notifiers and the queues that keep them away from request handling."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from gennet_toolkit._env import env_float, env_str
from gennet_toolkit._optional import require
from gennet_toolkit.exceptions import ConfigurationError

__all__ = ()

logger = logging.getLogger("gennet_toolkit.monitoring")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class AlertEvent:
    """A notification: an alert started firing or was resolved.

    Times are the monitor clock's seconds (wall-clock epoch seconds by default).
    """

    alertname: str
    status: str  # "firing" | "resolved"
    severity: str
    value: float
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    expr: str
    active_at: float | None
    fired_at: float | None
    resolved_at: float | None
    at: float
    monitor: str = "gennet"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, in the shape of one Alertmanager webhook alert plus our fields."""
        return {
            "status": self.status,
            "labels": {"alertname": self.alertname, **self.labels},
            "annotations": dict(self.annotations),
            "startsAt": _iso(self.fired_at),
            "endsAt": _iso(self.resolved_at),
            "value": self.value if self.value == self.value else None,  # NaN is not JSON
            "expr": self.expr,
            "monitor": self.monitor,
        }


@runtime_checkable
class Notifier(Protocol):
    """Anything with ``async send(event)``; raising or hanging never reaches the monitor."""

    async def send(self, event: AlertEvent) -> None:
        """Deliver one notification."""


class LogNotifier:
    """Logs each notification: WARNING when firing (ERROR for ``page``), INFO when resolved.

    ::

        Monitor(notifiers=[LogNotifier()])
    """

    def __init__(self, logger_name: str = "gennet_toolkit.monitoring.alerts") -> None:
        self._logger = logging.getLogger(logger_name)

    async def send(self, event: AlertEvent) -> None:
        """Write one log record with the event's fields in ``extra``."""
        if event.status == "resolved":
            level = logging.INFO
        elif event.severity in ("page", "critical"):
            level = logging.ERROR
        else:
            level = logging.WARNING
        self._logger.log(
            level,
            "alert %s %s (severity=%s, value=%s)",
            event.alertname,
            event.status,
            event.severity,
            event.value,
            extra={"alert": event.to_dict()},
        )

    def __repr__(self) -> str:
        return f"LogNotifier({self._logger.name!r})"


class CallbackNotifier:
    """Calls your function with each :class:`AlertEvent`; sync functions run in a thread.

    ::

        Monitor(notifiers=[CallbackNotifier(events.append)])
    """

    def __init__(self, callback: Callable[[AlertEvent], Any]) -> None:
        if not callable(callback):
            raise ConfigurationError("CallbackNotifier needs a callable")
        self._callback = callback
        self._is_async = inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
            getattr(callback, "__call__", None)  # noqa: B004 - async callable objects
        )

    async def send(self, event: AlertEvent) -> None:
        """Call the callback (a sync one in a worker thread, so it cannot stall the loop)."""
        if self._is_async:
            await self._callback(event)
            return
        result = await asyncio.to_thread(self._callback, event)
        if inspect.isawaitable(result):
            await result

    def __repr__(self) -> str:
        return f"CallbackNotifier({getattr(self._callback, '__qualname__', self._callback)!r})"


class _Poster(Protocol):
    def post(self, url: str, *, json: Any, headers: Mapping[str, str]) -> Awaitable[Any]: ...


class WebhookNotifier:
    """POSTs each event as JSON (Alertmanager webhook shape) to ``url``.

    ::

        WebhookNotifier("https://hooks.example.org/alerts", headers={"Authorization": "…"})

    Uses ``httpx`` (extra ``http``) imported on first send, or the ``client`` you pass
    (anything with ``async post(url, json=, headers=)``, such as ``httpx.AsyncClient``).
    A non-2xx answer counts as a failure. The URL's credentials and query never appear in
    logs or ``repr``.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        client: _Poster | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("WebhookNotifier url must be an absolute http(s) URL")
        if not timeout > 0:
            raise ConfigurationError("WebhookNotifier timeout must be > 0 seconds")
        self.url = url
        self.timeout = float(timeout)
        self._headers = dict(headers or {})
        self._client = client
        self._owns_client = client is None
        port = f":{parts.port}" if parts.port else ""
        self._safe_url = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"

    @classmethod
    def from_env(cls, prefix: str = "GENNET_") -> WebhookNotifier:
        """From ``{prefix}MONITOR_WEBHOOK_URL`` and ``{prefix}MONITOR_WEBHOOK_TIMEOUT``."""
        url = env_str(f"{prefix}MONITOR_WEBHOOK_URL")
        if url is None:
            raise ConfigurationError(f"{prefix}MONITOR_WEBHOOK_URL is not set")
        timeout = env_float(f"{prefix}MONITOR_WEBHOOK_TIMEOUT", 5.0)
        return cls(url, timeout=timeout)

    async def send(self, event: AlertEvent) -> None:
        """POST the event; raises on a transport error or a non-2xx status."""
        client = self._client
        if client is None:
            httpx = require("httpx", extra="http", feature="gennet_toolkit.monitoring webhooks")
            client = self._client = httpx.AsyncClient(timeout=self.timeout)
        payload = {
            "version": "4",
            "status": event.status,
            "receiver": event.monitor,
            "groupLabels": {"alertname": event.alertname},
            "commonLabels": {"alertname": event.alertname, **event.labels},
            "commonAnnotations": dict(event.annotations),
            "alerts": [event.to_dict()],
        }
        response = await client.post(self.url, json=payload, headers=self._headers)
        status = getattr(response, "status_code", 200)
        if not 200 <= status < 300:
            raise RuntimeError(f"webhook {self._safe_url} answered HTTP {status}")

    async def aclose(self) -> None:
        """Close the client this notifier created (not one you passed in)."""
        if not self._owns_client:
            return
        client, self._client = self._client, None
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()

    def __repr__(self) -> str:
        return f"WebhookNotifier({self._safe_url!r})"


class _Channel:
    """One notifier's bounded queue and worker: a slow notifier delays only itself."""

    def __init__(self, notifier: Notifier, *, maxsize: int, timeout: float) -> None:
        self.notifier = notifier
        self.timeout = timeout
        self.queue: collections.deque[AlertEvent] = collections.deque()
        self.maxsize = maxsize
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self._failing = False
        self._overflowing = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self._busy = False

    def put(self, event: AlertEvent) -> None:
        if len(self.queue) >= self.maxsize:
            # Keep the newest: a resolved event matters more than an old firing one.
            self.queue.popleft()
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                logger.warning(
                    "monitoring: notifier %r is behind; dropping its oldest notifications",
                    self.notifier,
                )
        elif self._overflowing and len(self.queue) < self.maxsize // 2:
            self._overflowing = False
        self.queue.append(event)
        self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:  # evaluate() called from another thread (a sync endpoint, a test)
            loop.call_soon_threadsafe(wake.set)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.task = asyncio.create_task(
            self._run(), name=f"gennet-monitor-notify-{self.notifier!r}"
        )
        if self.queue:
            self._wake.set()

    @property
    def idle(self) -> bool:
        return not self.queue and not self._busy

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                event = self.queue.popleft()
                self._busy = True
                try:
                    await self._deliver(event)
                finally:
                    self._busy = False

    async def _deliver(self, event: AlertEvent) -> None:
        try:
            await asyncio.wait_for(self.notifier.send(event), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a notifier's failure must never reach the evaluator
            self.failed += 1
            if not self._failing:  # once per incident, then quiet until it recovers
                self._failing = True
                reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
                logger.warning(
                    "monitoring: notifier %r failed (%s); further failures are not logged "
                    "until it recovers",
                    self.notifier,
                    reason,
                    exc_info=not isinstance(exc, TimeoutError),
                )
            return
        self.delivered += 1
        if self._failing:
            self._failing = False
            logger.info("monitoring: notifier %r recovered", self.notifier)

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop = self._wake = None
        close = getattr(self.notifier, "aclose", None)
        if close is not None:
            await close()
