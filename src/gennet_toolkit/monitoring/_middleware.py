"""ASGI wrapper: runs the monitor with the app's lifespan and records HTTP requests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.monitoring._monitor import Monitor
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ()


class MonitorMiddleware:
    """Start/stop ``monitor`` with the app's lifespan and count HTTP requests into it.

    ::

        app = MonitorMiddleware(app, monitor=monitor)

    Per request: ``requests_metric`` (counter), ``errors_metric`` (counter, 5xx and
    unhandled exceptions) and ``latency_metric`` (histogram of seconds until the response
    starts, so streaming bodies and background tasks do not count). ``exclude_paths``
    are exact paths, or prefixes when they end with ``/``. If the wrapped app does not
    speak the lifespan protocol, the middleware answers it itself.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        monitor: Monitor,
        record_requests: bool = True,
        manage_lifespan: bool = True,
        requests_metric: str = "http_requests_total",
        errors_metric: str = "http_errors_total",
        latency_metric: str = "http_request_duration_seconds",
        exclude_paths: Iterable[str] = (),
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not isinstance(monitor, Monitor):
            raise ConfigurationError("MonitorMiddleware needs monitor=Monitor(...)")
        self.app = app
        self.monitor = monitor
        self.manage_lifespan = manage_lifespan
        self.record_requests = record_requests
        self._requests = monitor.counter(requests_metric, "HTTP requests")
        self._errors = monitor.counter(errors_metric, "HTTP requests answered 5xx")
        self._latency = monitor.histogram(latency_metric, "Seconds until the response started")
        paths = list(exclude_paths)
        self._exact = frozenset(p for p in paths if not p.endswith("/"))
        self._prefixes = tuple(p for p in paths if p.endswith("/"))
        self._timer = timer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and self.record_requests:
            await self._http(scope, receive, send)
        elif kind == "lifespan" and self.manage_lifespan:
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path in self._exact or (self._prefixes and path.startswith(self._prefixes)):
            await self.app(scope, receive, send)
            return
        start = self._timer()
        recorded = False

        async def send_wrapper(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                self._record(int(message.get("status", 200)), start)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not recorded:  # raised before answering: the server will send a 500
                self._record(500, start)

    def _record(self, status: int, start: float) -> None:
        self._latency.observe(self._timer() - start)
        self._requests.inc()
        if status >= 500:
            self._errors.inc()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        monitor = self.monitor
        received = False

        async def receive_wrapper() -> Message:
            nonlocal received
            received = True
            message = await receive()
            if message["type"] == "lifespan.startup":
                await monitor.start()
            elif message["type"] == "lifespan.shutdown":
                await monitor.stop()
            return message

        try:
            await self.app(scope, receive_wrapper, send)
        except Exception:
            if received:
                raise
            # The app does not do lifespan (a bare ASGI app): speak the protocol for it.
            await self._own_lifespan(receive, send)
        finally:
            await monitor.stop()

    async def _own_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.monitor.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.monitor.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
