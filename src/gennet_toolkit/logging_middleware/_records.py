"""Log records that carry the correlation and trace ids: filter, structlog processor,
JSON and text formatters, and a one-call logging setup that also bridges uvicorn."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import IO, Any

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit._env import env_bool, env_str
from gennet_toolkit.exceptions import ConfigurationError

__all__ = [
    "CorrelationIdFilter",
    "JsonFormatter",
    "TextFormatter",
    "add_correlation_id",
    "configure_logging",
    "configure_logging_from_env",
    "current_trace_ids",
]


def current_trace_ids() -> tuple[str | None, str | None]:
    """``(trace_id, span_id)`` of the active OpenTelemetry span, as lower-case hex.

    OpenTelemetry is read only if something already imported it (a span cannot exist
    otherwise), so this never loads it; ``(None, None)`` without a valid span.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None, None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class CorrelationIdFilter(logging.Filter):
    """Adds ``correlation_id``, ``trace_id`` and ``span_id`` to every log record.

    Attach it to a handler (so records from every logger get the fields)::

        handler.addFilter(CorrelationIdFilter())
        handler.setFormatter(logging.Formatter("%(levelname)s [%(correlation_id)s] %(message)s"))

    Outside a request the fields are ``default`` (``"-"``, safe in ``%``/``{}`` format
    strings); ``uuid_length`` trims the correlation id for compact text logs. Values a
    caller passed through ``extra=`` are kept. Never rejects a record.
    """

    def __init__(
        self, name: str = "", *, default: str | None = "-", uuid_length: int | None = None
    ) -> None:
        super().__init__(name)
        self.default = default
        self.uuid_length = uuid_length

    def filter(self, record: logging.LogRecord) -> bool:
        """Set the id attributes that are not set yet; always returns ``True``."""
        fields = record.__dict__
        if "correlation_id" not in fields:
            cid = correlation_id_var.get()
            if cid is not None and self.uuid_length is not None:
                cid = cid[: self.uuid_length]
            fields["correlation_id"] = cid if cid is not None else self.default
        if "trace_id" not in fields or "span_id" not in fields:
            trace_id, span_id = current_trace_ids()
            fields.setdefault("trace_id", trace_id if trace_id is not None else self.default)
            fields.setdefault("span_id", span_id if span_id is not None else self.default)
        return True


