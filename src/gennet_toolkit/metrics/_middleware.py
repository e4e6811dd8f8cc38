"""``PrometheusMiddleware``: RED metrics per route template, pure ASGI."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from gennet_toolkit._env import env_bool, env_list, env_str
from gennet_toolkit._routes import RouteResolver, route_path
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.metrics._registry import (
    default_registry,
    get_or_create,
    multiprocess_dir,
    prometheus,
)
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["DEFAULT_BUCKETS", "METHODS", "UNMATCHED", "PrometheusMiddleware"]

#: Latency buckets (seconds): prometheus_client's defaults, 5 ms to 10 s.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
#: Methods kept as label values; anything else is counted as ``OTHER``.
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
#: Route label of requests no route matched (404s, redirects, scanners' paths).
UNMATCHED = "<unmatched>"

_STATUS = {code: str(code) for code in range(100, 600)}
_GROUPED = {code: f"{code // 100}xx" for code in range(100, 600)}
_CLIENT_CLOSED = 499  # nginx's "client closed request": the server cancelled the task


class _Series:
    """The metric children of one label combination, looked up once and reused."""

    __slots__ = ("duration", "request_size", "requests", "response_size", "ttfb")

    def __init__(self, requests: Any, duration: Any, ttfb: Any, req: Any, resp: Any) -> None:
        self.requests = requests
        self.duration = duration
        self.ttfb = ttfb
        self.request_size = req
        self.response_size = resp


class PrometheusMiddleware:
    """Count, time and size every HTTP request, labelled by method, route template and status.

    Metrics (``prefix`` defaults to ``http``)::

        http_requests_total{method,route,status}            counter
        http_request_duration_seconds{method,route}         histogram, until the response
                                                            body was handed over (streaming
                                                            and background tasks excluded)
        http_request_ttfb_seconds{method,route}             histogram, until response start
        http_requests_in_progress{method}                   gauge (livesum in multiprocess)
        http_request_size_bytes{method,route}               summary of body bytes received
        http_response_size_bytes{method,route}              summary of body bytes sent

    ``route`` is the route template (``/genes/{symbol}``), ``UNMATCHED`` when no route
    matched, so label cardinality is bounded by the app's routes whatever paths clients
    send. ``registry`` defaults to prometheus_client's global ``REGISTRY``; metrics are
    created once per registry, so Starlette rebuilding its middleware stack or two apps
    sharing a registry never raises "Duplicated timeseries".

        app.add_middleware(PrometheusMiddleware, exclude_paths=["/metrics", "/health"])
        app.mount("/metrics", metrics_app())
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: CollectorRegistry | None = None,
        exclude_paths: Iterable[str] = ("/metrics",),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        ttfb_buckets: Sequence[float] | None = None,
        prefix: str = "http",
        group_status_codes: bool = False,
        unmatched_label: str = UNMATCHED,
        exemplars: bool = True,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        prom = prometheus()
        self.app = app
        self.registry = default_registry(registry)
        self._exact, self._prefixes = _exclusions(exclude_paths)
        self._timer = timer
        self._status = _GROUPED if group_status_codes else _STATUS
        self._resolver = RouteResolver(app)
        self._unmatched = unmatched_label
        multiprocess = multiprocess_dir() is not None
        # prometheus_client cannot store exemplars in multiprocess files.
        self._exemplars = exemplars and not multiprocess
        buckets = _check_buckets(buckets, "buckets")
        ttfb = _check_buckets(ttfb_buckets, "ttfb_buckets") if ttfb_buckets else buckets
        route_labels = ("method", "route")
        reg, p = self.registry, prefix
        self._requests = get_or_create(
            prom.Counter, reg, f"{p}_requests_total", "HTTP requests handled, by route template.",
            (*route_labels, "status"),
        )  # fmt: skip
        self._duration = get_or_create(
            prom.Histogram, reg, f"{p}_request_duration_seconds",
            "Time until the response body was handed over (streaming and background excluded).",
            route_labels, buckets=buckets,
        )  # fmt: skip
        self._ttfb = get_or_create(
            prom.Histogram, reg, f"{p}_request_ttfb_seconds",
            "Time until the response started (status and headers sent).",
            route_labels, buckets=ttfb,
        )  # fmt: skip
        self._request_size = get_or_create(
            prom.Summary, reg, f"{p}_request_size_bytes", "Request body bytes received.",
            route_labels,
        )  # fmt: skip
        self._response_size = get_or_create(
            prom.Summary, reg, f"{p}_response_size_bytes", "Response body bytes sent.",
            route_labels,
        )  # fmt: skip
        in_progress = get_or_create(
            prom.Gauge, reg, f"{p}_requests_in_progress", "HTTP requests being handled now.",
            ("method",), multiprocess_mode="livesum",
        )  # fmt: skip
        self._in_progress = {m: in_progress.labels(m) for m in (*METHODS, "OTHER")}
        # Children per label combination: bounded because every label is.
        self._series: dict[tuple[str, str, str], _Series] = {}

    @classmethod
    def from_env(
        cls, app: ASGIApp, *, prefix: str = "GENNET_", **overrides: Any
    ) -> PrometheusMiddleware:
        """Build from ``{prefix}METRICS_*`` variables; keyword ``overrides`` win.

        ``METRICS_EXCLUDE_PATHS`` (comma-separated), ``METRICS_BUCKETS`` (comma-separated
        seconds), ``METRICS_PREFIX``, ``METRICS_GROUP_STATUS_CODES`` and
        ``METRICS_EXEMPLARS`` (true/false).
        """
        p = f"{prefix}METRICS_"
        options: dict[str, Any] = {}
        if (paths := env_list(p + "EXCLUDE_PATHS")) is not None:
            options["exclude_paths"] = paths
        if (buckets := env_list(p + "BUCKETS")) is not None:
            try:
                options["buckets"] = [float(b) for b in buckets]
            except ValueError:
                raise ConfigurationError(f"{p}BUCKETS must be numbers") from None
        if (metric_prefix := env_str(p + "PREFIX")) is not None:
            options["prefix"] = metric_prefix
        for name in ("group_status_codes", "exemplars"):
            if (flag := env_bool(p + name.upper())) is not None:
                options[name] = flag
        options.update(overrides)
        return cls(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection; non-HTTP scopes and excluded paths pass straight through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        below_root = route_path(path, root_path)
        if below_root in self._exact or below_root.startswith(self._prefixes):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        if method not in METHODS:
            method = "OTHER"
        timer = self._timer
        gauge = self._in_progress[method]
        status = 0
        started = 0.0  # when the app sent http.response.start
        handed_over = 0.0  # when the first body message was sent
        received = 0
        sent = 0

        async def receive_counting() -> Message:
            nonlocal received
            message = await receive()
            body = message.get("body")
            if body:
                received += len(body)
            return message

        async def send_observing(message: Message) -> None:
            nonlocal status, started, handed_over, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])  # HTTPStatus and friends become plain ints
                started = timer()
            else:
                body = message.get("body")
                if body:
                    sent += len(body)
                if not handed_over:
                    await send(message)
                    handed_over = timer()
                    return
            await send(message)

        gauge.inc()
        begin = timer()
        try:
            await self.app(scope, receive_counting, send_observing)
        except asyncio.CancelledError:
            status = status or _CLIENT_CLOSED
            raise
        except BaseException:
            # Counted as the 500 the server will answer, then re-raised: the error
            # handler or the server, not the metrics layer, decides the response.
            status = status or 500
            raise
        finally:
            # The clock is read only when no body was handed over (one call fewer).
            duration = (handed_over or timer()) - begin
            gauge.dec()
            route = self._resolver.resolve(scope, path, root_path) or self._unmatched
            status = status or 500  # an app that never answered gets the server's 500
            key = (method, route, self._status.get(status) or str(status))
            series = self._series.get(key) or self._new_series(key)
            if self._exemplars and (exemplar := _trace_exemplar()) is not None:
                series.requests.inc(1, exemplar)
                series.duration.observe(duration, exemplar)
            else:
                series.requests.inc(1)
                series.duration.observe(duration)
            if started:
                series.ttfb.observe(started - begin)
            series.request_size.observe(received)
            series.response_size.observe(sent)

    def _new_series(self, key: tuple[str, str, str]) -> _Series:
        method, route, status = key
        series = _Series(
            self._requests.labels(method, route, status),
            self._duration.labels(method, route),
            self._ttfb.labels(method, route),
            self._request_size.labels(method, route),
            self._response_size.labels(method, route),
        )
        self._series[key] = series
        return series


def _trace_exemplar() -> dict[str, str] | None:
    # Only when the app already imported OpenTelemetry: never import it here, and a
    # span can only be active if it was imported.
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


def _exclusions(paths: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Each entry excludes itself and what lies below it: ``/health`` is not ``/healthcare``."""
    if isinstance(paths, str):
        raise ConfigurationError("exclude_paths must be a list of paths, not one string")
    exact: set[str] = set()
    prefixes: list[str] = []
    for raw in paths:
        if not raw.startswith("/"):
            raise ConfigurationError(f"exclude_paths entries start with '/': {raw!r}")
        entry = raw.rstrip("/") or "/"
        exact.add(entry)
        prefixes.append(entry if entry == "/" else entry + "/")
    return frozenset(exact), tuple(prefixes)


def _check_buckets(buckets: Sequence[float], name: str) -> list[float]:
    values = [float(b) for b in buckets]
    if not values or any(b <= a for a, b in itertools.pairwise(values)):
        raise ConfigurationError(f"{name} must be a non-empty increasing sequence")
    return values
