"""Tests for gennet_toolkit.logging_middleware: correlation ids, log records, formatters.

The access log and configure_logging (with a real uvicorn) are in
tests/test_logging_middleware_access.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse as FastJSONResponse
from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gennet_toolkit import logging_middleware
from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.exceptions import NotFound, UpstreamError
from gennet_toolkit.logging_middleware import (
    SCOPE_CORRELATION_HEADER,
    SCOPE_CORRELATION_ID,
    CorrelationIdFilter,
    CorrelationIdMiddleware,
    JsonFormatter,
    TextFormatter,
    add_correlation_id,
    bound_correlation_id,
    current_trace_ids,
    get_correlation_id,
    is_hex_or_uuid,
    is_valid_correlation_id,
    new_correlation_id,
)
from gennet_toolkit.types import Message, Receive, Scope, Send

HEX_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
UUID_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
MALFORMED = [
    "abc\r\nX-Injected: 1",
    "line\nbreak",
    "a" * 129,
    "has space",
    'quote"d',
    "percent%0A",
    "{brace}",
    "00000000000000000000000000000000",
    "00000000-0000-0000-0000-000000000000",
    "-leading-dash",
    "\x1b[31mred",
]

pytestmark = pytest.mark.anyio


# ------------------------------------------------------------------ helpers


def http_scope(path: str = "/", headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers if headers is not None else [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def drive(app: Any, scope: Scope) -> list[Message]:
    """Run ``app`` once with a raw scope; return what it sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def response_headers(messages: list[Message], name: bytes) -> list[bytes]:
    start = next(m for m in messages if m["type"] == "http.response.start")
    return [v for k, v in start["headers"] if k.lower() == name]


def client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, **kwargs), base_url="http://test"
    )


