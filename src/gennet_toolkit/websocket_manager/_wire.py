"""Outgoing message encoding, the envelope instances exchange, and inbound reading."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ()

logger = logging.getLogger("gennet_toolkit.websocket_manager")

#: What ``broadcast`` and ``send_to`` accept: JSON-serialisable data, text or bytes.
Payload = Mapping[str, Any] | Sequence[Any] | str | bytes | bytearray | memoryview

#: Close codes (RFC 6455 section 7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
INVALID_DATA = 1007
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013

MAX_NAME = 256
_VERSION = 1


class WebSocketLike(Protocol):
    """What the manager needs from a socket: Starlette's ``WebSocket`` has it all."""

    def send_text(self, data: str) -> Awaitable[None]:
        """Send one text frame."""
        ...

    def send_bytes(self, data: bytes) -> Awaitable[None]:
        """Send one binary frame."""
        ...

    def close(self, code: int = 1000, reason: str | None = None) -> Awaitable[None]:
        """Close the connection with ``code``."""
        ...


class ReceivingWebSocket(Protocol):
    """A socket with ASGI-level ``receive()`` and ``close()`` (Starlette's ``WebSocket``)."""

    def receive(self) -> Awaitable[Mapping[str, Any]]:
        """The next ASGI websocket message."""
        ...

    def close(self, code: int = 1000, reason: str | None = None) -> Awaitable[None]:
        """Close the connection with ``code``."""
        ...


def encode(message: Payload) -> str | bytes:
    """One frame's content: ``str`` as text, bytes-likes as binary, anything else as JSON."""
    if isinstance(message, str):
        return message
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    # Compact, and NaN refused: browsers' JSON.parse rejects it.
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(slots=True)
class Envelope:
    """One message between instances: what to do, where, and who sent it."""

    op: str  # "msg" | "join" | "leave" | "close" | "close_room" | "gap" | "probe"
    origin: str
    room: str | tuple[str, ...] | None = None  # a tuple: any of these rooms
    target: str | None = None
    exclude: tuple[str, ...] = ()
    data: str | bytes = ""
    code: int = NORMAL

    def pack(self) -> bytes:
        """A JSON header line, then the raw payload (text as UTF-8 or bytes)."""
        header: dict[str, Any] = {"v": _VERSION, "op": self.op, "o": self.origin}
        if self.room is not None:
            header["r"] = self.room if isinstance(self.room, str) else list(self.room)
        if self.target is not None:
            header["t"] = self.target
        if self.exclude:
            header["x"] = list(self.exclude)
        if self.code != NORMAL:
            header["c"] = self.code
        if isinstance(self.data, bytes):
            header["b"] = 1
            payload = self.data
        else:
            payload = self.data.encode()
        # json.dumps escapes newlines, so the first b"\n" ends the header.
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload

    @classmethod
    def unpack(cls, raw: bytes) -> Envelope | None:
        """The envelope in ``raw``, or ``None`` when it is not one of ours."""
        head, sep, payload = raw.partition(b"\n")
        if not sep:
            return None
        try:
            header = json.loads(head)
            if not isinstance(header, dict) or header.get("v") != _VERSION:
                return None
            data: str | bytes = payload if header.get("b") else payload.decode()
            exclude = header.get("x", ())
            room = header.get("r")
            return cls(
                op=str(header["op"]),
                origin=str(header["o"]),
                room=tuple(str(r) for r in room) if isinstance(room, list) else room,
                target=header.get("t"),
                exclude=tuple(str(x) for x in exclude),
                data=data,
                code=int(header.get("c", NORMAL)),
            )
        except (ValueError, KeyError, TypeError):
            return None


def _too_big(data: str | bytes, max_size: int) -> bool:
    if isinstance(data, bytes):
        return len(data) > max_size
    # A character is 1-4 UTF-8 bytes: encode only when the length alone cannot tell.
    if len(data) * 4 <= max_size:
        return False
    return len(data) > max_size or len(data.encode()) > max_size


async def iter_messages(
    websocket: ReceivingWebSocket, *, max_size: int = 65536
) -> AsyncGenerator[str | bytes, None]:
    """Yield each inbound message (``str`` or ``bytes``) until the client disconnects.

    A message larger than ``max_size`` bytes (UTF-8 for text) closes the socket with
    1009 (message too big) and ends the iteration. The ASGI server has already
    buffered the frame by then: cap frames there too (uvicorn ``--ws-max-size``).
    """
    if max_size < 1:
        raise ValueError("max_size must be >= 1")
    while True:
        message = await websocket.receive()
        kind = message.get("type")
        if kind == "websocket.disconnect":
            return
        if kind != "websocket.receive":
            continue
        data = message.get("text")
        if data is None:
            data = message.get("bytes")
        if data is None:
            continue
        if _too_big(data, max_size):
            logger.info("websocket message over %d bytes: closing with 1009", max_size)
            await websocket.close(code=MESSAGE_TOO_BIG, reason="message too big")
            return
        yield data


async def iter_json(
    websocket: ReceivingWebSocket, *, max_size: int = 65536
) -> AsyncGenerator[Any, None]:
    """Like :func:`iter_messages`, decoding each message as JSON.

    A message that is not valid JSON (or not UTF-8) closes the socket with 1007
    (invalid payload data) and ends the iteration.
    """
    async with contextlib.aclosing(iter_messages(websocket, max_size=max_size)) as messages:
        async for data in messages:
            try:
                value = json.loads(data)
            except ValueError:  # UnicodeDecodeError is a ValueError too
                logger.info("websocket message is not valid JSON: closing with 1007")
                await websocket.close(code=INVALID_DATA, reason="invalid JSON")
                return
            yield value
