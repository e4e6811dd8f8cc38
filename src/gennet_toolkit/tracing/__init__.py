"""Distributed tracing for ASGI services on OpenTelemetry, with W3C Trace Context.

* :class:`TracingMiddleware`: one SERVER span per request, named by route template,
  parent taken from ``traceparent``/``tracestate`` by our own spec-exact parser.
* :func:`traced`: an INTERNAL span around each call of a sync or async function.
* :func:`inject_headers` / :func:`client_span`: outgoing ``traceparent``,
  ``tracestate`` and correlation id, with a fresh CLIENT span id per call.
* :func:`setup_tracing`: an SDK provider and exporter when opentelemetry-sdk is
  installed, a no-op otherwise.
* :func:`current_trace_id` / :func:`current_span_id`: ids for logs.

Needs the ``otel`` extra (opentelemetry-api), imported on first use, not on import.
"""

from __future__ import annotations

from gennet_toolkit.tracing._api import (
    ClientSpan,
    client_span,
    current_span_id,
    current_trace_id,
    inject_headers,
    setup_tracing,
    traced,
)
from gennet_toolkit.tracing._middleware import TracingMiddleware, route_template
from gennet_toolkit.tracing._tracecontext import (
    TraceParent,
    format_traceparent,
    format_tracestate,
    parse_traceparent,
    parse_tracestate,
)

__all__ = [
    "ClientSpan",
    "TraceParent",
    "TracingMiddleware",
    "client_span",
    "current_span_id",
    "current_trace_id",
    "format_traceparent",
    "format_tracestate",
    "inject_headers",
    "parse_traceparent",
    "parse_tracestate",
    "route_template",
    "setup_tracing",
    "traced",
]