async def echo_id_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app answering with the id it sees in context, scope and request header."""
    header = next((v.decode() for k, v in scope["headers"] if k == b"x-request-id"), None)
    body = json.dumps(
        {
            "context": get_correlation_id(),
            "scope": scope.get(SCOPE_CORRELATION_ID),
            "header": header,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def starlette_app(**options: Any) -> Starlette:
    async def show(request: Request) -> JSONResponse:
        return JSONResponse(
            {"id": get_correlation_id(), "header": request.headers.get("x-request-id")}
        )

    return Starlette(
        routes=[Route("/", show)],
        middleware=[Middleware(CorrelationIdMiddleware, **options)],  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------ validators


@pytest.mark.parametrize("value", [HEX_ID, HEX_ID.upper(), UUID_ID, "req-2026.11.28:abc_1", "a"])
def test_default_validator_accepts_hex_uuid_and_safe_tokens(value: str) -> None:
    assert is_valid_correlation_id(value)


@pytest.mark.parametrize("value", [*MALFORMED, "", "é-accent"])
def test_default_validator_rejects_unsafe_or_degenerate_values(value: str) -> None:
    assert not is_valid_correlation_id(value)


def test_strict_validator_accepts_only_hex_or_uuid() -> None:
    assert is_hex_or_uuid(HEX_ID)
    assert is_hex_or_uuid(UUID_ID)
    assert not is_hex_or_uuid("req-abc")
    assert not is_hex_or_uuid(HEX_ID[:-1])
    assert not is_hex_or_uuid("0" * 32)


@given(st.text(max_size=200))
def test_accepted_ids_never_contain_characters_that_break_logs_or_headers(value: str) -> None:
    if is_valid_correlation_id(value):
        assert value.isascii()
        assert not any(c.isspace() or c in "\"'%{}\\;,=" for c in value)
        assert 1 <= len(value) <= 128


@given(st.binary(max_size=140) | st.text(alphabet="0-abcAZ9._:", max_size=140).map(str.encode))
async def test_middleware_accepts_exactly_what_the_validator_accepts(raw: bytes) -> None:
    # The middleware checks the default rule on raw bytes; it must agree with the str form.
    scope = http_scope(headers=[(b"x-request-id", raw)])
    sent = await drive(CorrelationIdMiddleware(echo_id_app), scope)
    kept = response_headers(sent, b"x-request-id") == [raw]
    assert kept == is_valid_correlation_id(raw.decode("latin-1"))


def test_generated_ids_are_uuid4_hex_and_unique() -> None:
    ids = {new_correlation_id() for _ in range(1000)}
    assert len(ids) == 1000
    for cid in list(ids)[:20]:
        assert is_hex_or_uuid(cid)
        assert cid[12] == "4"  # version nibble


def _child_id(conn: Any) -> None:
    conn.send(new_correlation_id())
    conn.close()


def test_a_forked_child_never_reuses_the_parents_pending_ids() -> None:
    import multiprocessing

    new_correlation_id()  # the pool now holds ids drawn in this process
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=_child_id, args=(child_end,))
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads; the child only
        # draws one id and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        proc.start()
    child = parent_end.recv()
    proc.join(10)
    assert proc.exitcode == 0
    assert is_hex_or_uuid(child)
    assert child != new_correlation_id()


def test_ids_generated_from_many_threads_are_unique() -> None:
    out: list[list[str]] = []

    def work() -> None:
        out.append([new_correlation_id() for _ in range(2000)])

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for chunk in out for i in chunk]
    assert len(ids) == len(set(ids)) == 12000


def test_header_name_must_be_a_token() -> None:
    with pytest.raises(ValueError, match="header_name"):
        CorrelationIdMiddleware(echo_id_app, "X Request\r\nID")


def test_public_names_match_all() -> None:
    public = {n for n in dir(logging_middleware) if not n.startswith("_")}
    assert set(logging_middleware.__all__) <= public
    for name in (
        "CorrelationIdMiddleware",
        "get_correlation_id",
        "CorrelationIdFilter",
        "JsonFormatter",
        "AccessLogMiddleware",
        "configure_logging",
    ):
        assert name in logging_middleware.__all__


# ------------------------------------------------------------------ the middleware


async def test_missing_id_is_generated_echoed_and_visible_everywhere() -> None:
    async with client(CorrelationIdMiddleware(echo_id_app)) as c:
        r = await c.get("/")
    cid = r.headers["x-request-id"]
    assert is_hex_or_uuid(cid)
    assert r.json() == {"context": cid, "scope": cid, "header": cid}


@pytest.mark.parametrize("value", [HEX_ID, UUID_ID, "nginx-7f3a.9"])
async def test_valid_incoming_id_is_kept_and_echoed(value: str) -> None:
    async with client(starlette_app()) as c:
        r = await c.get("/", headers={"X-Request-ID": value})
    assert r.headers["x-request-id"] == value
    assert r.json() == {"id": value, "header": value}


class JsonLines(logging.Handler):
    """Formats at emit time, as a real handler does (the context is still set)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def middleware_log() -> Iterator[JsonLines]:
    logger = logging.getLogger("gennet_toolkit.logging_middleware")
    handler = JsonLines()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.mark.parametrize("value", MALFORMED)
async def test_malformed_id_is_replaced_and_never_logged_or_echoed(
    value: str, middleware_log: JsonLines
) -> None:
    scope = http_scope(headers=[(b"x-request-id", value.encode("latin-1"))])
    sent = await drive(CorrelationIdMiddleware(echo_id_app), scope)
    (echoed,) = response_headers(sent, b"x-request-id")
    cid = echoed.decode()
    assert cid != value
    assert is_hex_or_uuid(cid)
    # Inner code sees the replacement in the request headers, not the raw value.
    assert json.loads(sent[1]["body"]) == {"context": cid, "scope": cid, "header": cid}
    assert value.encode("latin-1") not in b"".join(v for _, v in scope["headers"])
    (line,) = middleware_log.lines
    data = json.loads(line)
    assert data["message"].startswith("Rejected a malformed X-Request-ID request header")
    assert data["correlation_id"] == cid  # the line itself carries the new id
    raw_line = json.dumps(data, ensure_ascii=False)
    assert value not in raw_line
    assert json.dumps(value)[1:-1] not in line


async def test_update_request_header_false_keeps_the_request_headers() -> None:
    scope = http_scope(headers=[(b"x-request-id", b"bad value")])
    sent = await drive(CorrelationIdMiddleware(echo_id_app, update_request_header=False), scope)
    body = json.loads(sent[1]["body"])
    assert body["header"] == "bad value"
    assert body["context"] != "bad value"
    assert response_headers(sent, b"x-request-id") == [body["context"].encode()]


