"""Shared helpers for the websocket_manager tests: fake sockets and a chat-style app."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gennet_toolkit.websocket_manager import ConnectionManager


class FakeSocket:
    """An in-process socket: records frames and its close code; can be made to stall."""

    def __init__(self, *, stall: bool = False) -> None:
        self.sent: list[str | bytes] = []
        self.closed: int | None = None
        self.stall = stall
        self.got = asyncio.Event()

    async def send_text(self, data: str) -> None:
        if self.stall:
            await asyncio.Event().wait()  # a client that never reads
        self.sent.append(data)
        self.got.set()

    async def send_bytes(self, data: bytes) -> None:
        await self.send_text(data)  # type: ignore[arg-type]

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = code


async def until(predicate: Any, within: float = 10.0) -> None:
    """Wait for ``predicate()`` to hold (a bounded wait, not a timing assertion)."""
    async with asyncio.timeout(within):
        # Polling on purpose: the predicates read state no event announces.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def chat_endpoint(manager: ConnectionManager, websocket: WebSocket) -> None:
    """Commands as JSON: join/leave/say/to/whoami; the test drives everything through them."""
    cid = websocket.query_params.get("id")
    async with manager.session(websocket, cid, rooms=["lobby"]) as client_id:
        async for cmd in manager.iter_json(websocket):
            if "join" in cmd:
                await manager.join(client_id, cmd["join"])
                await manager.send_to(client_id, {"joined": cmd["join"]})
            elif "leave" in cmd:
                await manager.leave(client_id, cmd["leave"])
                await manager.send_to(client_id, {"left": cmd["leave"]})
            elif "say" in cmd:
                await manager.broadcast(
                    cmd["say"], cmd["text"], exclude=client_id if cmd.get("quiet") else ()
                )
            elif "to" in cmd:
                await manager.send_to(cmd["to"], {"dm": cmd["text"], "from": client_id})
            elif "bytes" in cmd:
                await manager.broadcast(cmd["bytes"], cmd["text"].encode())
            elif "whoami" in cmd:
                await manager.send_to(client_id, {"id": client_id})


def starlette_app(manager: ConnectionManager) -> Starlette:
    """The chat app on Starlette, with HTTP routes to broadcast and to shut down."""

    async def ws(websocket: WebSocket) -> None:
        await chat_endpoint(manager, websocket)

    async def post(request: Request) -> JSONResponse:
        body = await request.json()
        n = await manager.broadcast(body.get("room"), body["message"])
        return JSONResponse({"queued": n, "presence": manager.presence()})

    async def shutdown(request: Request) -> JSONResponse:
        await manager.aclose()
        return JSONResponse({})

    return Starlette(
        routes=[
            WebSocketRoute("/ws", ws),
            Route("/broadcast", post, methods=["POST"]),
            Route("/shutdown", shutdown, methods=["POST"]),
        ],
        lifespan=manager.lifespan,
    )


def fastapi_app(manager: ConnectionManager) -> FastAPI:
    """The same chat app on FastAPI."""
    app = FastAPI(lifespan=manager.lifespan)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await chat_endpoint(manager, websocket)

    @app.post("/broadcast")
    async def post(request: Request) -> dict[str, Any]:
        body = await request.json()
        n = await manager.broadcast(body.get("room"), body["message"])
        return {"queued": n, "presence": manager.presence()}

    @app.post("/shutdown")
    async def shutdown() -> dict[str, Any]:
        await manager.aclose()
        return {}

    return app
