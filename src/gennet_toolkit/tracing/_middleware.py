"""``TracingMiddleware``: one SERVER span per HTTP request, W3C context in, route-named."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any

from gennet_toolkit._env import env_list
from gennet_toolkit._routes import RouteResolver
from gennet_toolkit._routes import route_template as _route_template
from gennet_toolkit._version import __version__
from gennet_toolkit.tracing._propagation import context_from_headers, load_otel
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["TracingMiddleware", "route_template"]

INSTRUMENTATION_NAME = "gennet_toolkit.tracing"
_CACHE_SIZE = 256

# Semantic conventions for HTTP spans (stable since 1.23); unknown methods are "_OTHER".
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)


def _split_host(value: str) -> tuple[str, int | None]:
    if value.startswith("["):  # IPv6 literal: "[::1]:8000"
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    return host, int(port) if port.isdigit() and len(port) <= 5 else None


def route_template(scope: Scope, routes: Iterable[Any] = (), root_path: str = "") -> str | None:
    """The matched route template (``/items/{item_id}``) read from the scope after the call.

    Starlette and FastAPI leave the matched route in ``scope["route"]`` (FastAPI's
    ``include_router`` prefixes in ``scope["fastapi"]``); routes inside a ``Mount`` are
    relative to it, so the mount prefix is recovered from ``root_path`` (the part below
    the ``root_path`` given here) and turned back into its template (``/tenants/{tid}``),
    never the raw value. ``routes`` are the app's routes (default: the scope's router).
    A request that ended at a mount is named ``/mount/{path}``; convertors are dropped.
    """
    return _route_template(
        scope,
        root_path=root_path,
        routes=list(routes) or None,
        mount_misses=True,
        formatted=True,
    )


class _Exclusions:
    """Exact paths, and prefixes written with a trailing ``/``."""

    __slots__ = ("exact", "prefixes")

    def __init__(self, paths: Iterable[str]) -> None:
        items = list(paths)
        for p in items:
            if not p.startswith("/"):
                raise ValueError(f"exclude_paths entries must start with '/': {p!r}")
        self.exact = frozenset(p for p in items if not p.endswith("/") or p == "/")
        self.prefixes = tuple(p for p in items if p.endswith("/") and p != "/")

    def __call__(self, path: str) -> bool:
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))


class TracingMiddleware:
    """Pure ASGI middleware: a SERVER span per HTTP request.

    * The parent comes from ``traceparent``/``tracestate``, parsed by our own W3C Trace
      Context Level 2 parser; an invalid or duplicated ``traceparent`` restarts the trace.
    * The span is named ``"GET /items/{item_id}"`` from the matched route template
      (``"GET"`` alone when nothing matched), so names stay low-cardinality.
    * 5xx responses and exceptions set the ERROR status (exceptions also become span
      events and are re-raised); 4xx does not, as the semantic conventions ask.
    * No spans for individual ``send``/``receive`` events.
    * ``exclude_paths``: ``"/health"`` matches exactly that path; an entry ending in
      ``/`` such as ``"/static/"`` matches every path under it.

    ``tracer_provider=None`` uses the global provider (set by :func:`setup_tracing`);
    with only opentelemetry-api installed, spans are no-ops and the incoming context
    is still available to outgoing calls.

        app = TracingMiddleware(app, tracer_provider=provider, exclude_paths=["/health"])
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer_provider: TracerProvider | None = None,
        exclude_paths: Iterable[str] = (),
    ) -> None:
        load_otel()
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.app = app
        exclusions = _Exclusions(exclude_paths)
        self._excluded = exclusions if exclusions.exact or exclusions.prefixes else None
        self._hosts: dict[str, tuple[str, int | None]] = {}
        self._names: dict[tuple[str, str], str] = {}
        # Named after the mount when a request ended there, as the span name must stay
        # low-cardinality and "GET /files/{path}" says more than "GET".
        self._routes = RouteResolver(app, mount_misses=True, formatted=True)
        self._tracer = trace.get_tracer(
            INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        self._empty = context.Context()
        self._attach = context.attach
        self._detach = context.detach
        self._set_span = trace.set_span_in_context
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)
        self._status_cls = Status
        self._error_code = StatusCode.ERROR

    @classmethod
    def from_env(
        cls,
        app: ASGIApp,
        prefix: str = "GENNET_",
        *,
        tracer_provider: TracerProvider | None = None,
    ) -> TracingMiddleware:
        """Build from ``{prefix}TRACING_EXCLUDE_PATHS`` (comma-separated paths)."""
        paths = env_list(f"{prefix}TRACING_EXCLUDE_PATHS", [])
        return cls(app, tracer_provider=tracer_provider, exclude_paths=paths)

    def _start_attributes(
        self, scope: Scope, method: str, host: str | None, agent: str | None
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
        }
        if method == "_OTHER":
            attrs["http.request.method_original"] = scope.get("method", "")
        version = scope.get("http_version")
        if version:
            attrs["network.protocol.version"] = version
        if host:
            split = self._hosts.get(host)
            if split is None:
                split = _split_host(host)
                if len(self._hosts) < _CACHE_SIZE:  # Host is client input: bounded cache
                    self._hosts[host] = split
            attrs["server.address"] = split[0]
            if split[1] is not None:
                attrs["server.port"] = split[1]
        elif server := scope.get("server"):
            attrs["server.address"] = server[0]
            if server[1] is not None:
                attrs["server.port"] = server[1]
        client = scope.get("client")
        if client:
            attrs["client.address"] = client[0]
            if client[1] is not None:
                attrs["client.port"] = client[1]
        if agent is not None:
            attrs["user_agent.original"] = agent
        return attrs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self._excluded is not None and self._excluded(scope["path"])
        ):
            await self.app(scope, receive, send)
            return

        traceparent: list[str] = []
        tracestate: list[str] = []
        host: str | None = None
        agent: str | None = None
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.lower()
            if name == b"traceparent":
                traceparent.append(raw_value.decode("latin-1"))
            elif name == b"tracestate":
                tracestate.append(raw_value.decode("latin-1"))
            elif name == b"host":
                host = raw_value.decode("latin-1")
            elif name == b"user-agent":
                agent = raw_value.decode("latin-1")

        parent = (
            context_from_headers(traceparent, tracestate) if traceparent else None
        ) or self._empty
        raw_method = scope.get("method", "GET")
        method = raw_method if raw_method in _KNOWN_METHODS else "_OTHER"
        path = scope["path"]
        root_path = scope.get("root_path", "")
        span = self._tracer.start_span(
            method if method != "_OTHER" else "HTTP",
            context=parent,
            kind=self._server,
            attributes=self._start_attributes(scope, method, host, agent),
        )
        token = self._attach(self._set_span(span, parent))
        status_code: int | None = None

        # A plain function returning send's awaitable: ``await send_wrapper(m)`` behaves
        # the same, minus a coroutine per message.
        def send_wrapper(message: Message) -> Awaitable[None]:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            return send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            span.record_exception(exc)
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(self._status_cls(self._error_code, type(exc).__qualname__))
            raise
        finally:
            # One set_attributes call: each SDK call takes the span's lock.
            attrs: dict[str, Any] = {}
            template = self._routes.resolve(scope, path, root_path)
            if template is not None:
                attrs["http.route"] = template
                span.update_name(self._span_name(method, template))
            if status_code is not None:
                attrs["http.response.status_code"] = status_code
                if status_code >= 500:
                    attrs["error.type"] = str(status_code)
                    span.set_status(self._error)
            if attrs:
                span.set_attributes(attrs)
            span.end()
            self._detach(token)

    def _span_name(self, method: str, template: str) -> str:
        key = (method, template)
        name = self._names.get(key)
        if name is None:
            name = f"{method if method != '_OTHER' else 'HTTP'} {template}"
            # Templates come from the app's routes, but stay bounded all the same.
            if len(self._names) < _CACHE_SIZE:
                self._names[key] = name
        return name
