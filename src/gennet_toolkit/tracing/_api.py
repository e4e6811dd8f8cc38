"""``@traced``, outbound propagation, ``setup_tracing`` and the current-id helpers."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from gennet_toolkit._env import env_str
from gennet_toolkit._version import __version__
from gennet_toolkit.tracing._middleware import INSTRUMENTATION_NAME
from gennet_toolkit.tracing._propagation import load_otel, write_headers

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Span, SpanContext, Tracer, TracerProvider

__all__ = [
    "ClientSpan",
    "client_span",
    "current_span_id",
    "current_trace_id",
    "inject_headers",
    "setup_tracing",
    "traced",
]

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound=MutableMapping[str, str])

logger = logging.getLogger("gennet_toolkit.tracing")

DEFAULT_CORRELATION_HEADER = "X-Request-ID"

# The CLIENT span opened by ``client_span``, so inject_headers inside it reuses its id.
_open_client_span: ContextVar[Any] = ContextVar("gennet_tracing_client_span", default=None)


def _tracer(provider: TracerProvider | None) -> Tracer:
    from opentelemetry import trace

    return trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider=provider)


@functools.cache
def _global_tracer() -> Tracer:
    # A ProxyTracer: it follows a global provider that is set after this call.
    return _tracer(None)


def _current_context() -> SpanContext | None:
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None:
        return None  # never imported, so no span can be active
    span_context: SpanContext = otel.get_current_span().get_span_context()
    return span_context if span_context.is_valid else None


def current_trace_id() -> str | None:
    """The active trace id as 32 lower-case hex characters, or ``None`` outside a trace.

    Cheap enough for a logging filter; returns ``None`` without importing
    OpenTelemetry when nothing imported it yet.
    """
    ctx = _current_context()
    return None if ctx is None else f"{ctx.trace_id:032x}"


def current_span_id() -> str | None:
    """The active span id as 16 lower-case hex characters, or ``None`` outside a trace."""
    ctx = _current_context()
    return None if ctx is None else f"{ctx.span_id:016x}"


def _client_attributes(method: str | None, url: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if method:
        attrs["http.request.method"] = method.upper()
    if url:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        # Credentials in the URL never reach the span.
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        attrs["url.full"] = parts._replace(netloc=netloc).geturl()
        if parts.hostname:
            attrs["server.address"] = parts.hostname
        if parts.port is not None:
            attrs["server.port"] = parts.port
    return attrs


class ClientSpan:
    """A CLIENT span around one outgoing call; see :func:`client_span`.

    Usable with ``with`` and ``async with``. ``headers`` carries ``traceparent``,
    ``tracestate`` and the correlation id once entered.
    """

    def __init__(
        self,
        name: str | None,
        *,
        method: str | None,
        url: str | None,
        headers: MutableMapping[str, str] | None,
        tracer_provider: TracerProvider | None,
        correlation_header: str | None,
    ) -> None:
        load_otel()
        self.headers: MutableMapping[str, str] = {} if headers is None else headers
        self._name = name or (method.upper() if method else "HTTP")
        self._attributes = _client_attributes(method, url)
        self._tracer = _global_tracer() if tracer_provider is None else _tracer(tracer_provider)
        self._correlation_header = correlation_header
        self._span: Span | None = None
        self._tokens: tuple[Any, Any] | None = None

    @property
    def span(self) -> Span:
        """The OpenTelemetry span (available once entered)."""
        if self._span is None:
            raise RuntimeError("ClientSpan.span is only available inside the with block")
        return self._span

    def set_response(self, status_code: int) -> None:
        """Record the response status; for a client span 4xx and 5xx are errors."""
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("http.response.status_code", status_code)
        if status_code >= 400:
            self.span.set_attribute("error.type", str(status_code))
            self.span.set_status(Status(StatusCode.ERROR))

    def __enter__(self) -> MutableMapping[str, str]:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind

        span = self._tracer.start_span(
            self._name, kind=SpanKind.CLIENT, attributes=self._attributes
        )
        self._span = span
        self._tokens = (
            context.attach(trace.set_span_in_context(span)),
            _open_client_span.set(span),
        )
        write_headers(
            self.headers,
            span.get_span_context(),
            correlation_header=self._correlation_header,
        )
        return self.headers

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        if isinstance(exc, Exception):
            span.record_exception(exc)
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
        span.end()
        if self._tokens is not None:
            attach_token, var_token = self._tokens
            _open_client_span.reset(var_token)
            context.detach(attach_token)
            self._tokens = None

    async def __aenter__(self) -> MutableMapping[str, str]:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def client_span(
    name: str | None = None,
    *,
    method: str | None = None,
    url: str | None = None,
    headers: MutableMapping[str, str] | None = None,
    tracer_provider: TracerProvider | None = None,
    correlation_header: str | None = DEFAULT_CORRELATION_HEADER,
) -> ClientSpan:
    """A CLIENT span that stays open for the duration of one outgoing call.

        async with client_span(method="GET", url=url) as headers:
            response = await client.get(url, headers=headers)

    The yielded headers hold a fresh ``traceparent`` naming this span; an exception
    inside the block is recorded on the span and re-raised.
    """
    return ClientSpan(
        name,
        method=method,
        url=url,
        headers=headers,
        tracer_provider=tracer_provider,
        correlation_header=correlation_header,
    )


@overload
def inject_headers(
    headers: None = None,
    *,
    name: str | None = ...,
    method: str | None = ...,
    url: str | None = ...,
    tracer_provider: TracerProvider | None = ...,
    correlation_header: str | None = ...,
) -> dict[str, str]: ...
@overload
def inject_headers(
    headers: dict[str, str],
    *,
    name: str | None = ...,
    method: str | None = ...,
    url: str | None = ...,
    tracer_provider: TracerProvider | None = ...,
    correlation_header: str | None = ...,
) -> dict[str, str]: ...
@overload
def inject_headers(
    headers: H,
    *,
    name: str | None = ...,
    method: str | None = ...,
    url: str | None = ...,
    tracer_provider: TracerProvider | None = ...,
    correlation_header: str | None = ...,
) -> H: ...
def inject_headers(
    headers: MutableMapping[str, str] | None = None,
    *,
    name: str | None = None,
    method: str | None = None,
    url: str | None = None,
    tracer_provider: TracerProvider | None = None,
    correlation_header: str | None = DEFAULT_CORRELATION_HEADER,
) -> MutableMapping[str, str]:
    """Add ``traceparent``, ``tracestate`` and the correlation id to outgoing headers.

    Each call records a CLIENT span (child of the current span) and sends its id, so
    every outgoing call has its own parent-id, as W3C Trace Context requires. That span
    ends at once; to time the call, wrap it in :func:`client_span` instead (inside one,
    this function reuses its span). Returns the headers it was given (a new dict for
    ``None``).

        response = httpx.get(url, headers=inject_headers({}, method="GET", url=url))

    With only opentelemetry-api installed nothing is recorded and the incoming context
    is forwarded unchanged (the spec's forwarding mode).
    """
    load_otel()
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    target: MutableMapping[str, str] = {} if headers is None else headers
    current = trace.get_current_span()
    if current is _open_client_span.get():
        span_context = current.get_span_context()
    else:
        tracer = _global_tracer() if tracer_provider is None else _tracer(tracer_provider)
        span = tracer.start_span(
            name or (method.upper() if method else "HTTP"),
            kind=SpanKind.CLIENT,
            attributes=_client_attributes(method, url),
        )
        span_context = span.get_span_context()
        span.end()
    write_headers(target, span_context, correlation_header=correlation_header)
    return target


def traced(
    name: str | None = None,
    *,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run each call of the decorated function in an INTERNAL span.

        @traced()
        async def load_network(network_id: str) -> Network: ...

        @traced("grn.score", attributes={"grn.model": "boolean"})
        def score(edges: list[Edge]) -> float: ...

    The span is named ``name`` or the function's qualified name; exceptions are
    recorded and set the ERROR status, then propagate unchanged. Works for sync and
    async functions and keeps their signature.
    """
    if callable(name):
        raise TypeError("use @traced() or @traced('span name'), with parentheses")
    attrs = dict(attributes or {})

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError("@traced does not support generator functions")
        span_name = name or func.__qualname__
        tracer_box: list[Tracer] = []

        def tracer() -> Tracer:
            if not tracer_box:
                load_otel()
                tracer_box.append(
                    _global_tracer() if tracer_provider is None else _tracer(tracer_provider)
                )
            return tracer_box[0]

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                with tracer().start_as_current_span(span_name, attributes=attrs):
                    return await func(*args, **kwargs)

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with tracer().start_as_current_span(span_name, attributes=attrs):
                return func(*args, **kwargs)

        return wrapper

    return decorate


def _exporter_named(kind: str) -> SpanExporter | None:
    if kind == "none":
        return None
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind == "otlp":
        for module in (
            "opentelemetry.exporter.otlp.proto.http.trace_exporter",
            "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        ):
            try:
                found = __import__(module, fromlist=["OTLPSpanExporter"])
            except ImportError:
                continue
            return cast("SpanExporter", found.OTLPSpanExporter())
        raise ImportError(
            "setup_tracing(exporter='otlp') needs an OTLP exporter: "
            "pip install opentelemetry-exporter-otlp-proto-http"
        )
    raise ValueError(f"unknown exporter {kind!r}: use 'otlp', 'console', 'none' or an instance")


def setup_tracing(
    service_name: str | None = None,
    *,
    exporter: SpanExporter | str | None = None,
    sampler: Sampler | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    batch: bool = True,
    set_global: bool = True,
) -> SDKTracerProvider | None:
    """Create an SDK ``TracerProvider`` with an exporter; a no-op without the SDK.

    ``exporter``: an exporter instance, or ``"otlp"``, ``"console"``, ``"none"``;
    by default ``$OTEL_TRACES_EXPORTER``, else ``"otlp"`` when an OTLP exporter
    package is installed, else ``"none"``. ``service_name`` defaults to
    ``$OTEL_SERVICE_NAME``. Spans are exported in batches unless ``batch=False``.
    ``set_global=True`` makes it the process-wide provider (OpenTelemetry allows that
    once per process). Returns the provider (call ``shutdown()`` on exit to flush), or
    ``None`` when opentelemetry-sdk is not installed.

        provider = setup_tracing("grn-api", exporter="console")
    """
    load_otel()
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SDKProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        logger.info("opentelemetry-sdk is not installed: tracing stays a no-op")
        return None
    from opentelemetry import trace

    attrs: dict[str, str] = dict(resource_attributes or {})
    if service_name or "service.name" not in attrs:
        attrs["service.name"] = service_name or env_str("OTEL_SERVICE_NAME", "unknown_service")
    provider = SDKProvider(resource=Resource.create(attrs), sampler=sampler)
    if exporter is None or isinstance(exporter, str):
        kind = (exporter or env_str("OTEL_TRACES_EXPORTER", "")).strip().lower()
        if not kind:
            try:
                chosen = _exporter_named("otlp")
            except ImportError:
                chosen = None
        else:
            chosen = _exporter_named(kind)
    else:
        chosen = exporter
    if chosen is not None:
        processor = BatchSpanProcessor(chosen) if batch else SimpleSpanProcessor(chosen)
        provider.add_span_processor(processor)
    if set_global:
        trace.set_tracer_provider(provider)
    return provider
