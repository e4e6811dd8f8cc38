"""One structured access-log line per HTTP request."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit._env import env_list, env_str
from gennet_toolkit._routes import RouteResolver
from gennet_toolkit._routes import route_template as _route_template
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.logging_middleware._correlation import SCOPE_CORRELATION_ID
from gennet_toolkit.logging_middleware._records import current_trace_ids
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DEFAULT_REDACT_HEADERS",
    "DEFAULT_REDACT_QUERY_PARAMS",
    "REDACTED",
    "AccessLogMiddleware",
    "redact_query_string",
    "route_template",
]

REDACTED = "[REDACTED]"

DEFAULT_REDACT_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "x-csrf-token",
        "x-xsrf-token",
        "x-amz-security-token",
    }
)
DEFAULT_REDACT_QUERY_PARAMS = frozenset(
    {"key", "sig", "code", "pwd", "pin", "jwt", "otp", "state", "nonce", "hash"}
)
# Parameter or header names containing one of these are redacted whatever the lists say.
_SENSITIVE_MARKERS = (
    "token",
    "secret",
    "passw",
    "auth",
    "session",
    "signature",
    "credential",
    "apikey",
    "api_key",
    "api-key",
    "private",
)

# Control characters would let a crafted (percent-decoded) path forge log lines in text
# formats; JSON escapes them anyway.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, 0x85]} | {
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def _is_sensitive(name: str, exact: frozenset[str]) -> bool:
    return name in exact or any(m in name for m in _SENSITIVE_MARKERS)


def redact_query_string(
    query: bytes | str, names: Iterable[str] = DEFAULT_REDACT_QUERY_PARAMS
) -> str:
    """The query string with sensitive parameter values replaced by ``[REDACTED]``.

    A parameter is sensitive when its decoded, lower-cased name is in ``names`` or
    contains ``token``, ``secret``, ``passw``, ``auth``, ``session``, ``signature``,
    ``credential``, ``apikey``/``api_key`` or ``private``. Order and the other values
    (still percent-encoded) are kept.
    """
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    if not text:
        return ""
    exact = names if isinstance(names, frozenset) else frozenset(n.lower() for n in names)
    parts = []
    for pair in text.split("&"):
        name, sep, _ = pair.partition("=")
        if sep and _is_sensitive(unquote_plus(name).lower(), exact):
            parts.append(f"{name}={REDACTED}")
        else:
            parts.append(pair)
    return "&".join(parts).translate(_CONTROL)


def route_template(scope: Scope) -> str | None:
    """The matched route's template, with mount prefixes, read from a finished scope.

    Starlette's and FastAPI's routers leave the matched route in ``scope["route"]``,
    each ``Mount`` extends ``scope["root_path"]`` (its raw prefix is mapped back to the
    mount's template: ``/tenants/{tenant}``, never ``/tenants/acme``) and FastAPI keeps
    ``include_router`` prefixes in ``scope["fastapi"]``, so no route is matched again.
    The application's own ``root_path`` comes first. A mount whose app is not a router
    (StaticFiles) gives ``/mount/{path}``. ``None`` when nothing matched (a 404, also
    inside a mounted router) or the framework does not set the route.
    """
    root_path = scope.get("app_root_path", scope.get("root_path", ""))
    template = _route_template(scope, root_path=root_path)
    return None if template is None else root_path + template


def _parse_paths(paths: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact, prefixes = set(), []
    for p in paths:
        if p.endswith("*"):
            prefixes.append(p[:-1])
        else:
            exact.add(p)
    return frozenset(exact), tuple(prefixes)


class AccessLogMiddleware:
    """Pure ASGI middleware logging one structured line per HTTP request.

    The record's message is ``"GET /items/{item_id} 200 1.2ms"``; its ``extra`` fields
    are ``method``, ``route`` (template, ``None`` if unmatched), ``path``, ``query``
    (sensitive values redacted), ``status`` (0 if the app sent no response),
    ``duration_ms`` (to the last body byte,
    excluding background tasks), ``bytes_sent``, ``client``, ``correlation_id``,
    ``trace_id`` and, if ``log_headers`` names any, ``headers`` (sensitive ones
    redacted). Use :class:`JsonFormatter` to see them all.

    Options (keyword-only): ``logger`` (a Logger or name; default
    ``"gennet_toolkit.access"``), ``level`` (default INFO), ``exclude_paths`` (exact
    paths, or prefixes ending in ``*``), ``log_headers`` (request header names to
    include, ``"*"`` for all), ``redact_headers``, ``redact_query_params``.

    If the app raises before responding, the line says status 500 with ``error`` set to
    the exception type, and the exception propagates. Other scope types pass through.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        logger: logging.Logger | str = "gennet_toolkit.access",
        level: int = logging.INFO,
        exclude_paths: Iterable[str] = (),
        log_headers: Iterable[str] = (),
        redact_headers: Iterable[str] = DEFAULT_REDACT_HEADERS,
        redact_query_params: Iterable[str] = DEFAULT_REDACT_QUERY_PARAMS,
    ) -> None:
        self.app = app
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self._exclude, self._exclude_prefixes = _parse_paths(exclude_paths)
        wanted = {h.lower() for h in log_headers}
        self._all_headers = "*" in wanted
        self._log_headers = frozenset(h.encode("latin-1") for h in wanted - {"*"})
        self._redact_headers = frozenset(h.lower() for h in redact_headers)
        self._redact_query = frozenset(q.lower() for q in redact_query_params)
        self._routes = RouteResolver(app)

    @classmethod
    def from_env(cls, app: ASGIApp, prefix: str = "GENNET_") -> AccessLogMiddleware:
        """Build from ``{prefix}ACCESS_LOG_LEVEL`` (a level name),
        ``{prefix}ACCESS_LOG_EXCLUDE_PATHS`` and ``{prefix}ACCESS_LOG_HEADERS`` (comma lists).
        """
        name = f"{prefix}ACCESS_LOG_LEVEL"
        level = logging.getLevelNamesMapping().get(env_str(name, "INFO").upper())
        if level is None:
            raise ConfigurationError(f"{name} must be a logging level name (DEBUG, INFO, ...)")
        return cls(
            app,
            level=level,
            exclude_paths=env_list(f"{prefix}ACCESS_LOG_EXCLUDE_PATHS", []),
            log_headers=env_list(f"{prefix}ACCESS_LOG_HEADERS", []),
        )

    def _excluded(self, path: str) -> bool:
        return path in self._exclude or any(path.startswith(p) for p in self._exclude_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.logger.isEnabledFor(self.level)
            or self._excluded(scope["path"])
        ):
            await self.app(scope, receive, send)
            return

        start = time.perf_counter()
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        end: float | None = None
        status = 0
        sent = 0
        cid: str | None = None
        trace_id: str | None = None

        async def send_logged(message: Message) -> None:
            nonlocal end, status, sent, cid, trace_id
            kind = message["type"]
            if kind == "http.response.start":
                status = int(message["status"])
                # Read the ids here: this runs inside every inner layer's context, so a
                # correlation or tracing middleware placed inside us is still visible.
                cid = correlation_id_var.get()
                trace_id = current_trace_ids()[0]
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
                if not message.get("more_body", False):
                    end = time.perf_counter()
            await send(message)

        error: str | None = None
        try:
            await self.app(scope, receive, send_logged)
        except BaseException as exc:
            error = type(exc).__name__
            if not status:
                status = 500
            raise
        finally:
            duration_ms = ((end if end is not None else time.perf_counter()) - start) * 1000
            self._log(
                scope,
                route=self._route(scope, path, root_path),
                status=status,
                duration_ms=duration_ms,
                sent=sent,
                cid=cid,
                trace_id=trace_id,
                error=error,
            )

    def _log(
        self,
        scope: Scope,
        *,
        route: str | None,
        status: int,
        duration_ms: float,
        sent: int,
        cid: str | None,
        trace_id: str | None,
        error: str | None,
    ) -> None:
        method = scope["method"]
        path = scope["path"].translate(_CONTROL)
        client = scope.get("client")
        extra: dict[str, Any] = {
            "method": method,
            "route": route,
            "path": path,
            "query": redact_query_string(scope.get("query_string", b""), self._redact_query),
            "status": status,
            "duration_ms": round(duration_ms, 3),
            "bytes_sent": sent,
            "client": client[0] if client else None,
            "correlation_id": cid or correlation_id_var.get() or scope.get(SCOPE_CORRELATION_ID),
            "trace_id": trace_id,
        }
        if error is not None:
            extra["error"] = error
        if self._all_headers or self._log_headers:
            extra["headers"] = self._headers(scope)
        self.logger.log(
            self.level,
            "%s %s %d %.1fms",
            method,
            route or path,
            status,
            duration_ms,
            extra=extra,
        )

    def _route(self, scope: Scope, path: str, root_path: str) -> str | None:
        template = self._routes.resolve(scope, path, root_path)
        return None if template is None else root_path + template

    def _headers(self, scope: Scope) -> dict[str, str]:
        out: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            if not self._all_headers and raw_name not in self._log_headers:
                continue
            name = raw_name.decode("latin-1").lower()
            if _is_sensitive(name, self._redact_headers):
                value = REDACTED
            else:
                value = raw_value.decode("latin-1").translate(_CONTROL)
            out[name] = f"{out[name]}, {value}" if name in out else value
        return out
