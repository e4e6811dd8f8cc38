"""Reading and validating JSON request bodies from a bare ASGI ``receive``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, TypeVar, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from gennet_toolkit._env import env_int, env_list
from gennet_toolkit._problem import send_problem
from gennet_toolkit.exceptions import (
    BadRequest,
    ConfigurationError,
    FieldError,
    GenNetError,
    InvalidJSON,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    field_errors_from_pydantic,
)
from gennet_toolkit.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DEFAULT_MAX_SIZE",
    "BodySizeLimitMiddleware",
    "ClientDisconnected",
    "parse_body",
    "read_body",
]

logger = logging.getLogger("gennet_toolkit.validation")

M = TypeVar("M")

#: Default body limit: 1 MiB.
DEFAULT_MAX_SIZE = 1_048_576
DEFAULT_MEDIA_TYPES: tuple[str, ...] = ("application/json",)


class ClientDisconnected(BadRequest):
    """The client went away before the body was complete (nobody reads the answer)."""

    code = "client_disconnected"
    default_detail = "The client disconnected before the request body was complete."


class _BodyTooLarge(PayloadTooLarge):
    """Raised from a wrapped ``receive`` once the byte count passes the limit."""


def _too_large(max_size: int) -> PayloadTooLarge:
    # Connection: close because the rest of the body is left unread on the socket.
    return _BodyTooLarge(
        f"The request body exceeds the limit of {max_size} bytes.",
        extra={"max_size": max_size},
        headers={"Connection": "close"},
    )


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _declared_length(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    # int() alone would accept "+5", " 5" and "5_0"; RFC 9110 allows digits only.
    if not text.isdigit() or len(text) > 18:
        raise BadRequest("The Content-Length header is not a valid length.")
    return int(text)


def check_media_type(raw: bytes | None, accepted: Sequence[str]) -> None:
    """Raise :class:`UnsupportedMediaType` unless ``raw`` is one of ``accepted``.

    ``application/<anything>+json`` counts as JSON when ``application/json`` is
    accepted; a ``charset`` other than UTF-8 is refused (JSON is UTF-8, RFC 8259).
    """
    extra = {"accepted": list(accepted)}
    if raw is None or not raw.strip():
        raise UnsupportedMediaType("The request has no Content-Type; send JSON.", extra=extra)
    media, _, params = raw.decode("latin-1").partition(";")
    media = media.strip().lower()
    ok = media in accepted or (
        "application/json" in accepted
        and media.startswith("application/")
        and media.endswith("+json")
    )
    if not ok:
        raise UnsupportedMediaType("The request body's Content-Type is not accepted.", extra=extra)
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in {
            "utf-8",
            "utf8",
        }:
            raise UnsupportedMediaType("JSON bodies must be UTF-8.", extra=extra)


async def read_body(
    receive: Receive, *, max_size: int = DEFAULT_MAX_SIZE, content_length: bytes | None = None
) -> bytes:
    """Read a whole request body, refusing it with 413 as soon as it passes ``max_size``.

    A declared ``Content-Length`` over the limit is refused before any byte is read;
    otherwise bytes are counted as they arrive, so a lying or chunked client is cut off
    at ``max_size`` plus one chunk, never after the whole body.
    """
    declared = _declared_length(content_length)
    if declared is not None and declared > max_size:
        raise _too_large(max_size)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            raise ClientDisconnected
        if kind != "http.request":
            continue
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_size:
            raise _too_large(max_size)
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@lru_cache(maxsize=256)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def json_validator(model: type[M] | Any) -> Callable[[bytes], M]:
    """The fastest JSON validator for ``model``: a BaseModel's own, else a TypeAdapter's."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return cast(Callable[[bytes], M], model.model_validate_json)
    return cast(Callable[[bytes], M], _adapter(model).validate_json)


def safe_field_errors(exc: ValidationError, location: str) -> list[FieldError]:
    """Field errors for ``exc`` that never carry the submitted value.

    pydantic's own messages do not quote inputs, but a user's ``ValueError(f"{v} …")``
    would; such a message is replaced by a generic one.
    """
    cleaned = []
    for err in exc.errors(include_url=False, include_context=False):
        msg = str(err.get("msg", "Invalid value."))
        value = err.get("input")
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value)
            if len(text) >= 3 and text in msg:
                msg = "Invalid value."
        # Prefix the location so a field called "path" or "query" is not taken for one.
        cleaned.append({"loc": (location, *err["loc"]), "msg": msg, "type": err["type"]})
    return field_errors_from_pydantic(cleaned, location=location)


