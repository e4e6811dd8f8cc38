"""Request side: inflate compressed request bodies as the app reads them, with a cap."""

from __future__ import annotations

from gennet_toolkit._problem import problem_messages
from gennet_toolkit.exceptions import BadRequest, GenNetError, PayloadTooLarge
from gennet_toolkit.types import Message, Receive, Scope, Send

from ._codecs import DecodeError, Decoder

__all__ = ["Aborted", "Exchange", "inflating_receive"]

# Output per receive() while inflating: small enough that no single message is large,
# big enough that per-message overhead does not matter.
PIECE = 64 * 1024


class Aborted(Exception):
    """Raised into the app from ``receive`` after the middleware answered the request."""


class Exchange:
    """Per-request flags shared by the send and receive wrappers."""

    __slots__ = ("aborted", "responded", "sent")

    def __init__(self) -> None:
        self.sent = False  # http.response.start has gone to the server
        self.aborted = False  # the middleware answered; the app's messages are dropped
        self.responded = False


def _corrupt(what: str) -> BadRequest:
    return BadRequest(f"The compressed request body is {what}.", code="corrupt_request_encoding")


def inflating_receive(
    scope: Scope, receive: Receive, send: Send, decoder: Decoder, ex: Exchange, *, cap: int
) -> Receive:
    """A ``receive`` that yields the inflated body in pieces of at most about 64 KiB.

    Past ``cap`` inflated bytes, or on corrupt or truncated data, it answers the client
    itself (413 with ``Connection: close`` / 400) through ``send``, unless the response
    has started, and raises :class:`Aborted` into the app. Raising alone would not do:
    frameworks turn errors while reading a body into their own 400 (FastAPI does).
    """
    produced = 0
    consumed = 0
    upstream_done = False
    finished = False

    async def abort(exc: GenNetError) -> Aborted:
        ex.aborted = True
        if not ex.sent:
            ex.sent = ex.responded = True
            start, body = problem_messages(exc, scope)
            await send(start)
            await send(body)
        return Aborted(exc.code)

    async def receive_inflated() -> Message:
        nonlocal produced, consumed, upstream_done, finished
        if ex.aborted:
            # An app that swallowed Aborted and reads on gets what a gone client gives.
            return {"type": "http.disconnect"}
        if finished:
            return await receive()
        stalled = 0
        while True:
            if decoder.pending():
                data = b""
            elif upstream_done:
                # An empty body is allowed even with a Content-Encoding header.
                if consumed and not decoder.finished():
                    raise await abort(_corrupt("truncated"))
                finished = True
                return {"type": "http.request", "body": b"", "more_body": False}
            else:
                message = await receive()
                if message["type"] != "http.request":
                    return message  # http.disconnect and anything else, untouched
                data = message.get("body", b"")
                consumed += len(data)
                upstream_done = not message.get("more_body", False)
            try:
                # At most cap + 1 bytes in total: enough to know the cap was passed,
                # never the rest of a bomb.
                out = decoder.feed(data, min(PIECE, cap - produced + 1))
            except DecodeError:
                raise await abort(_corrupt("corrupt")) from None
            produced += len(out)
            if produced > cap:
                raise await abort(
                    PayloadTooLarge(
                        f"The decompressed request body exceeds {cap} bytes.",
                        code="decompressed_body_too_large",
                        headers={"Connection": "close"},
                    )
                )
            if out:
                more = not upstream_done or decoder.pending()
                if not more:
                    if not decoder.finished():
                        raise await abort(_corrupt("truncated"))
                    finished = True
                return {"type": "http.request", "body": out, "more_body": more}
            if not data:
                # Guards against a decoder that claims pending output but yields none.
                stalled += 1
                if stalled > 3:
                    raise await abort(_corrupt("corrupt"))

    return receive_inflated