async def test_reject_invalid_answers_400_problem_without_echoing_the_value() -> None:
    app = CorrelationIdMiddleware(echo_id_app, reject_invalid=True)
    async with client(app) as c:
        bad = await c.get("/", headers={"X-Request-ID": "evil<script>"})
        good = await c.get("/", headers={"X-Request-ID": HEX_ID})
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"
    problem = bad.json()
    assert problem["code"] == "invalid_correlation_id"
    assert problem["correlation_id"] == bad.headers["x-request-id"]
    assert "evil" not in bad.text
    assert good.status_code == 200


async def test_custom_header_validator_and_generator() -> None:
    app = CorrelationIdMiddleware(
        echo_id_app, "Correlation-ID", validator=is_hex_or_uuid, generator=lambda: "gen-1"
    )
    async with client(app) as c:
        kept = await c.get("/", headers={"Correlation-ID": UUID_ID})
        replaced = await c.get("/", headers={"Correlation-ID": "req-abc"})
    assert kept.headers["correlation-id"] == UUID_ID
    assert replaced.headers["correlation-id"] == "gen-1"
    assert "x-request-id" not in replaced.headers


async def test_scope_carries_id_and_header_name_for_outer_layers() -> None:
    scope = http_scope(headers=[(b"x-request-id", HEX_ID.encode())])
    await drive(CorrelationIdMiddleware(echo_id_app), scope)
    assert scope[SCOPE_CORRELATION_ID] == HEX_ID
    assert scope[SCOPE_CORRELATION_HEADER] == "X-Request-ID"


async def test_context_is_reset_after_each_request_even_on_error() -> None:
    async def boom(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    assert get_correlation_id() is None
    await drive(CorrelationIdMiddleware(echo_id_app), http_scope())
    assert get_correlation_id() is None
    with pytest.raises(RuntimeError):
        await drive(CorrelationIdMiddleware(boom), http_scope())
    assert get_correlation_id() is None


async def test_concurrent_requests_keep_their_own_ids() -> None:
    app = CorrelationIdMiddleware(echo_id_app)
    results: dict[str, Any] = {}

    async def one(i: int) -> None:
        cid = f"req-{i:04d}"
        await anyio.lowlevel.checkpoint()
        sent = await drive(app, http_scope(headers=[(b"x-request-id", cid.encode())]))
        results[cid] = (response_headers(sent, b"x-request-id"), json.loads(sent[1]["body"]))

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(one, i)
    for cid, (echoed, body) in results.items():
        assert echoed == [cid.encode()]
        assert body["context"] == body["scope"] == cid


async def test_id_reaches_background_tasks_threadpool_and_spawned_tasks() -> None:
    seen: dict[str, str | None] = {}
    done = anyio.Event()

    async def later() -> None:
        await asyncio.sleep(0)
        seen["spawned"] = get_correlation_id()
        done.set()

    def in_thread() -> str | None:
        return get_correlation_id()

    async def record_background() -> None:
        seen["background"] = get_correlation_id()

    async def endpoint(request: Request) -> Response:
        seen["endpoint"] = get_correlation_id()
        seen["threadpool"] = await run_in_threadpool(in_thread)
        seen["to_thread"] = await asyncio.to_thread(in_thread)
        request.state.task = asyncio.get_running_loop().create_task(later())
        return PlainTextResponse("ok", background=BackgroundTask(record_background))

    def sync_endpoint(request: Request) -> Response:
        seen["sync_endpoint"] = get_correlation_id()
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/", endpoint), Route("/sync", sync_endpoint)],
        middleware=[Middleware(CorrelationIdMiddleware)],
    )
    async with client(app) as c:
        r = await c.get("/", headers={"X-Request-ID": HEX_ID})
        await done.wait()
        r2 = await c.get("/sync", headers={"X-Request-ID": UUID_ID})
    assert r.status_code == r2.status_code == 200
    assert seen == {
        "endpoint": HEX_ID,
        "threadpool": HEX_ID,
        "to_thread": HEX_ID,
        "spawned": HEX_ID,
        "background": HEX_ID,
        "sync_endpoint": UUID_ID,
    }


