"""Response side: decide per response, then compress whole bodies or stream chunk by chunk."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from gennet_toolkit.types import Message, Scope, Send

from ._codecs import Codec
from ._negotiate import vary_covers, weaken_etag
from ._request import Exchange

__all__ = ["NO_COMPRESSION_HEADER", "SKIP_STATE_KEY", "compressing_send", "skip_compression"]

#: A response header the app may set to keep one response uncompressed (for example a
#: page that reflects user input next to a secret: the BREACH case). The middleware
#: removes it before the response leaves.
NO_COMPRESSION_HEADER = "x-gennet-no-compression"
_NO_COMPRESSION = NO_COMPRESSION_HEADER.encode()

#: Key in ``scope["state"]`` (``request.state.gennet_skip_compression`` in Starlette)
#: that keeps the current response uncompressed; see :func:`skip_compression`.
SKIP_STATE_KEY = "gennet_skip_compression"

_NO_BODY_STATUS = frozenset({204, 304})
_PASS, _HOLD, _STREAM, _UNSIZED = 1, 2, 3, 4

_limiter_var: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar(
    "gennet_compression_limiter"
)


def skip_compression(target: Any) -> None:
    """Keep the current response uncompressed: pass the ASGI scope or a Starlette request.

    Use it on routes whose responses reflect user input alongside secrets (BREACH).
    Equivalent to setting the :data:`NO_COMPRESSION_HEADER` response header.
    """
    scope = getattr(target, "scope", target)
    scope.setdefault("state", {})[SKIP_STATE_KEY] = True


def _limiter() -> anyio.CapacityLimiter:
    # A limiter of our own, so compression never starves the threads that run sync
    # endpoints (anyio's default limiter).
    try:
        return _limiter_var.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(8)
        _limiter_var.set(limiter)
        return limiter


async def _offload(fn: Callable[[bytes], bytes], data: bytes) -> bytes:
    # Compressing a large chunk would block the event loop for milliseconds.
    return await anyio.to_thread.run_sync(fn, data, limiter=_limiter())


def inspect_start(
    message: Message,
    scope: Scope,
    codec: Codec | None,
    excluded: Callable[[bytes], bool],
    minimum: int,
) -> tuple[int, Message]:
    """Decide what to do with a response from its start message.

    Returns (_PASS, start) to pass it through (with Vary when the response could have
    been compressed), (_HOLD, start) to hold the start until the first body chunk, or
    (_UNSIZED, start) for the same without a Content-Length.
    """
    raw_headers = message.get("headers", ())
    content_type = b""
    length = b""
    marker = False
    vary = -1  # index of the first Vary header; -2 once it covers Accept-Encoding
    for i, (name, value) in enumerate(raw_headers):
        n = name.lower()
        if n == b"content-type":
            content_type = value
        elif n == b"content-length":
            length = value
        elif n == b"vary":
            if vary != -2:
                if vary_covers(value):
                    vary = -2
                elif vary == -1:
                    vary = i
        elif n == b"content-encoding":
            if value.strip().lower() != b"identity":
                return _PASS, message
        elif n == b"content-range":
            return _PASS, message
        elif n == _NO_COMPRESSION:
            marker = True
    if marker:
        headers = [(n, v) for n, v in raw_headers if n.lower() != _NO_COMPRESSION]
        return _PASS, {**message, "headers": headers}
    status = message["status"]
    if status == 206 or (content_type and excluded(content_type)):
        return _PASS, message
    state = scope.get("state")
    if state and state.get(SKIP_STATE_KEY):
        return _PASS, message
    headers = list(raw_headers)
    if vary == -1:
        headers.append((b"vary", b"Accept-Encoding"))
    elif vary >= 0:
        name, value = headers[vary]
        headers[vary] = (
            name,
            value + b", Accept-Encoding" if value.strip() else b"Accept-Encoding",
        )
    start = {**message, "headers": headers}
    if codec is None or status < 200 or status in _NO_BODY_STATUS:
        return _PASS, start
    if length:
        try:
            if int(length) < minimum:
                return _PASS, start
        except ValueError:
            pass
        return _HOLD, start
    return _UNSIZED, start


def set_encoded(headers: list[tuple[bytes, bytes]], coding: str, length: int | None) -> None:
    """Rewrite held start headers in place for an encoded body (``length=None``: streamed)."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        n = name.lower()
        if n in (b"content-length", b"content-encoding"):
            continue
        out.append((name, weaken_etag(value) if n == b"etag" else value))
    out.append((b"content-encoding", coding.encode()))
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    headers[:] = out


def compressing_send(
    scope: Scope,
    send: Send,
    codec: Codec | None,
    ex: Exchange,
    *,
    excluded: Callable[[bytes], bool],
    minimum: int,
    threshold: int,
    early_headers: bool,
) -> Send:
    """Wrap ``send`` to encode the response with ``codec`` (``None``: Vary only).

    With ``early_headers``, a response without Content-Length is committed to
    compression at once and its start is sent before the first body chunk exists.
    """
    held: Message | None = None
    encoder: Any = None
    # 0: before start, _PASS: pass through, _HOLD: start held until the first body,
    # _STREAM: streaming through ``encoder``
    mode = 0

    async def send_compressed(message: Message) -> None:
        nonlocal held, encoder, mode
        if ex.aborted:
            return
        if mode == _PASS:
            await send(message)
            return
        kind = message["type"]
        if mode == _STREAM:
            if kind == "http.response.body":
                body = message.get("body", b"")
                more = message.get("more_body", False)
                fn = encoder.chunk if more else encoder.finish
                if len(body) >= threshold:
                    out = await _offload(fn, body)
                else:
                    out = fn(body) if body or not more else b""
                await send({"type": "http.response.body", "body": out, "more_body": more})
            else:
                await send(message)
            return
        if mode == 0:
            if kind != "http.response.start":
                await send(message)  # early hints, debug info: before the response
                return
            mode, start = inspect_start(message, scope, codec, excluded, minimum)
            if mode == _UNSIZED and early_headers:
                assert codec is not None
                mode, encoder = _STREAM, codec.stream()
                set_encoded(start["headers"], codec.name, None)
                ex.sent = True
                await send(start)
            elif mode != _PASS:
                mode, held = _HOLD, start
            else:
                ex.sent = True
                await send(start)
            return
        # _HOLD: the start waits for the first body message
        assert held is not None
        assert codec is not None
        start, held = held, None
        if kind != "http.response.body":
            # pathsend, zerocopysend or unknown: send as is, never compress.
            mode = _PASS
            ex.sent = True
            await send(start)
            await send(message)
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        headers: list[tuple[bytes, bytes]] = start["headers"]
        if not more:
            mode = _PASS
            if len(body) >= minimum:
                fn = codec.oneshot
                compressed = await _offload(fn, body) if len(body) >= threshold else fn(body)
                if len(compressed) < len(body):
                    # With trailers the body goes out chunked: no Content-Length.
                    trailers = start.get("trailers", False)
                    set_encoded(headers, codec.name, None if trailers else len(compressed))
                    ex.sent = True
                    await send(start)
                    await send(
                        {"type": "http.response.body", "body": compressed, "more_body": False}
                    )
                    return
            ex.sent = True
            await send(start)
            await send(message)
            return
        mode = _STREAM
        encoder = codec.stream()
        if len(body) >= threshold:
            out = await _offload(encoder.chunk, body)
        else:
            out = encoder.chunk(body) if body else b""
        set_encoded(headers, codec.name, None)
        ex.sent = True
        await send(start)
        await send({"type": "http.response.body", "body": out, "more_body": True})

    return send_compressed
