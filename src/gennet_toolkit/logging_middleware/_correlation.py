"""Correlation ids: read, validate, generate, echo, and keep in context for one request."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit._env import env_bool, env_str
from gennet_toolkit._problem import send_problem
from gennet_toolkit.exceptions import BadRequest, GenNetError
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "SCOPE_CORRELATION_HEADER",
    "SCOPE_CORRELATION_ID",
    "CorrelationIdMiddleware",
    "bound_correlation_id",
    "get_correlation_id",
    "is_hex_or_uuid",
    "is_valid_correlation_id",
    "new_correlation_id",
]

#: Scope key holding the request's id, readable by layers outside the middleware after
#: the ContextVar was reset (an error handler wrapped around it, framework handlers).
SCOPE_CORRELATION_ID = "gennet.correlation_id"
#: Scope key holding the header name, so an outer layer can echo the id the same way.
SCOPE_CORRELATION_HEADER = "gennet.correlation_header"

logger = logging.getLogger("gennet_toolkit.logging_middleware")

MAX_LENGTH = 128
# Letters, digits and ``. _ : -`` only: no whitespace, CR/LF, quotes, ``%`` or braces,
# so an accepted id can go into a log line, a header or a format string unharmed.
# The lookahead rejects all-zero ids (nginx and OTel treat them as "no id").
_SAFE_ID = re.compile(rf"(?![0-]*$)[A-Za-z0-9][A-Za-z0-9._:\-]{{0,{MAX_LENGTH - 1}}}")
_SAFE_ID_BYTES = re.compile(_SAFE_ID.pattern.encode("ascii"))
_HEX_OR_UUID = re.compile(
    r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def is_valid_correlation_id(value: str) -> bool:
    """The default validator: 1–128 characters from ``A–Z a–z 0–9 . _ : -``, not all zeros.

    Accepts UUIDs (with or without dashes), nginx ``$request_id``, OpenTelemetry trace ids
    and most vendors' request ids; rejects anything that could break a log line or header.
    """
    return _SAFE_ID.fullmatch(value) is not None


def is_hex_or_uuid(value: str) -> bool:
    """A strict validator: exactly 32 hex digits or a dashed UUID, not all zeros."""
    return _HEX_OR_UUID.fullmatch(value) is not None and value.strip("0-") != ""


_BATCH = 256
_SET_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))  # version nibble 4
_SET_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # RFC 4122 variant
_pool: list[str] = []
_fork_hook: list[bool] = []


def _refill() -> None:
    # One urandom call and one hex conversion per 256 ids: uuid4().hex per request
    # costs more than all the rest of the middleware.
    if not _fork_hook and hasattr(os, "register_at_fork"):
        # A forked worker must not hand out the ids left in its parent's pool.
        os.register_at_fork(after_in_child=_pool.clear)
        _fork_hook.append(True)
    raw = bytearray(os.urandom(16 * _BATCH))
    raw[6::16] = raw[6::16].translate(_SET_VERSION)
    raw[8::16] = raw[8::16].translate(_SET_VARIANT)
    text = raw.hex()
    _pool.extend(text[i : i + 32] for i in range(0, len(text), 32))


def new_correlation_id() -> str:
    """A fresh id: a random version 4 UUID as 32 lower-case hex digits (``uuid4().hex``).

    Drawn from ``os.urandom`` in batches; thread-safe, and fork-safe (a child process
    discards the ids its parent had drawn).
    """
    while True:
        try:
            return _pool.pop()
        except IndexError:
            _refill()


def get_correlation_id() -> str | None:
    """The current request's correlation id, or ``None`` outside a request.

    Works in the endpoint, in tasks it starts (``asyncio.create_task`` and Starlette
    background tasks copy the context) and in threadpool code (``run_in_threadpool``
    and ``asyncio.to_thread`` copy it too).
    """
    return correlation_id_var.get()


@contextmanager
def bound_correlation_id(value: str | None = None) -> Iterator[str]:
    """Set the correlation id for a block outside HTTP (a task worker, a CLI command).

    ``value`` defaults to a fresh id; the previous id is restored on exit::

        with bound_correlation_id(task_headers.get("correlation_id")) as cid:
            run(task)
    """
    cid = value if value is not None else new_correlation_id()
    token = correlation_id_var.set(cid)
    try:
        yield cid
    finally:
        correlation_id_var.reset(token)


def _unwrap(exc: BaseException) -> BaseException:
    # anyio task groups wrap a single failure in an ExceptionGroup.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class CorrelationIdMiddleware:
    """Pure ASGI middleware giving every HTTP and websocket request a correlation id.

    The id comes from the ``header_name`` request header when ``validator`` accepts it,
    otherwise from ``generator``. It is stored in the shared ContextVar (read it with
    :func:`get_correlation_id`), in ``scope["gennet.correlation_id"]``, and echoed in the
    response header (on ``http.response.start`` and ``websocket.accept``). A rejected
    value is never logged or echoed.

    Options (keyword-only):

    * ``validator`` – ``str -> bool``; default :func:`is_valid_correlation_id`.
    * ``generator`` – ``() -> str``; default :func:`new_correlation_id` (uuid4 hex).
    * ``update_request_header`` – write a generated id into the request headers, so
      inner code reading the header sees the id in use (default ``True``).
    * ``reject_invalid`` – answer 400 problem+json (websocket: close 1008) for a
      malformed id instead of replacing it (default ``False``).
    * ``error_response`` – if the app raises before the response started, send a
      problem+json error carrying the id ourselves, so even an unhandled 500 has the
      header whatever the middleware order (default ``True``). ``False`` re-raises
      untouched and leaves the response to an outer layer.

    Place it outermost: ``app = CorrelationIdMiddleware(ErrorHandlerMiddleware(app))``.
    """

    def __init__(
        self,
        app: ASGIApp,
        header_name: str = "X-Request-ID",
        *,
        validator: Callable[[str], bool] = is_valid_correlation_id,
        generator: Callable[[], str] = new_correlation_id,
        update_request_header: bool = True,
        reject_invalid: bool = False,
        error_response: bool = True,
    ) -> None:
        if (
            not header_name
            or not header_name.isascii()
            or not header_name.replace("-", "").isalnum()
        ):
            raise ValueError(
                f"header_name must be an ASCII token like 'X-Request-ID', got {header_name!r}"
            )
        self.app = app
        self.header_name = header_name
        self.validator = validator
        self.generator = generator
        self.update_request_header = update_request_header
        self.reject_invalid = reject_invalid
        self.error_response = error_response
        self._header = header_name.lower().encode("ascii")
        # The default validator also runs on the raw bytes, skipping a decode and a call.
        self._default_validator = validator is is_valid_correlation_id

    @classmethod
    def from_env(cls, app: ASGIApp, prefix: str = "GENNET_") -> CorrelationIdMiddleware:
        """Build from ``{prefix}REQUEST_ID_HEADER``, ``{prefix}REQUEST_ID_REJECT_INVALID``,
        ``{prefix}REQUEST_ID_UPDATE_REQUEST_HEADER`` and ``{prefix}REQUEST_ID_ERROR_RESPONSE``.
        """
        return cls(
            app,
            env_str(f"{prefix}REQUEST_ID_HEADER", "X-Request-ID"),
            reject_invalid=env_bool(f"{prefix}REQUEST_ID_REJECT_INVALID", False),
            update_request_header=env_bool(f"{prefix}REQUEST_ID_UPDATE_REQUEST_HEADER", True),
            error_response=env_bool(f"{prefix}REQUEST_ID_ERROR_RESPONSE", True),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return

        header = self._header
        raw: bytes | None = None
        for name, value in scope["headers"]:
            if name == header:
                raw = value
                break

        cid: str | None = None
        id_value = b""
        if raw is not None:
            id_value = raw
            if self._default_validator:
                # Same rule as is_valid_correlation_id, on the raw bytes: plain hex ids
                # (the common case) skip the regex.
                if (
                    raw.isalnum() and len(raw) <= MAX_LENGTH and raw.strip(b"0")
                ) or _SAFE_ID_BYTES.fullmatch(raw) is not None:
                    cid = raw.decode("latin-1")
            else:
                text = raw.decode("latin-1")
                if self.validator(text):
                    cid = text
        rejected = False
        if cid is None:
            cid = self.generator()
            id_value = cid.encode("latin-1")
            rejected = raw is not None
            if self.update_request_header:
                # A new list: the server may hold on to the one it built.
                if rejected:
                    headers = [h for h in scope["headers"] if h[0] != header]
                    headers.append((header, id_value))
                    scope["headers"] = headers
                else:
                    scope["headers"] = [*scope["headers"], (header, id_value)]
        id_header = (header, id_value)
        scope[SCOPE_CORRELATION_ID] = cid
        scope[SCOPE_CORRELATION_HEADER] = self.header_name

        token = correlation_id_var.set(cid)
        try:
            if rejected:
                # Say how it was wrong, never what it was: the raw value may carry CR/LF
                # or terminal escapes meant for whoever reads the logs.
                logger.info(
                    "Rejected a malformed %s request header (%d bytes); using id %s",
                    self.header_name,
                    len(raw or b""),
                    cid,
                )
                if self.reject_invalid:
                    await self._reject(scope, send, cid, id_header)
                    return

            started = False
            header_len = len(header)
            start_type = "http.response.start" if scope_type == "http" else "websocket.accept"

            # A plain function returning send's awaitable, not a coroutine function:
            # ``await send_with_id(m)`` behaves the same, minus a coroutine per message.
            def send_with_id(message: Message) -> Awaitable[None]:
                nonlocal started
                if message["type"] == start_type:
                    started = True
                    headers = message.get("headers") or ()
                    for name, _ in headers:
                        if len(name) == header_len and name.lower() == header:
                            break
                    else:
                        # A new dict and list: the app may reuse its message or header list.
                        message = {**message, "headers": [*headers, id_header]}
                return send(message)

            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if started or scope_type != "http" or not self.error_response:
                    raise
                error = _unwrap(exc)
                if not isinstance(error, GenNetError):
                    error = GenNetError()
                await send_problem(error, scope, send, correlation_id=cid, headers=[id_header])
                if error.status_code >= 500:
                    # Re-raise so the server (or an outer handler, which now sees a
                    # started response and sends nothing) logs the failure.
                    raise
        finally:
            correlation_id_var.reset(token)

    async def _reject(
        self, scope: Scope, send: Send, cid: str, id_header: tuple[bytes, bytes]
    ) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        error = BadRequest(
            f"The {self.header_name} header is malformed: use 1-{MAX_LENGTH} characters "
            "from A-Z, a-z, 0-9, '.', '_', ':' and '-'.",
            code="invalid_correlation_id",
        )
        await send_problem(error, scope, send, correlation_id=cid, headers=[id_header])