async def test_fastapi_sync_dependency_and_exception_handler_see_the_id() -> None:
    app = FastAPI()
    app.add_middleware(CorrelationIdMiddleware)

    def dep() -> str | None:  # runs in the threadpool
        return get_correlation_id()

    class Boom(Exception):
        pass

    @app.exception_handler(Boom)
    async def on_boom(request: Request, exc: Boom) -> FastJSONResponse:
        return FastJSONResponse({"id": get_correlation_id()}, status_code=409)

    @app.get("/genes/{symbol}")
    def gene(symbol: str, from_dep: str | None = Depends(dep)) -> dict[str, Any]:
        return {"dep": from_dep, "endpoint": get_correlation_id()}

    @app.get("/boom")
    async def boom() -> None:
        raise Boom

    async with client(app) as c:
        r = await c.get("/genes/lacZ", headers={"X-Request-ID": HEX_ID})
        b = await c.get("/boom", headers={"X-Request-ID": UUID_ID})
    assert r.json() == {"dep": HEX_ID, "endpoint": HEX_ID}
    assert r.headers["x-request-id"] == HEX_ID
    assert b.status_code == 409
    assert b.json() == {"id": UUID_ID}
    assert b.headers["x-request-id"] == UUID_ID


async def test_header_is_not_duplicated_when_the_app_already_set_it() -> None:
    async def sets_it(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"X-Request-ID", b"mine")]}
        )
        await send({"type": "http.response.body", "body": b""})

    sent = await drive(CorrelationIdMiddleware(sets_it), http_scope())
    assert response_headers(sent, b"x-request-id") == [b"mine"]


async def test_an_app_reusing_its_header_list_is_not_mutated() -> None:
    shared_headers = [(b"content-type", b"text/plain")]
    start = {"type": "http.response.start", "status": 200, "headers": shared_headers}

    async def reuses(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b"x"})

    app = CorrelationIdMiddleware(reuses)
    first = await drive(app, http_scope())
    second = await drive(app, http_scope())
    assert shared_headers == [(b"content-type", b"text/plain")]
    assert start["headers"] is shared_headers
    assert response_headers(first, b"x-request-id") != response_headers(second, b"x-request-id")


async def test_streaming_response_passes_through_chunk_by_chunk() -> None:
    got_first = anyio.Event()

    async def streams(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await got_first.wait()  # would hang if the middleware buffered the body
        await send({"type": "http.response.body", "body": b"b", "more_body": False})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if message.get("body") == b"a":
            got_first.set()

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    with anyio.fail_after(5):
        await CorrelationIdMiddleware(streams)(http_scope(), receive, send)
    assert [m.get("body") for m in sent[1:]] == [b"a", b"b"]


# ------------------------------------------------------------------ errors and the 500 header


async def boom_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("secret database password in message")


async def test_unhandled_exception_still_gets_a_500_with_the_header() -> None:
    app = CorrelationIdMiddleware(boom_app)
    async with client(app, raise_app_exceptions=False) as c:
        r = await c.get("/x-path", headers={"X-Request-ID": HEX_ID})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == HEX_ID
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["correlation_id"] == HEX_ID
    assert "instance" not in r.json()  # no router: no template, and never the raw path
    assert "x-path" not in r.text
    assert "secret" not in r.text


async def test_unhandled_exception_is_reraised_for_the_server_to_log() -> None:
    with pytest.raises(RuntimeError, match="secret"):
        await drive(CorrelationIdMiddleware(boom_app), http_scope())


async def test_client_error_escaping_the_app_keeps_its_status_and_is_not_reraised() -> None:
    async def missing(scope: Scope, receive: Receive, send: Send) -> None:
        raise NotFound("No such gene.")

    sent = await drive(CorrelationIdMiddleware(missing), http_scope())
    assert sent[0]["status"] == 404
    assert response_headers(sent, b"x-request-id")
    assert json.loads(sent[1]["body"])["detail"] == "No such gene."


async def test_upstream_error_escaping_is_rendered_then_reraised() -> None:
    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        raise UpstreamError(headers={"Retry-After": "3"})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(UpstreamError):
        await CorrelationIdMiddleware(upstream)(http_scope(), drive_receive, send)
    assert sent[0]["status"] == 502
    assert response_headers(sent, b"retry-after") == [b"3"]


async def drive_receive() -> Message:
    return {"type": "http.request", "body": b""}


async def test_error_after_response_start_is_reraised_without_a_second_response() -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError, match="mid-stream"):
        await CorrelationIdMiddleware(half)(http_scope(), drive_receive, send)
    assert [m["type"] for m in sent] == ["http.response.start"]