def translate(exc: ValidationError, location: str = "body") -> GenNetError:
    """Map a pydantic error to InvalidJSON (syntax, 400) or ValidationFailed (schema, 422)."""
    for err in exc.errors(include_url=False, include_input=False):
        if err["type"] == "json_invalid":
            where = str((err.get("ctx") or {}).get("error", ""))
            detail = "The request body is not valid JSON"
            # serde's message gives only a reason and a position, never the input.
            return InvalidJSON(f"{detail}: {where}." if where else f"{detail}.")
    return ValidationFailed(errors=safe_field_errors(exc, location))


async def parse_body(
    receive: Receive,
    model: type[M],
    *,
    headers: Iterable[tuple[bytes, bytes]] | None = None,
    scope: Scope | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    media_types: Sequence[str] = DEFAULT_MEDIA_TYPES,
) -> M:
    """Read the JSON body from ``receive`` and validate it as ``model`` (any pydantic type).

    Headers come from ``headers`` or ``scope["headers"]``. Raises
    :class:`~gennet_toolkit.exceptions.UnsupportedMediaType` (415, missing or foreign
    Content-Type), ``PayloadTooLarge`` (413), ``InvalidJSON`` (400), ``ValidationFailed``
    (422, one error per field with a JSON pointer) or :class:`ClientDisconnected`.
    """
    if headers is None:
        headers = scope["headers"] if scope is not None else ()
    headers = list(headers)
    check_media_type(_header(headers, b"content-type"), media_types)
    raw = await read_body(
        receive, max_size=max_size, content_length=_header(headers, b"content-length")
    )
    return validate_json_body(raw, json_validator(model))


def validate_json_body(raw: bytes, validate: Callable[[bytes], M]) -> M:
    """Run ``validate`` on ``raw`` bytes, translating failures to problem exceptions."""
    if not raw:
        raise InvalidJSON("The request body is empty; send a JSON document.")
    try:
        return validate(raw)
    except ValidationError as exc:
        raise translate(exc) from None


class BodySizeLimitMiddleware:
    """Refuse request bodies larger than ``max_size`` bytes for a whole app (413).

    A declared Content-Length over the limit is answered before the app runs; otherwise
    the app's ``receive`` counts bytes as they stream and, past the limit, answers the
    413 itself (if the response has not started) and raises ``PayloadTooLarge`` into the
    app, whose own reply is then dropped. Bodies are never buffered. Paths in
    ``exclude_paths`` (prefixes) are not limited.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        exclude_paths: Sequence[str] = (),
    ) -> None:
        if max_size < 0:
            raise ConfigurationError("max_size must be >= 0")
        self.app = app
        self.max_size = max_size
        self.exclude_paths = tuple(exclude_paths)

    @classmethod
    def from_env(cls, app: ASGIApp, *, prefix: str = "GENNET_") -> BodySizeLimitMiddleware:
        """Configure from ``{prefix}MAX_BODY_SIZE`` (bytes) and ``{prefix}MAX_BODY_EXCLUDE``
        (comma-separated path prefixes)."""
        max_size = env_int(f"{prefix}MAX_BODY_SIZE", DEFAULT_MAX_SIZE)
        paths = env_list(f"{prefix}MAX_BODY_EXCLUDE", [])
        return cls(app, max_size=max_size, exclude_paths=paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.exclude_paths and scope["path"].startswith(self.exclude_paths)
        ):
            await self.app(scope, receive, send)
            return
        max_size = self.max_size
        try:
            declared = _declared_length(_header(scope["headers"], b"content-length"))
        except BadRequest as exc:
            await send_problem(exc, scope, send)
            return
        if declared is not None and declared > max_size:
            await send_problem(_too_large(max_size), scope, send)
            return

        received = 0
        started = False
        answered = False  # the 413 went out; the app's own answer is dropped

        async def limited_receive() -> Message:
            nonlocal received, started, answered
            if answered:
                # An app that swallowed the refusal and reads on sees a gone client.
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_size:
                    exc = _too_large(max_size)
                    # Answer here, not from an except clause below: frameworks turn an
                    # error while reading a body into their own 400 (FastAPI does).
                    if not started:
                        started = answered = True
                        await send_problem(exc, scope, send)
                    raise exc
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            # Once the app's response has started a 413 cannot be sent: the error
            # reaches the server, which closes the connection. After our own 413 the
            # app's error (ours, or its wrapper of it) has nothing left to say.
            if not answered:
                raise
            logger.debug("app raised after its request body was refused", exc_info=True)
