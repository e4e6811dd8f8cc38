"""The bridge between our W3C parser and OpenTelemetry span contexts, both directions."""

from __future__ import annotations

import functools
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit._optional import require
from gennet_toolkit.tracing._tracecontext import (
    KNOWN_FLAGS,
    TRACESTATE_PROPAGATION_LIMIT,
    format_traceparent,
    format_tracestate,
    parse_tracestate,
    traceparent_ids,
)

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanContext

__all__ = ["context_from_headers", "load_otel", "otel", "write_headers"]

FEATURE = "gennet_toolkit.tracing"
_loaded = False


def load_otel() -> None:
    """Import opentelemetry-api or raise the ImportError that names the ``otel`` extra."""
    global _loaded  # noqa: PLW0603 - a one-way flag that only skips a repeated import
    if not _loaded:
        require("opentelemetry.trace", extra="otel", feature=FEATURE)
        _loaded = True


@dataclass(frozen=True, slots=True)
class _Otel:
    # Bound once: a function-level ``from x import y`` costs microseconds per request.
    Context: Any
    NonRecordingSpan: Any
    SpanContext: Any
    TraceFlags: Any
    TraceState: Any
    set_span_in_context: Any
    # TraceFlags by the known flag bits: an int subclass each request need not rebuild.
    flags: dict[int, Any]


@functools.cache
def otel() -> _Otel:
    """The OpenTelemetry API names used per request (imports on first call)."""
    load_otel()
    from opentelemetry.context import Context
    from opentelemetry.trace import (
        NonRecordingSpan,
        SpanContext,
        TraceFlags,
        TraceState,
        set_span_in_context,
    )

    flags = {bits: TraceFlags(bits) for bits in range(KNOWN_FLAGS + 1)}
    return _Otel(Context, NonRecordingSpan, SpanContext, TraceFlags, TraceState,
                 set_span_in_context, flags)  # fmt: skip


def context_from_headers(traceparent: list[str], tracestate: list[str]) -> Context | None:
    """The remote parent context for these header lines, or ``None`` to start a new trace."""
    # Two or more lines are invalid even when identical; the spec forbids reading
    # tracestate when traceparent failed: the trace restarts.
    parsed = traceparent_ids(traceparent[0]) if len(traceparent) == 1 else None
    if parsed is None:
        return None
    o = otel()
    members = parse_tracestate(tracestate) if tracestate else None
    span_context = o.SpanContext(
        parsed[1],
        parsed[2],
        True,
        o.flags[parsed[3]],
        o.TraceState(members) if members else None,
    )
    context: Context = o.set_span_in_context(o.NonRecordingSpan(span_context), o.Context())
    return context


def _drop(headers: MutableMapping[str, str], lowered: str) -> None:
    for key in [k for k in headers if k.lower() == lowered]:
        del headers[key]


def write_headers(
    headers: MutableMapping[str, str],
    span_context: SpanContext | None,
    *,
    correlation_header: str | None,
    tracestate_limit: int = TRACESTATE_PROPAGATION_LIMIT,
) -> None:
    """Set ``traceparent``/``tracestate`` (replacing stale ones) and the correlation id."""
    if span_context is not None and span_context.is_valid:
        _drop(headers, "traceparent")
        _drop(headers, "tracestate")
        headers["traceparent"] = format_traceparent(
            span_context.trace_id, span_context.span_id, int(span_context.trace_flags)
        )
        if span_context.trace_state:
            state = format_tracestate(span_context.trace_state.items(), tracestate_limit)
            if state:
                headers["tracestate"] = state
    if correlation_header:
        correlation_id = correlation_id_var.get()
        if correlation_id and not any(k.lower() == correlation_header.lower() for k in headers):
            headers[correlation_header] = correlation_id