async def test_error_response_false_leaves_the_exception_to_the_outer_layer() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = http_scope()
    with pytest.raises(RuntimeError):
        await CorrelationIdMiddleware(boom_app, error_response=False)(scope, drive_receive, send)
    assert sent == []
    assert is_hex_or_uuid(scope[SCOPE_CORRELATION_ID])


async def test_starlette_add_middleware_500_carries_the_header() -> None:
    # add_middleware puts ServerErrorMiddleware outside ours: the classic missing-header
    # case (asgi-correlation-id#19). Ours answers first, ServerErrorMiddleware sends nothing.
    async def fails(request: Request) -> Response:
        raise RuntimeError("boom")

    app = Starlette(routes=[Route("/", fails)], middleware=[Middleware(CorrelationIdMiddleware)])
    async with client(app, raise_app_exceptions=False) as c:
        r = await c.get("/", headers={"X-Request-ID": HEX_ID})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == HEX_ID


def error_handler_module() -> Any:
    return pytest.importorskip("gennet_toolkit.error_handler")


async def test_recommended_order_error_handler_inside_renders_500_with_header() -> None:
    eh = error_handler_module()
    app = CorrelationIdMiddleware(eh.ErrorHandlerMiddleware(boom_app))
    async with client(app) as c:  # nothing escapes: raise_app_exceptions stays on
        r = await c.get("/", headers={"X-Request-ID": HEX_ID})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == HEX_ID
    assert r.json()["correlation_id"] == HEX_ID
    assert "secret" not in r.text


@pytest.mark.parametrize("error_response", [True, False])
async def test_reversed_order_error_handler_outside_still_has_header(error_response: bool) -> None:
    eh = error_handler_module()
    app = eh.ErrorHandlerMiddleware(
        CorrelationIdMiddleware(boom_app, error_response=error_response)
    )
    async with client(app, raise_app_exceptions=False) as c:
        r = await c.get("/", headers={"X-Request-ID": HEX_ID})
    assert r.status_code == 500
    assert r.headers.get_list("x-request-id") == [HEX_ID]
    assert r.json()["correlation_id"] == HEX_ID


async def test_reversed_order_keeps_client_error_status() -> None:
    eh = error_handler_module()

    async def missing(scope: Scope, receive: Receive, send: Send) -> None:
        raise NotFound()

    app = eh.ErrorHandlerMiddleware(CorrelationIdMiddleware(missing))
    async with client(app) as c:
        r = await c.get("/", headers={"X-Request-ID": HEX_ID})
    assert r.status_code == 404
    assert r.headers.get_list("x-request-id") == [HEX_ID]


# ------------------------------------------------------------------ websocket and lifespan


async def drive_websocket(app: Any, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
    }
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_websocket_gets_an_id_in_context_and_accept_headers() -> None:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(get_correlation_id() or "")
        await websocket.close()

    app = Starlette(
        routes=[WebSocketRoute("/ws", ws)], middleware=[Middleware(CorrelationIdMiddleware)]
    )
    sent = await drive_websocket(app, [(b"x-request-id", HEX_ID.encode())])
    accept, text, close = sent
    assert accept["type"] == "websocket.accept"
    assert (b"x-request-id", HEX_ID.encode()) in accept["headers"]
    assert text == {"type": "websocket.send", "text": HEX_ID}
    assert close["type"] == "websocket.close"
    assert get_correlation_id() is None


