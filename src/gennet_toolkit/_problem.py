"""``application/problem+json`` answers from pure ASGI code.

Middleware answering before (or instead of) the app renders a
:class:`~gennet_toolkit.exceptions.GenNetError` itself rather than importing
``error_handler``, so modules stay independent; this is the one rendering they share.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from typing import Final, Literal

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit._routes import route_instance
from gennet_toolkit.exceptions import GenNetError
from gennet_toolkit.types import Message, Scope, Send

__all__ = ["CONTEXT", "PATH", "problem_bytes", "problem_messages", "problem_parts", "send_problem"]


class _Default(enum.Enum):
    PATH = "the matched route's template"
    CONTEXT = "the correlation id in the context"


#: ``instance`` default: the matched route's template with its root and mount prefix
#: (``/v1/genes/{symbol}``), omitted before a route matched: never the raw request path,
#: which is client text a 4xx body must not echo.
PATH: Final = _Default.PATH
#: ``correlation_id`` default: the one bound to ``correlation_id_var``.
CONTEXT: Final = _Default.CONTEXT

Headers = list[tuple[bytes, bytes]]
_Instance = str | Literal[_Default.PATH] | None
_CorrelationId = str | Literal[_Default.CONTEXT] | None


def problem_bytes(
    exc: GenNetError, instance: str | None = None, *, correlation_id: _CorrelationId = CONTEXT
) -> bytes:
    """The compact JSON body of ``exc`` (with the correlation id of the context by default)."""
    cid = correlation_id_var.get() if correlation_id is CONTEXT else correlation_id
    body = exc.to_problem(instance=instance, correlation_id=cid)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def problem_parts(
    exc: GenNetError,
    scope: Scope,
    *,
    instance: _Instance = PATH,
    correlation_id: _CorrelationId = CONTEXT,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> tuple[bytes, Headers]:
    """The body and raw headers (content type and length, ``exc.headers``, ``headers``)."""
    where = route_instance(scope) if instance is PATH else instance
    payload = problem_bytes(exc, where, correlation_id=correlation_id)
    raw: Headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    raw += headers
    return payload, raw


def problem_messages(
    exc: GenNetError,
    scope: Scope,
    *,
    instance: _Instance = PATH,
    correlation_id: _CorrelationId = CONTEXT,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> tuple[Message, Message]:
    """The ``http.response.start`` and final ``http.response.body`` messages of ``exc``."""
    payload, raw = problem_parts(
        exc, scope, instance=instance, correlation_id=correlation_id, headers=headers
    )
    start = {"type": "http.response.start", "status": exc.status_code, "headers": raw}
    return start, {"type": "http.response.body", "body": payload, "more_body": False}


async def send_problem(
    exc: GenNetError,
    scope: Scope,
    send: Send,
    *,
    instance: _Instance = PATH,
    correlation_id: _CorrelationId = CONTEXT,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with ``exc`` as ``application/problem+json``."""
    for message in problem_messages(
        exc, scope, instance=instance, correlation_id=correlation_id, headers=headers
    ):
        await send(message)
