"""One connected client: its socket, rooms, and bounded send buffer."""

from __future__ import annotations

import asyncio
from collections import deque

from gennet_toolkit.websocket_manager._wire import WebSocketLike

__all__ = ()


class Close:
    """Queued after the last message by ``disconnect``: close once the rest is sent."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Client:
    """A client's state. The buffer is a deque plus one waiter future, not an
    ``asyncio.Queue``: fan-out to thousands of clients pays for every wake-up."""

    __slots__ = (
        "buf",
        "closed",
        "id",
        "last_sent",
        "rooms",
        "sending_since",
        "task",
        "waiter",
        "websocket",
    )

    def __init__(self, client_id: str, websocket: WebSocketLike, now: float) -> None:
        self.id = client_id
        self.websocket = websocket
        self.buf: deque[str | bytes | Close] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.rooms: set[str] = set()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        # Read by the manager's watchdog: a send running since then (0.0: none), and
        # when the last send started (for heartbeats on idle connections).
        self.sending_since = 0.0
        self.last_sent = now

    def push(self, item: str | bytes | Close) -> None:
        """Append without a bound check (the caller checks) and wake the sender."""
        self.buf.append(item)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