async def test_websocket_with_malformed_id_is_closed_in_strict_mode() -> None:
    reached = []

    async def ws(websocket: WebSocket) -> None:
        reached.append(True)
        await websocket.accept()

    app = CorrelationIdMiddleware(
        Starlette(routes=[WebSocketRoute("/ws", ws)]), reject_invalid=True
    )
    sent = await drive_websocket(app, [(b"x-request-id", b"bad id")])
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert reached == []


async def test_lifespan_passes_through_untouched() -> None:
    events: list[tuple[str, str | None]] = []
    seen_scope: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen_scope.append(scope)
        while True:
            message = await receive()
            events.append((message["type"], get_correlation_id()))
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    await CorrelationIdMiddleware(app)(scope, receive, send)
    assert events == [("lifespan.startup", None), ("lifespan.shutdown", None)]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert seen_scope == [{"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}]


# ------------------------------------------------------------------ configuration


def test_from_env_reads_header_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVC_REQUEST_ID_HEADER", "X-Correlation-ID")
    monkeypatch.setenv("SVC_REQUEST_ID_REJECT_INVALID", "true")
    monkeypatch.setenv("SVC_REQUEST_ID_ERROR_RESPONSE", "0")
    mw = CorrelationIdMiddleware.from_env(echo_id_app, prefix="SVC_")
    assert mw.header_name == "X-Correlation-ID"
    assert mw.reject_invalid is True
    assert mw.error_response is False
    assert mw.update_request_header is True
    default = CorrelationIdMiddleware.from_env(echo_id_app, prefix="NOPE_")
    assert (default.header_name, default.reject_invalid) == ("X-Request-ID", False)


def test_bound_correlation_id_sets_and_restores() -> None:
    assert get_correlation_id() is None
    with bound_correlation_id() as outer:
        assert get_correlation_id() == outer
        with bound_correlation_id("task-7") as inner:
            assert inner == "task-7"
            assert get_correlation_id() == "task-7"
        assert get_correlation_id() == outer
    assert get_correlation_id() is None


def test_importing_the_module_loads_neither_starlette_nor_opentelemetry() -> None:
    code = (
        "import sys, logging; import gennet_toolkit.logging_middleware as m; "
        "top = {n.split('.')[0] for n in sys.modules}; "
        "bad = top & {'starlette', 'opentelemetry', 'structlog'}; "
        "assert not bad, bad; assert logging.getLogger().handlers == [], 'configured logging'; "
        "assert m.current_trace_ids() == (None, None); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ------------------------------------------------------------------ log records


def make_record(msg: str = "hello", *args: Any, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("tests.records")
    return logger.makeRecord(
        "tests.records", logging.INFO, __file__, 1, msg, args, None, extra=extra
    )


@pytest.fixture
def tracer() -> Iterator[Any]:
    # A private provider: spans are context-based, no global provider needed.
    provider = TracerProvider()
    yield provider.get_tracer("tests")
    provider.shutdown()


def test_filter_adds_ids_inside_a_request_and_placeholders_outside() -> None:
    f = CorrelationIdFilter()
    outside = make_record()
    assert f.filter(outside) is True
    assert (outside.correlation_id, outside.trace_id, outside.span_id) == ("-", "-", "-")  # type: ignore[attr-defined]
    with bound_correlation_id(HEX_ID):
        inside = make_record()
        f.filter(inside)
    assert inside.correlation_id == HEX_ID  # type: ignore[attr-defined]


def test_filter_trims_and_keeps_explicit_extra() -> None:
    f = CorrelationIdFilter(uuid_length=8, default=None)
    with bound_correlation_id(HEX_ID):
        trimmed = make_record()
        f.filter(trimmed)
        explicit = make_record(correlation_id="from-task")
        f.filter(explicit)
    assert trimmed.correlation_id == HEX_ID[:8]  # type: ignore[attr-defined]
    assert trimmed.trace_id is None  # type: ignore[attr-defined]
    assert explicit.correlation_id == "from-task"  # type: ignore[attr-defined]


def test_trace_and_span_ids_come_from_the_active_span(tracer: Any) -> None:
    with tracer.start_as_current_span("work") as span:
        ctx = span.get_span_context()
        record = make_record()
        CorrelationIdFilter().filter(record)
        ids = current_trace_ids()
    assert record.trace_id == format(ctx.trace_id, "032x")  # type: ignore[attr-defined]
    assert record.span_id == format(ctx.span_id, "016x")  # type: ignore[attr-defined]
    assert ids == (record.trace_id, record.span_id)  # type: ignore[attr-defined]
    assert current_trace_ids() == (None, None)


def test_filter_on_a_handler_formats_text_lines() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CorrelationIdFilter())
    handler.setFormatter(logging.Formatter("[%(correlation_id)s] %(message)s"))
    logger = logging.getLogger("tests.filter.handler")
    logger.addHandler(handler)
    try:
        logger.warning("outside")
        with bound_correlation_id("abc-1"):
            logger.warning("inside")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == ["[-] outside", "[abc-1] inside"]


def test_structlog_processor_with_real_structlog(tracer: Any) -> None:
    structlog = pytest.importorskip("structlog")
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[add_correlation_id, structlog.processors.JSONRenderer()],
    )
    assert json.loads(log.info("outside")) == {"event": "outside"}
    with bound_correlation_id(HEX_ID), tracer.start_as_current_span("s") as span:
        inside = json.loads(log.info("inside"))
        bound = json.loads(log.bind(correlation_id="explicit").info("bound"))
    assert inside["correlation_id"] == HEX_ID
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert bound["correlation_id"] == "explicit"


def test_structlog_processor_signature_without_structlog() -> None:
    with bound_correlation_id("x-1"):
        assert add_correlation_id(None, "info", {"event": "e"}) == {
            "event": "e",
            "correlation_id": "x-1",
        }


# ------------------------------------------------------------------ formatters


INJECTIONS = [
    "a\nb",
    "a\r\nFAKE 200",
    "a\u2028b",
    "a\u2029b",
    "a\x85b",
    "a\x1b[2Jb",
    "a\x00b",
    "a\x1cb",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_json_formatter_writes_exactly_one_line_whatever_the_message(text: str) -> None:
    record = make_record("user said %s", text, note=text)
    line = JsonFormatter().format(record)
    assert len(line.splitlines()) == 1
    assert line.isascii()
    data = json.loads(line)
    assert data["message"] == f"user said {text}"
    assert data["note"] == text


def test_json_formatter_core_fields_ids_static_and_extra() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    fmt = JsonFormatter(static_fields={"service": "grn", "level": "ignored"})
    with bound_correlation_id(HEX_ID):
        record = make_record("n=%d", 3, genes=["lacZ"], obj=Opaque(), level_extra=1)
        data = json.loads(fmt.format(record))
    assert data["message"] == "n=3"
    assert data["level"] == "INFO"
    assert data["logger"] == "tests.records"
    assert data["timestamp"].endswith("Z")
    assert data["correlation_id"] == HEX_ID
    assert "trace_id" not in data
    assert data["service"] == "grn"
    assert data["genes"] == ["lacZ"]
    assert data["obj"] == "<opaque>"
    assert "exception" not in data


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
@example(1764362796.541)  # 1764362796540999.8 µs: truncating instead of rounding shows .540
@example(1764362796.9999996)  # rounds up into the next second
def test_json_timestamps_match_datetime_isoformat(created: float) -> None:
    from datetime import UTC, datetime

    record = make_record()
    record.created = created
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert json.loads(JsonFormatter().format(record))["timestamp"] == expected[:-6] + "Z"


def test_json_formatter_extra_cannot_replace_core_fields() -> None:
    record = make_record("real", level="FAKE", logger="fake", timestamp="never")
    data = json.loads(JsonFormatter().format(record))
    assert (data["level"], data["logger"]) == ("INFO", "tests.records")
    assert data["timestamp"] != "never"


def test_json_formatter_puts_exceptions_in_a_field() -> None:
    logger = logging.getLogger("tests.exc")
    logger.setLevel(logging.INFO)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            logger.exception("failed")
        logger.info("stack", stack_info=True)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    failed, stack = (json.loads(line) for line in lines)
    assert failed["exception"]["type"] == "builtins.ValueError"
    assert failed["exception"]["message"] == "bad\nvalue"
    assert "Traceback" in failed["exception"]["stacktrace"]
    assert failed["message"] == "failed"
    assert "Stack (most recent call last)" in stack["stack"]


def test_json_formatter_uses_filter_values_when_present() -> None:
    record = make_record()
    CorrelationIdFilter(default=None).filter(record)
    record.correlation_id = "set-by-filter"  # type: ignore[attr-defined]
    assert json.loads(JsonFormatter().format(record))["correlation_id"] == "set-by-filter"
    placeholder = make_record()
    CorrelationIdFilter().filter(placeholder)  # "-" placeholders are not ids
    assert "correlation_id" not in json.loads(JsonFormatter().format(placeholder))


@pytest.mark.parametrize("text", INJECTIONS)
def test_text_formatter_escapes_control_characters_in_the_message(text: str) -> None:
    record = make_record("got %s", text)
    CorrelationIdFilter().filter(record)
    line = TextFormatter("%(levelname)s [%(correlation_id)s] %(message)s").format(record)
    assert len(line.splitlines()) == 1
    assert line.startswith("INFO [-] got a")


def test_text_formatter_without_the_filter_shows_placeholders() -> None:
    line = TextFormatter("[%(correlation_id)s %(trace_id)s] %(message)s").format(make_record())
    assert line == "[- -] hello"


def test_text_formatter_keeps_traceback_lines() -> None:
    try:
        raise KeyError("k")
    except KeyError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.ERROR, "f", 1, "x\ny", (), sys.exc_info()
        )
    CorrelationIdFilter().filter(record)
    out = TextFormatter().format(record)
    first, *rest = out.splitlines()
    assert first.endswith("[-] x\\x0ay")
    assert rest[0].startswith("Traceback")


def test_filter_and_formatter_are_thread_safe_per_context() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CorrelationIdFilter(default=None))
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.threads")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False

    def work(i: int) -> None:
        with bound_correlation_id(f"t-{i}"):
            for _ in range(20):
                logger.info("from %d", i)

    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 160
    assert all(d["correlation_id"] == f"t-{d['message'].split()[-1]}" for d in lines)


def test_context_var_is_the_shared_one() -> None:
    token = correlation_id_var.set("shared")
    try:
        assert get_correlation_id() == "shared"
    finally:
        correlation_id_var.reset(token)


def test_ids_survive_a_queue_handler_when_the_filter_is_on_the_queue_side() -> None:
    import logging.handlers
    import queue

    q: queue.Queue[logging.LogRecord] = queue.Queue()
    producer = logging.handlers.QueueHandler(q)
    producer.addFilter(CorrelationIdFilter(default=None))
    stream = io.StringIO()
    sink = logging.StreamHandler(stream)
    sink.setFormatter(JsonFormatter())
    listener = logging.handlers.QueueListener(q, sink)
    logger = logging.getLogger("tests.queue")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(producer)
    listener.start()
    try:
        with bound_correlation_id("queued-1"):
            logger.info("via queue")
    finally:
        listener.stop()
        logger.removeHandler(producer)
        logger.propagate = True
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["correlation_id"] == "queued-1"


def run_docs_example(page: str, driver: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the first Python block of ``docs/<page>``, then ``driver``, in a fresh process."""
    text = (Path(__file__).resolve().parents[1] / "docs" / page).read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("\n```", 1)[0]
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code + "\n" + textwrap.dedent(driver)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_docs_example_runs_as_printed(tmp_path: Path) -> None:
    driver = """
        from starlette.testclient import TestClient
        with TestClient(app) as c:
            r = c.get("/genes/lacZ", headers={"X-Request-ID": "4bf92f3577b34da6a3ce929d0e0e4736"})
        print(r.status_code, r.json()["request"], r.headers["x-request-id"])
    """
    out = run_docs_example("logging_middleware.md", driver, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["200", HEX_ID, HEX_ID]
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    grn = [line for line in lines if line["logger"] == "grn"]
    assert [line["message"] for line in grn] == ["looking up lacZ", "notified about lacZ"]
    assert {line["correlation_id"] for line in grn} == {HEX_ID}
    (access,) = [line for line in lines if line["logger"] == "gennet_toolkit.access"]
    assert (access["route"], access["status"], access["correlation_id"]) == (
        "/genes/{symbol}",
        200,
        HEX_ID,
    )
