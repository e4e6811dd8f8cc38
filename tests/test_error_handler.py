"""ErrorHandlerMiddleware, install_error_handlers and problem_response."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.error_handler import (
    PROBLEM_JSON,
    ErrorHandlerMiddleware,
    install_error_handlers,
    problem_response,
)
from gennet_toolkit.exceptions import NotFound, RateLimitExceeded, ServiceUnavailable
from gennet_toolkit.types import Message

pytestmark = pytest.mark.anyio

SECRET = "password=hunter2 SELECT * FROM users"


class Gene(BaseModel):
    symbol: str
    weight: float


async def _not_found(request: Request) -> JSONResponse:
    raise NotFound("Network 42 does not exist.")


async def _boom(request: Request) -> JSONResponse:
    raise RuntimeError(SECRET)


async def _json(request: Request) -> JSONResponse:
    return JSONResponse(await request.json())


async def _decode_bug(request: Request) -> JSONResponse:
    return JSONResponse({"text": SECRET.encode("utf-16").decode("utf-8")})


async def _limited(request: Request) -> JSONResponse:
    raise RateLimitExceeded(retry_after=1.2)


async def _http_exc(request: Request) -> JSONResponse:
    raise HTTPException(status_code=409, detail="Already there.")


async def _not_modified(request: Request) -> JSONResponse:
    raise HTTPException(status_code=304, headers={"ETag": '"v1"'})


async def _stream_then_fail(request: Request) -> StreamingResponse:
    async def body() -> Any:
        yield b"first chunk\n"
        raise RuntimeError(SECRET)

    return StreamingResponse(body(), media_type="text/plain")


ROUTES = [
    Route("/missing", _not_found),
    Route("/boom", _boom),
    Route("/json", _json, methods=["POST"]),
    Route("/decode-bug", _decode_bug),
    Route("/limited", _limited),
    Route("/conflict", _http_exc),
    Route("/cached", _not_modified),
    Route("/stream", _stream_then_fail),
]


def starlette_wrapped() -> Any:
    return ErrorHandlerMiddleware(Starlette(routes=ROUTES))


def starlette_installed() -> Any:
    app = Starlette(routes=ROUTES)
    install_error_handlers(app)
    return app


def fastapi_wrapped() -> Any:
    app = FastAPI()
    for r in ROUTES:
        app.router.routes.append(r)
    return ErrorHandlerMiddleware(app)


def fastapi_installed() -> Any:
    app = FastAPI()
    for r in ROUTES:
        app.router.routes.append(r)
    install_error_handlers(app)
    return app


APPS = pytest.mark.parametrize(
    "make_app",
    [starlette_wrapped, starlette_installed, fastapi_wrapped, fastapi_installed],
    ids=["starlette-middleware", "starlette-handlers", "fastapi-middleware", "fastapi-handlers"],
)


def client(app: Any, *, raise_app_exceptions: bool = False) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@APPS
async def test_not_found_is_problem_json(make_app: Any) -> None:
    async with client(make_app()) as c:
        r = await c.get("/missing")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM_JSON
    body = r.json()
    assert body["type"] == "urn:gennet:problem:not_found"
    assert body["title"] == "Not Found"
    assert body["status"] == 404
    assert body["detail"] == "Network 42 does not exist."
    assert body["code"] == "not_found"
    assert body["instance"] == "/missing"


@APPS
async def test_malformed_json_body_is_400(make_app: Any) -> None:
    async with client(make_app()) as c:
        r = await c.post(
            "/json", content=b'{"gene": "lacZ",', headers={"content-type": "application/json"}
        )
    assert r.status_code == 400
    assert r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["code"] == "invalid_json"
    assert "lacZ" not in r.text


@APPS
@pytest.mark.parametrize("body", [b'\xff\xfe{"a":1}', b"\xc3(", b'\x00\x00\x00{"a"'])
async def test_json_body_that_is_not_text_is_400(make_app: Any, body: bytes) -> None:
    # json.loads raises UnicodeDecodeError, not JSONDecodeError, for these bytes.
    async with client(make_app(), raise_app_exceptions=True) as c:
        r = await c.post("/json", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["code"] == "invalid_json"


@APPS
async def test_unicode_error_not_from_a_request_body_stays_an_opaque_500(make_app: Any) -> None:
    async with client(make_app()) as c:
        r = await c.get("/decode-bug")
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error"
    assert "utf" not in r.text.lower()


@pytest.mark.parametrize("wrap", [True, False], ids=["middleware", "handlers"])
async def test_fastapi_model_body_that_is_not_json_is_400_not_a_field_error(wrap: bool) -> None:
    app = FastAPI()

    @app.post("/genes")
    async def create(gene: Gene) -> dict[str, str]:
        return {"symbol": gene.symbol}

    asgi: Any = ErrorHandlerMiddleware(app) if wrap else app
    if not wrap:
        install_error_handlers(app)
    async with client(asgi) as c:
        r = await c.post(
            "/genes",
            content=b'{"symbol": "lacZ-secret",',
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 400
    assert r.headers["content-type"] == PROBLEM_JSON
    body = r.json()
    assert body["code"] == "invalid_json"
    assert "errors" not in body  # FastAPI's error sits at a character offset, not a field
    assert "lacZ-secret" not in r.text


@APPS
async def test_unhandled_exception_is_opaque_500(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gennet_toolkit.error_handler"):
        async with client(make_app()) as c:
            r = await c.get("/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM_JSON
    assert "hunter2" not in r.text
    assert "SELECT" not in r.text
    assert "Traceback" not in r.text
    assert "RuntimeError" not in r.text
    assert r.json()["code"] == "internal_error"
    # The details go to the log, once.
    records = [rec for rec in caplog.records if rec.exc_info]
    assert len(records) == 1
    assert "hunter2" in str(records[0].exc_info[1])


@APPS
async def test_retry_after_header_rides_with_429(make_app: Any) -> None:
    async with client(make_app()) as c:
        r = await c.get("/limited")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"


@APPS
async def test_starlette_http_exception_keeps_status_and_detail(make_app: Any) -> None:
    async with client(make_app()) as c:
        r = await c.get("/conflict")
    assert r.status_code == 409
    assert r.json()["detail"] == "Already there."


@APPS
async def test_http_exception_below_400_is_answered_as_starlette_does_not_as_500(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gennet_toolkit.error_handler"):
        async with client(make_app(), raise_app_exceptions=True) as c:
            r = await c.get("/cached")
    assert r.status_code == 304
    assert r.headers["etag"] == '"v1"'
    assert r.content == b""
    assert not caplog.records  # a conditional GET is not an incident


@pytest.mark.parametrize("make_app", [starlette_installed, fastapi_installed])
async def test_router_404_and_405_become_problems(make_app: Any) -> None:
    async with client(make_app()) as c:
        r404 = await c.get("/no/such/route")
        r405 = await c.delete("/missing")
    assert r404.status_code == 404
    assert r404.headers["content-type"] == PROBLEM_JSON
    assert r405.status_code == 405
    assert r405.headers["content-type"] == PROBLEM_JSON
    assert "allow" in r405.headers


async def test_fastapi_request_validation_gives_pointers_without_values() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/genes")
    async def create(gene: Gene) -> dict[str, str]:
        return {"symbol": gene.symbol}

    async with client(app) as c:
        r = await c.post("/genes", json={"symbol": "lacZ", "weight": "very-secret-value"})
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_failed"
    assert body["errors"][0]["pointer"] == "#/weight"
    assert body["errors"][0]["location"] == "body"
    assert "very-secret-value" not in r.text


async def test_error_after_headers_sent_reraises_without_second_response() -> None:
    sent: list[dict[str, Any]] = []
    app = starlette_wrapped()
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/stream",
        "raw_path": b"/stream",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "http_version": "1.1",
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }

    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        if received == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError):
        await app(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    assert starts[0]["status"] == 200
    bodies = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"problem" not in bodies
    assert b"hunter2" not in bodies


async def test_bare_asgi_app_failure_before_headers() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        raise ServiceUnavailable(retry_after=5)

    async with client(ErrorHandlerMiddleware(bare)) as c:
        r = await c.get("/x")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.json()["code"] == "service_unavailable"


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        raise ValueError("lifespan failure must propagate")

    mw = ErrorHandlerMiddleware(bare)
    with pytest.raises(ValueError, match="lifespan failure"):
        await mw({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


@pytest.mark.parametrize("wrap", [True, False], ids=["middleware", "handlers"])
async def test_debug_mode_adds_exception_details(wrap: bool) -> None:
    inner = FastAPI(routes=ROUTES)
    if wrap:
        app: Any = ErrorHandlerMiddleware(inner, debug=True)
    else:
        app = inner
        install_error_handlers(inner, debug=True)
    async with client(app) as c:
        r = await c.get("/boom")
        missing = await c.get("/missing")
    assert r.status_code == 500
    debug = r.json()["debug"]
    assert debug["exception"] == "builtins.RuntimeError"
    assert debug["message"] == SECRET
    assert any("RuntimeError" in line for line in debug["traceback"])
    assert missing.json()["debug"]["exception"].endswith("NotFound")


@APPS
async def test_without_debug_no_body_carries_debug_details(make_app: Any) -> None:
    async with client(make_app()) as c:
        for r in [await c.get("/boom"), await c.get("/missing"), await c.get("/limited")]:
            assert "debug" not in r.json()
            assert "Traceback" not in r.text


async def test_correlation_id_from_context_rides_in_problem_body() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        raise NotFound()

    async def with_id(scope: Any, receive: Any, send: Any) -> None:
        token = correlation_id_var.set("4bf92f3577b34da6a3ce929d0e0e4736")
        try:
            await ErrorHandlerMiddleware(bare)(scope, receive, send)
        finally:
            correlation_id_var.reset(token)

    async with client(with_id) as c:
        r = await c.get("/x")
    assert r.json()["correlation_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_correlation_id_from_scope_when_handler_is_outside() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        scope["gennet.correlation_id"] = "abc123"
        scope["gennet.correlation_header"] = "X-Request-ID"
        raise RuntimeError("inner failure")

    async with client(ErrorHandlerMiddleware(inner)) as c:
        r = await c.get("/x")
    assert r.status_code == 500
    assert r.json()["correlation_id"] == "abc123"
    assert r.headers["x-request-id"] == "abc123"


async def test_exception_group_with_one_error_is_unwrapped() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        raise ExceptionGroup("tg", [NotFound("gone fishing")])

    async with client(ErrorHandlerMiddleware(bare)) as c:
        r = await c.get("/x")
    assert r.status_code == 404
    assert r.json()["detail"] == "gone fishing"


def test_problem_response_for_5xx_http_exception_hides_detail() -> None:
    resp = problem_response(HTTPException(status_code=500, detail=SECRET))
    assert resp.status_code == 500
    assert b"hunter2" not in resp.body


def test_from_env_reads_debug_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENNET_DEBUG", "true")
    assert ErrorHandlerMiddleware.from_env(PlainTextResponse("x")).debug is True
    monkeypatch.setenv("GENNET_DEBUG", "0")
    assert ErrorHandlerMiddleware.from_env(PlainTextResponse("x")).debug is False


async def test_starlette_app_behind_other_middleware_still_gets_problems() -> None:
    class Wrapper:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    app = ErrorHandlerMiddleware(Wrapper(Starlette(routes=ROUTES)))
    async with client(app) as c:
        missing = await c.get("/missing")
        boom = await c.get("/boom")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM_JSON
    assert boom.status_code == 500
    assert boom.headers["content-type"] == PROBLEM_JSON
    assert "hunter2" not in boom.text


async def test_a_5xx_the_app_returns_on_purpose_is_passed_through() -> None:
    async def unavailable(request: Request) -> PlainTextResponse:
        return PlainTextResponse("maintenance", status_code=503, headers={"retry-after": "60"})

    app = ErrorHandlerMiddleware(Starlette(routes=[Route("/", unavailable)]))
    async with client(app) as c:
        r = await c.get("/")
    assert r.status_code == 503
    assert r.text == "maintenance"
    assert r.headers["retry-after"] == "60"


async def test_a_streamed_5xx_keeps_streaming_and_a_later_failure_reraises() -> None:
    sent: list[Message] = []
    reached_server: list[int] = []

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 502, "headers": []})
        await send({"type": "http.response.body", "body": b"upstream said", "more_body": True})
        reached_server.append(len(sent))
        raise RuntimeError(SECRET)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with pytest.raises(RuntimeError):
        await ErrorHandlerMiddleware(bare)(scope, receive, send)
    assert reached_server == [2]  # both messages went out before the app went on
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [502]
    assert b"hunter2" not in b"".join(m.get("body", b"") for m in sent)


async def test_instance_is_the_route_template_with_root_and_mount_prefix() -> None:
    from starlette.routing import Mount

    async def gene(request: Request) -> JSONResponse:
        raise NotFound("No such gene.")

    inner = Starlette(routes=[Route("/genes/{symbol:str}", gene)])
    install_error_handlers(inner)  # its router answers its own 404s
    outer = Starlette(routes=[Mount("/t/{tenant}", app=inner)])
    transport = httpx.ASGITransport(app=ErrorHandlerMiddleware(outer), root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        found = await c.get("/api/t/acme-corp/genes/lacZ-secret")
        missed = await c.get("/api/t/acme-corp/nowhere-secret")
    assert found.status_code == 404
    assert found.json()["instance"] == "/api/t/{tenant}/genes/{symbol}"
    assert missed.status_code == 404
    assert "instance" not in missed.json()  # the mounted router matched nothing
    for r in (found, missed):
        assert "acme-corp" not in r.text
        assert "secret" not in r.text


async def test_instance_is_the_full_template_of_an_included_fastapi_router() -> None:
    from fastapi import APIRouter

    app = FastAPI()
    router = APIRouter(prefix="/networks")

    @router.get("/{network_id}")
    async def network(network_id: int) -> dict[str, int]:
        raise NotFound("No such network.")

    app.include_router(router, prefix="/v1")
    install_error_handlers(app)
    async with client(app) as c:
        r = await c.get("/v1/networks/42")
    assert r.status_code == 404
    assert r.json()["instance"] == "/v1/networks/{network_id}"
    assert "42" not in r.text


async def test_explicit_instance_wins_over_the_route_template() -> None:
    response = problem_response(NotFound("n"), instance="/chosen", scope={"type": "http"})
    assert b'"instance":"/chosen"' in response.body


@pytest.mark.parametrize("install", ["middleware", "handlers"])
async def test_404_and_422_bodies_never_contain_the_request_path(install: str) -> None:
    app = FastAPI()

    @app.get("/v1/genes/{symbol}/weight/{weight}")
    async def weight(symbol: str, weight: float) -> dict[str, str]:
        return {"symbol": symbol}

    asgi: Any = app
    if install == "middleware":
        asgi = ErrorHandlerMiddleware(app)
    else:
        install_error_handlers(app)
    async with client(asgi) as c:
        r404 = await c.get("/genes/<script>secret-value")
        r422 = await c.get("/v1/genes/<script>secret-value/weight/not-a-number-secret")
    assert r404.status_code == 404
    assert "instance" not in r404.json()
    assert r422.status_code == 422
    assert r422.json()["instance"] == "/v1/genes/{symbol}/weight/{weight}"
    assert r422.json()["errors"][0]["parameter"] == "weight"
    for r in (r404, r422):
        assert r.headers["content-type"] == PROBLEM_JSON
        for text in ("secret", "script", "%3Cscript", "not-a-number"):
            assert text not in r.text


async def _ws_refused(websocket: WebSocket) -> None:
    raise NotFound("No such network.")


async def _ws_fails_after_accept(websocket: WebSocket) -> None:
    await websocket.accept()
    raise RateLimitExceeded(retry_after=1)


@pytest.mark.parametrize("framework", [Starlette, FastAPI])
@pytest.mark.parametrize("wrap", [True, False], ids=["middleware", "handlers"])
# Starlette 1.x nudges TestClient users towards httpx2; the websocket client is what is used.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`:UserWarning")
def test_websocket_errors_refuse_the_handshake_or_close_with_a_code(
    framework: Any, wrap: bool
) -> None:
    from starlette.testclient import TestClient, WebSocketDenialResponse

    inner = framework(
        routes=[
            WebSocketRoute("/refused", _ws_refused),
            WebSocketRoute("/accepted", _ws_fails_after_accept),
        ]
    )
    app: Any = ErrorHandlerMiddleware(inner) if wrap else inner
    if not wrap:
        install_error_handlers(inner)
    with TestClient(app) as c:
        with pytest.raises(WebSocketDenialResponse) as info, c.websocket_connect("/refused"):
            pytest.fail("the handshake was accepted")
        assert info.value.status_code == 404
        assert info.value.headers["content-type"] == PROBLEM_JSON
        assert info.value.json()["detail"] == "No such network."
        with c.websocket_connect("/accepted") as ws:
            # No HTTP response after accept(): a close frame with a code and no detail.
            assert ws.receive() == {
                "type": "websocket.close",
                "code": 1008,
                "reason": "rate_limited",
            }