def add_correlation_id(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor adding ``correlation_id``, ``trace_id`` and ``span_id``.

    structlog is not a dependency: this is a plain function with the processor
    signature. Keys already bound are kept; absent ids are left out::

        structlog.configure(processors=[add_correlation_id, structlog.processors.JSONRenderer()])
    """
    if "correlation_id" not in event_dict:
        cid = correlation_id_var.get()
        if cid is not None:
            event_dict["correlation_id"] = cid
    if "trace_id" not in event_dict:
        trace_id, span_id = current_trace_ids()
        if trace_id is not None:
            event_dict["trace_id"] = trace_id
            event_dict.setdefault("span_id", span_id)
    return event_dict


# Every attribute a bare LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "correlation_id",
    "trace_id",
    "span_id",
    "color_message",  # uvicorn's copy of the message with terminal colour codes
}
_ID_FIELDS = ("correlation_id", "trace_id", "span_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``timestamp``, ``level``, ``logger``, ``message``, the ids,
    ``static_fields``, every ``extra=`` field, and ``exception``/``stack`` when present.

    The output is pure ASCII (``ensure_ascii``), so no message, extra value or exception
    text can add a line break, not even U+2028 or NEL: one record is always one line.
    ``exception`` is an object ``{type, message, stacktrace}``. Values JSON cannot encode
    become their ``repr``. Extra fields never replace the core fields. The ids come from
    :class:`CorrelationIdFilter` when it ran, else from the current context; absent ids
    are left out.
    """

    def __init__(self, *, static_fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.static_fields = dict(static_fields or {})

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of JSON (no trailing newline)."""
        out: dict[str, Any] = {
            "timestamp": _utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        if "correlation_id" in fields:
            ids: tuple[Any, ...] = (
                fields["correlation_id"],
                fields.get("trace_id"),
                fields.get("span_id"),
            )
        else:
            ids = (correlation_id_var.get(), *current_trace_ids())
        for key, value in zip(_ID_FIELDS, ids, strict=True):
            # "-" is the filter's placeholder for text formats; JSON just omits the key.
            if value is not None and value != "-":
                out[key] = value
        for key, value in self.static_fields.items():
            out.setdefault(key, value)
        for key in [k for k in fields if k not in _RECORD_ATTRS]:
            out.setdefault(key, fields[key])
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            out["exception"] = {
                "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "message": str(exc),
                "stacktrace": record.exc_text,
            }
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return _encode(out)


# ensure_ascii (the default) keeps every line break and separator escaped.
_encode = json.JSONEncoder(default=repr).encode
# (second, "YYYY-MM-DDTHH:MM:SS"), replaced as one tuple so threads never see a torn pair.
_second_cache: list[tuple[int, str]] = [(-1, "")]


def _utc_timestamp(created: float) -> str:
    # ISO 8601 in UTC with milliseconds, as datetime would print it (microseconds rounded,
    # then truncated); the part up to the second is reused within a second.
    second, micros = divmod(round(created * 1_000_000), 1_000_000)
    cached_second, text = _second_cache[0]
    if cached_second != second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache[0] = (second, text)
    return f"{text}.{micros // 1000:03d}Z"


# C0 controls, DEL, NEL and the Unicode line/paragraph separators: what a terminal or a
# line-based log shipper could read as a new record or an escape sequence.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, 0x85]}
_CONTROL |= {0x2028: "\\u2028", 0x2029: "\\u2029"}
_CONTROL.pop(0x09)  # a tab is harmless and common


class TextFormatter(logging.Formatter):
    """A ``logging.Formatter`` that escapes control characters in the message.

    So a value interpolated into a message cannot forge a second log line; tracebacks,
    added after the message, keep their line breaks. The default format shows the
    correlation id: put :class:`CorrelationIdFilter` on the handler to fill it
    (without it the ids show as ``-``).
    """

    default_format = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt or self.default_format, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The formatted line with control characters escaped."""
        # Without CorrelationIdFilter the default format would raise KeyError.
        fields = record.__dict__
        for key in _ID_FIELDS:
            fields.setdefault(key, "-")
        return super().formatMessage(record).translate(_CONTROL)


#: Loggers whose own handlers configure_logging removes so they go through the root one.
BRIDGED_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "gunicorn",
    "gunicorn.error",
    "gunicorn.access",
)


def configure_logging(
    level: int | str = "INFO",
    json: bool = True,
    *,
    stream: IO[str] | None = None,
    static_fields: Mapping[str, Any] | None = None,
    uvicorn_access: bool = True,
) -> logging.Handler:
    """Send all logging to one stream handler on the root logger, JSON or text.

    The handler carries :class:`CorrelationIdFilter`, so every record (the app's,
    the toolkit's, uvicorn's and gunicorn's) has the ids. uvicorn's and gunicorn's
    loggers lose their own handlers and propagate to root, so their lines come out in
    the same format. ``uvicorn_access=False`` silences uvicorn's access log (use
    :class:`AccessLogMiddleware` instead). Idempotent: calling it again replaces the
    handler it installed before and leaves other handlers (pytest's, yours) alone.

    uvicorn applies its own logging config at startup: call this from the app's
    lifespan, or run uvicorn with ``log_config=None``. Returns the handler.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_gennet_handler", False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._gennet_handler = True  # type: ignore[attr-defined]
    if json:
        handler.addFilter(CorrelationIdFilter(default=None))
        handler.setFormatter(JsonFormatter(static_fields=static_fields))
    else:
        handler.addFilter(CorrelationIdFilter())
        handler.setFormatter(TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in BRIDGED_LOGGERS:
        bridged = logging.getLogger(name)
        for old in list(bridged.handlers):
            bridged.removeHandler(old)
        bridged.propagate = True
        bridged.setLevel(logging.NOTSET)
    if not uvicorn_access:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    return handler


def configure_logging_from_env(
    prefix: str = "GENNET_", *, stream: IO[str] | None = None
) -> logging.Handler:
    """:func:`configure_logging` from ``{prefix}LOG_LEVEL`` (default ``INFO``),
    ``{prefix}LOG_FORMAT`` (``json``, the default, or ``text``) and
    ``{prefix}LOG_UVICORN_ACCESS`` (``0`` silences uvicorn's access log).
    """
    level = env_str(f"{prefix}LOG_LEVEL", "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        raise ConfigurationError(f"{prefix}LOG_LEVEL must be a logging level name (DEBUG, ...)")
    fmt = env_str(f"{prefix}LOG_FORMAT", "json").lower()
    if fmt not in {"json", "text"}:
        raise ConfigurationError(f"{prefix}LOG_FORMAT must be 'json' or 'text'")
    return configure_logging(
        level,
        json=fmt == "json",
        stream=stream,
        uvicorn_access=env_bool(f"{prefix}LOG_UVICORN_ACCESS", True),
    )
