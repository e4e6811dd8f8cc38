"""Websocket rooms and broadcasts, in one process or across instances sharing a backend.

::

    from gennet_toolkit.websocket_manager import ConnectionManager

    manager = ConnectionManager("redis://127.0.0.1:6379/0")   # or "memory://"
    app = Starlette(routes=[...], lifespan=manager.lifespan)

    async def ws(websocket):
        async with manager.session(websocket, rooms=["lac-operon"]) as client_id:
            async for text in manager.iter_messages(websocket):
                await manager.broadcast("lac-operon", {"from": client_id, "text": text})

Every client has a bounded send queue drained by its own task: a slow client is closed
(1013 or 1008) and never blocks the others. With Redis, one subscription per instance
carries broadcasts, ``send_to``, ``join``/``leave`` and ``disconnect`` to every instance.
"""

from __future__ import annotations

from gennet_toolkit.websocket_manager._manager import ConnectionManager, Overflow
from gennet_toolkit.websocket_manager._wire import (
    Payload,
    ReceivingWebSocket,
    WebSocketLike,
    iter_json,
    iter_messages,
)

__all__ = [
    "ConnectionManager",
    "Overflow",
    "Payload",
    "ReceivingWebSocket",
    "WebSocketLike",
    "iter_json",
    "iter_messages",
]
