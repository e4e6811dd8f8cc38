"""The ASGI side: the probe endpoints and the lifespan hook that drives drain state."""

from __future__ import annotations

import logging

from gennet_toolkit._problem import send_problem
from gennet_toolkit._routes import route_path
from gennet_toolkit.exceptions import ConfigurationError, GenNetError, MethodNotAllowed, NotFound
from gennet_toolkit.health_checks._registry import (
    HEALTH_MEDIA_TYPE,
    HealthRegistry,
    HealthReport,
    Probe,
)
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HealthApp", "HealthLifespanMiddleware", "health_app"]

logger = logging.getLogger("gennet_toolkit.health_checks")

_COMMON_HEADERS = [
    (b"content-type", HEALTH_MEDIA_TYPE.encode()),
    # Probes must see the live answer, never a proxy's copy.
    (b"cache-control", b"no-store"),
]


class HealthApp:
    """ASGI app answering ``/live``, ``/ready`` and ``/startup`` with ``application/health+json``.

    Build it with :func:`health_app`. Mount it (``Mount("/health", app=...)``) or serve it
    alone; served alone it also handles the lifespan protocol itself.
    """

    def __init__(
        self,
        registry: HealthRegistry,
        *,
        live_path: str = "/live",
        ready_path: str = "/ready",
        startup_path: str = "/startup",
    ) -> None:
        if not isinstance(registry, HealthRegistry):
            raise ConfigurationError("health_app needs a HealthRegistry")
        routes: dict[str, Probe] = {}
        for path, probe in ((live_path, "live"), (ready_path, "ready"), (startup_path, "startup")):
            if not path.startswith("/"):
                raise ConfigurationError(f"{probe} path must start with '/'")
            routes[_normalise(path)] = probe  # type: ignore[assignment]
        if len(routes) != 3:
            raise ConfigurationError("live, ready and startup paths must differ")
        self.registry = registry
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        path = route_path(scope.get("path", "") or "", scope.get("root_path", "") or "")
        probe = self._routes.get(_normalise(path or "/"))
        if probe is None:
            await _problem(
                scope, send, NotFound("No health endpoint here; try /live, /ready, /startup.")
            )
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _problem(
                scope,
                send,
                MethodNotAllowed(
                    "Health endpoints answer GET and HEAD.", headers={"Allow": "GET, HEAD"}
                ),
            )
            return
        try:
            report = await self.registry.report(probe)
            body = report.to_json()
        except Exception:
            # Checks cannot raise (each is caught), so this is a bug or an unserialisable
            # observedValue: still a health answer (503), never a 500 with a traceback.
            logger.exception("health: building the %s report failed", probe)
            report = self.registry._error_report(probe)
            body = report.to_json()
        await _send(send, report, body, head=method == "HEAD")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.registry._lifespan_startup()
                self.registry._lifespan_started()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.registry.begin_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def health_app(
    registry: HealthRegistry,
    *,
    live_path: str = "/live",
    ready_path: str = "/ready",
    startup_path: str = "/startup",
) -> HealthApp:
    """The ASGI app serving ``registry``'s probes::

    app.mount("/health", health_app(registry))  # /health/live, /health/ready, /health/startup
    """
    return HealthApp(
        registry, live_path=live_path, ready_path=ready_path, startup_path=startup_path
    )


class HealthLifespanMiddleware:
    """Ties a registry to an app's lifespan so probes follow startup and shutdown.

    ``app.add_middleware(HealthLifespanMiddleware, registry=health)`` (Starlette, FastAPI)
    or ``app = HealthLifespanMiddleware(app, registry=health)`` (any ASGI app): the
    probes answer ``starting`` until the app reports ``lifespan.startup.complete``, and
    readiness fails from the moment ``lifespan.shutdown`` arrives. Other scopes pass
    straight through.
    """

    def __init__(self, app: ASGIApp, *, registry: HealthRegistry) -> None:
        if not isinstance(registry, HealthRegistry):
            raise ConfigurationError("HealthLifespanMiddleware needs registry=HealthRegistry(...)")
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        registry = self.registry
        completed = False

        async def receive_hooked() -> Message:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                registry._lifespan_startup()
            elif kind == "lifespan.shutdown":
                # Before the app's own cleanup runs: drain starts first.
                registry.begin_shutdown()
            return message

        async def send_hooked(message: Message) -> None:
            nonlocal completed
            if message.get("type") == "lifespan.startup.complete":
                completed = True
                registry._lifespan_started()
            await send(message)

        try:
            await self.app(scope, receive_hooked, send_hooked)
        finally:
            if not completed:
                # The app does not speak lifespan (or failed to start): stop gating on it.
                registry._lifespan_abandoned()


def _normalise(path: str) -> str:
    return path.rstrip("/") or "/"


async def _send(send: Send, report: HealthReport, body: bytes, *, head: bool) -> None:
    headers = [*_COMMON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": report.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _problem(scope: Scope, send: Send, exc: GenNetError) -> None:
    # The request path is not echoed: 4xx bodies never repeat what the client sent.
    await send_problem(exc, scope, send, instance=None, correlation_id=None)
