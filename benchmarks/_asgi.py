"""Drive an ASGI app in-process without an HTTP client in the loop.

httpx's ASGITransport costs far more than any middleware under test, so benchmarks
call the app directly with a prebuilt scope and trivial receive/send callables.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["make_scope", "request_driver", "thirty_route_app"]

Message = dict[str, Any]


def make_scope(
    path: str = "/",
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    query_string: bytes = b"",
) -> dict[str, Any]:
    """An HTTP scope as a server would build it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query_string,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def request_driver(
    app: Callable[..., Awaitable[None]],
    scope: dict[str, Any],
    body: bytes = b"",
) -> Callable[[], Awaitable[None]]:
    """A zero-argument coroutine function that sends one request through ``app``."""
    request_message: Message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> Message:
        return request_message

    async def send(message: Message) -> None:
        return None

    async def one() -> None:
        # A fresh copy: middleware may write into the scope (route, state, ids).
        s = dict(scope)
        s["state"] = {}
        await app(s, receive, send)

    return one


def thirty_route_app(extra_routes: Iterable[Any] = ()) -> Any:
    """A Starlette app with about 30 routes, like a real service; the target is ``/items/{id}``."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def item(request: Any) -> JSONResponse:
        return JSONResponse({"id": request.path_params["item_id"]})

    routes = [Route(f"/r{i}/{{x}}", ok) for i in range(28)]
    routes += [Route("/health", ok), Route("/items/{item_id}", item)]
    routes += list(extra_routes)
    return Starlette(routes=routes)
