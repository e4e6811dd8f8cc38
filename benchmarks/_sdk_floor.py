"""The least any tracing middleware must ask of the OpenTelemetry SDK for one request.

``SdkFloorMiddleware`` reads nothing from the request: its span attributes are a
prebuilt dict (the same keys and values ``TracingMiddleware`` sets for the benchmark
request), the parent comes from one fixed ``traceparent``, and the route and status are
constants. What is left is the SDK's own work: parent context, ``start_span`` with the
attributes, ``attach``, one ``set_attributes`` and ``update_name`` after the response,
``end`` (which runs the span processor and exporter) and ``detach``. No real middleware
can cost less with the same provider, so it measures the part of our tracing overhead
that is not ours to cut.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from gennet_toolkit.tracing._propagation import context_from_headers

__all__ = ["SdkFloorMiddleware"]

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
START_ATTRIBUTES = {
    "http.request.method": "GET",
    "url.path": "/items/42",
    "url.scheme": "http",
    "network.protocol.version": "1.1",
    "server.address": "api.example.org",
    "client.address": "127.0.0.1",
    "client.port": 50000,
    "user_agent.original": "bench/1.0",
}
END_ATTRIBUTES = {"http.route": "/items/{item_id}", "http.response.status_code": 200}


class SdkFloorMiddleware:
    """Only the SDK calls a SERVER span needs; every request value is a constant."""

    def __init__(self, app: Any, *, tracer_provider: Any) -> None:
        self.app = app
        self._tracer = trace.get_tracer("sdk-floor", "1", tracer_provider=tracer_provider)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        parent = context_from_headers([TRACEPARENT], [])
        span = self._tracer.start_span(
            "GET", context=parent, kind=SpanKind.SERVER, attributes=START_ATTRIBUTES
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send)
        finally:
            span.set_attributes(END_ATTRIBUTES)
            span.update_name("GET /items/{item_id}")
            span.end()
            otel_context.detach(token)
