"""Correlation ids, structured logs and access logs for ASGI apps.

* :class:`CorrelationIdMiddleware` reads, validates, generates and echoes a request id
  and keeps it in context (:func:`get_correlation_id`) for the request, its background
  tasks and threadpool code.
* :class:`CorrelationIdFilter` (stdlib logging) and :func:`add_correlation_id`
  (a structlog processor) put ``correlation_id``, ``trace_id`` and ``span_id`` on
  every log record; :class:`JsonFormatter` writes one JSON object per line.
* :class:`AccessLogMiddleware` logs one structured line per request, with the route
  template and redacted secrets.
* :func:`configure_logging` wires it all to one handler and bridges uvicorn's loggers.

Recommended order, outermost first::

    app = CorrelationIdMiddleware(AccessLogMiddleware(ErrorHandlerMiddleware(app)))

Nothing here imports Starlette or OpenTelemetry; trace ids are read only when
OpenTelemetry is already in use.
"""

from __future__ import annotations

from gennet_toolkit.logging_middleware._access import (
    DEFAULT_REDACT_HEADERS,
    DEFAULT_REDACT_QUERY_PARAMS,
    REDACTED,
    AccessLogMiddleware,
    redact_query_string,
    route_template,
)
from gennet_toolkit.logging_middleware._correlation import (
    SCOPE_CORRELATION_HEADER,
    SCOPE_CORRELATION_ID,
    CorrelationIdMiddleware,
    bound_correlation_id,
    get_correlation_id,
    is_hex_or_uuid,
    is_valid_correlation_id,
    new_correlation_id,
)
from gennet_toolkit.logging_middleware._records import (
    CorrelationIdFilter,
    JsonFormatter,
    TextFormatter,
    add_correlation_id,
    configure_logging,
    configure_logging_from_env,
    current_trace_ids,
)

__all__ = [
    # correlation ids
    "CorrelationIdMiddleware",
    "get_correlation_id",
    "bound_correlation_id",
    "new_correlation_id",
    "is_valid_correlation_id",
    "is_hex_or_uuid",
    "SCOPE_CORRELATION_ID",
    "SCOPE_CORRELATION_HEADER",
    # log records
    "CorrelationIdFilter",
    "add_correlation_id",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "configure_logging_from_env",
    "current_trace_ids",
    # access log
    "AccessLogMiddleware",
    "route_template",
    "redact_query_string",
    "REDACTED",
    "DEFAULT_REDACT_HEADERS",
    "DEFAULT_REDACT_QUERY_PARAMS",
]
