"""Turn exceptions into RFC 9457 ``application/problem+json`` responses.

Two ways to install it, usable together:

* :class:`ErrorHandlerMiddleware`, pure ASGI, meant as the outermost layer (inside
  the correlation-id middleware): anything that escapes the app before the response
  started becomes a problem response; after the headers went out it re-raises,
  because a second response would corrupt the stream.
* :func:`install_error_handlers`, which registers exception handlers on a Starlette
  or FastAPI app, so errors raised in endpoints are rendered inside the app and other
  middleware (metrics, access logs) see the real status.

What clients see is safe by construction: 5xx bodies carry a fixed sentence, never
exception text, SQL or tracebacks (unless ``debug=True``), and 4xx bodies say what
was wrong and where (``errors[]`` with JSON pointers), never the submitted values.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketState

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit._routes import route_instance
from gennet_toolkit.exceptions import (
    GenNetError,
    InvalidJSON,
    ValidationFailed,
    field_errors_from_pydantic,
)
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "PROBLEM_JSON",
    "ErrorHandlerMiddleware",
    "ProblemResponse",
    "install_error_handlers",
    "problem_response",
    "to_gennet_error",
]

PROBLEM_JSON = "application/problem+json"

#: Where the correlation-id middleware leaves the id, so a layer outside it can read it.
SCOPE_CORRELATION_ID = "gennet.correlation_id"
SCOPE_CORRELATION_HEADER = "gennet.correlation_header"
# Set once an exception was logged, so an outer layer that sees it again stays quiet.
_SCOPE_LOGGED = "gennet.error_logged"

logger = logging.getLogger("gennet_toolkit.error_handler")


class ProblemResponse(Response):
    """A response whose body is an RFC 9457 problem document."""

    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        """Compact UTF-8 JSON; unknown values (dates, UUIDs in ``extra``) become strings."""
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _unwrap(exc: BaseException) -> BaseException:
    # anyio task groups (Starlette's streaming and background machinery) wrap a single
    # failure in an ExceptionGroup; the one inside is what the client's error is about.
    while True:
        if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        elif (
            # Starlette's ExceptionMiddleware, when an inner app (a Mount) already started
            # its own error response, raises this RuntimeError from inside its except
            # block: the exception the client's error is about is the context.
            type(exc) is RuntimeError
            and exc.__context__ is not None
            and str(exc).startswith("Caught handled exception")
        ):
            exc = exc.__context__
        else:
            return exc


def to_gennet_error(exc: BaseException) -> GenNetError:
    """Map any exception to the :class:`GenNetError` a client should see.

    Known client errors keep their meaning (Starlette's ``HTTPException``, FastAPI's
    ``RequestValidationError`` → 422, a body that is not JSON → 400, whether
    ``json.loads`` or FastAPI found it); anything else is an opaque 500.
    """
    exc = _unwrap(exc)
    if isinstance(exc, GenNetError):
        return exc
    if isinstance(exc, StarletteHTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code >= 500:
            # Only the reason phrase: an HTTPException(500, str(e)) must not leak e.
            return GenNetError(status_code=exc.status_code, code="http_error", headers=headers)
        if exc.status_code < 400:
            return GenNetError(code="http_error")
        return GenNetError(
            str(exc.detail),
            status_code=exc.status_code,
            code=_code_for(exc.status_code),
            headers=headers,
        )
    fastapi_exc = sys.modules.get("fastapi.exceptions")
    if fastapi_exc is not None and isinstance(exc, fastapi_exc.RequestValidationError):
        raw = exc.errors()
        # FastAPI reports an unparsable body as a field error at a character offset
        # ("#/25" is no JSON pointer): the body is malformed, not a field invalid.
        if any(e.get("type") == "json_invalid" for e in raw):
            return InvalidJSON()
        return ValidationFailed(errors=field_errors_from_pydantic(raw))
    if isinstance(exc, json.JSONDecodeError) or _undecodable_json(exc):
        return InvalidJSON()
    return GenNetError()


def _undecodable_json(exc: BaseException) -> bool:
    # json.loads(bytes) decodes before parsing: bytes that are not UTF-8/16/32 raise
    # UnicodeDecodeError, not JSONDecodeError, from inside json.loads itself.
    if not isinstance(exc, UnicodeDecodeError):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is json.loads.__code__:
            return True
        tb = tb.tb_next
    return False


def _bodiless_response(exc: BaseException) -> Response | None:
    """The answer to ``HTTPException(304)`` and friends: not an error, so no problem body.

    Starlette answers an ``HTTPException`` below 400 (a conditional GET's 304, a 204)
    with just its status and headers; so do we, instead of turning it into a 500.
    """
    exc = _unwrap(exc)
    if isinstance(exc, StarletteHTTPException) and exc.status_code < 400:
        return Response(status_code=exc.status_code, headers=dict(exc.headers or {}))
    return None


def _code_for(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


def _correlation_id(scope: Scope | None) -> str | None:
    cid = correlation_id_var.get()
    if cid is None and scope is not None:
        cid = scope.get(SCOPE_CORRELATION_ID)
    return cid


def _debug_member(exc: BaseException) -> dict[str, Any]:
    return {
        "exception": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": traceback.format_exception(exc),
    }


def problem_response(
    exc: BaseException,
    *,
    instance: str | None = None,
    scope: Scope | None = None,
    debug: bool = False,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    """Render ``exc`` as a problem+json response.

    ``instance`` defaults to the matched route's template with its root and mount
    prefix (``/v1/genes/{symbol}``) when ``scope`` is given, and is omitted when no
    route matched: never the raw path, which is client text. The correlation
    id comes from the logging middleware's context. ``debug=True`` adds a ``debug``
    member with the exception type, message and traceback: never in production.
    """
    error = to_gennet_error(exc)
    if instance is None and scope is not None:
        instance = route_instance(scope)
    cid = _correlation_id(scope)
    body = error.to_problem(instance=instance, correlation_id=cid)
    if debug:
        body["debug"] = _debug_member(_unwrap(exc))
    out_headers = dict(error.headers)
    if headers:
        out_headers.update(headers)
    if scope is not None and cid is not None:
        name = scope.get(SCOPE_CORRELATION_HEADER)
        if name and name.lower() not in {k.lower() for k in out_headers}:
            out_headers[name] = cid
    return ProblemResponse(body, status_code=error.status_code, headers=out_headers)


def _log(exc: BaseException, error: GenNetError, scope: Scope | None) -> None:
    where = f"{scope.get('method', '')} {scope.get('path', '')}" if scope else ""
    if error.status_code >= 500 and not isinstance(_unwrap(exc), GenNetError):
        logger.error("Unhandled exception on %s", where, exc_info=exc)
    elif error.status_code >= 500:
        # Chained causes (a Redis ConnectionError) belong in the log, not the body.
        logger.warning("%s on %s: %s", error.code, where, error.detail, exc_info=exc)
    else:
        logger.debug("%s on %s: %s", error.code, where, error.detail)


class ErrorHandlerMiddleware:
    """Pure ASGI middleware answering problem+json for any exception the app raises.

    Place it outermost (inside ``CorrelationIdMiddleware`` so the id is known). If the
    app fails before sending headers, the client gets a problem response; if headers
    already went out, the exception is re-raised so the server aborts the connection
    instead of appending a second response to a half-sent one. Non-HTTP scopes pass
    through untouched.

    Starlette and FastAPI render errors inside the app: their ``ServerErrorMiddleware``
    answers a plain-text 500, then re-raises. So a single-message 5xx response is held
    back until the app returns, and replaced by the problem body if an exception follows,
    wherever the Starlette app sits inside this middleware; a 5xx the app streams flows
    as it streams. When ``app`` itself is Starlette or
    FastAPI, :func:`install_error_handlers` is also called on it, so inner layers
    (metrics, access logs) see the real status (``install_handlers=False`` opts out).
    """

    def __init__(self, app: ASGIApp, *, debug: bool = False, install_handlers: bool = True) -> None:
        self.app = app
        self.debug = debug
        if install_handlers and hasattr(app, "add_exception_handler"):
            install_error_handlers(app, debug=debug)

    @classmethod
    def from_env(cls, app: ASGIApp, prefix: str = "GENNET_") -> ErrorHandlerMiddleware:
        """Build from ``{prefix}DEBUG`` (``1``/``true`` turns debug details on)."""
        import os

        flag = os.environ.get(f"{prefix}DEBUG", "").strip().lower()
        return cls(app, debug=flag in {"1", "true", "yes", "on"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = completed = False
        # A 5xx start is held back until the app returns: Starlette's ServerErrorMiddleware
        # (anywhere inside us) answers its own plain-text 500 and then re-raises, and we
        # want to replace that answer with the problem body for the real exception.
        held: list[Message] | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal started, completed, held
            if message["type"] == "http.response.start":
                started = True
                if message.get("status", 200) >= 500:
                    held = [message]
                    return
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                completed = True
            if held is not None:
                held.append(message)
                if not message.get("more_body"):
                    return
                # A streamed 5xx is the app's own answer (Starlette's error page is one
                # message): let it stream; a failure from here on re-raises.
                flush, held = held, None
                for m in flush:
                    await send(m)
                return
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            bodiless = _bodiless_response(exc)
            if bodiless is None and not scope.get(_SCOPE_LOGGED):
                _log(exc, to_gennet_error(exc), scope)
            if started and held is None:
                if completed:
                    # An inner handler already answered and re-raised only so a server
                    # would log it; we just did, and a second response is impossible.
                    return
                # The status line is out: re-raise so the server drops the connection.
                raise
            response = bodiless or problem_response(exc, scope=scope, debug=self.debug)
            await response(scope, receive, send)
            return
        for message in held or ():
            await send(message)


async def _websocket_answer(ws: WebSocket, exc: Exception, *, debug: bool) -> Response | None:
    """Refuse the handshake with the problem body, or close an accepted socket.

    After ``accept()`` no HTTP response may be sent: the socket is closed with 1008
    (policy violation) for a client error or 1011 (internal error) otherwise, and the
    error's stable ``code`` as the reason, never its detail.
    """
    if ws.application_state is WebSocketState.CONNECTING and "websocket.http.response" in (
        ws.scope.get("extensions") or {}
    ):
        return problem_response(exc, scope=ws.scope, debug=debug)
    if ws.application_state is not WebSocketState.DISCONNECTED:
        error = to_gennet_error(exc)
        await ws.close(code=1011 if error.status_code >= 500 else 1008, reason=error.code)
    return None


def install_error_handlers(app: Any, *, debug: bool = False) -> None:
    """Register problem+json handlers on a Starlette or FastAPI ``app``.

    Covers :class:`GenNetError`, Starlette/FastAPI ``HTTPException`` (404 and 405 from
    the router included), FastAPI's ``RequestValidationError``, malformed JSON and,
    as the last resort, ``Exception`` (500 without details).
    """

    async def handler(conn: HTTPConnection, exc: Exception) -> Response | None:
        # conn is a Request, or a WebSocket when a websocket endpoint raised.
        bodiless = _bodiless_response(exc)
        if bodiless is not None:
            return bodiless
        _log(exc, to_gennet_error(exc), conn.scope)
        conn.scope[_SCOPE_LOGGED] = True
        if isinstance(conn, WebSocket):
            return await _websocket_answer(conn, exc, debug=debug)
        return problem_response(exc, scope=conn.scope, debug=debug)

    async def undecodable_handler(conn: HTTPConnection, exc: Exception) -> Response | None:
        if not _undecodable_json(exc):
            # Not a request body: leave it to the last-resort 500 path, which re-raises
            # so the server and outer middleware see the failure.
            raise exc
        return await handler(conn, exc)

    app.add_exception_handler(GenNetError, handler)
    app.add_exception_handler(StarletteHTTPException, handler)
    app.add_exception_handler(json.JSONDecodeError, handler)
    app.add_exception_handler(UnicodeDecodeError, undecodable_handler)
    fastapi_exc = sys.modules.get("fastapi.exceptions")
    if fastapi_exc is not None:
        app.add_exception_handler(fastapi_exc.RequestValidationError, handler)
    app.add_exception_handler(Exception, handler)
