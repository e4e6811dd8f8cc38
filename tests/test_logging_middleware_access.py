"""Tests for AccessLogMiddleware and configure_logging (with a real uvicorn server)."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from gennet_toolkit.logging_middleware import (
    REDACTED,
    AccessLogMiddleware,
    CorrelationIdMiddleware,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    configure_logging_from_env,
    redact_query_string,
    route_template,
)
from gennet_toolkit.logging_middleware._records import BRIDGED_LOGGERS
from gennet_toolkit.types import Message, Receive, Scope, Send

HEX_ID = "4bf92f3577b34da6a3ce929d0e0e4736"

pytestmark = pytest.mark.anyio


class Capture(logging.Handler):
    """Keeps each record and its JSON rendering."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    @property
    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def access() -> Iterator[tuple[logging.Logger, Capture]]:
    logger = logging.getLogger(f"tests.access.{uuid.uuid4().hex}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = Capture()
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


def client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, **kwargs), base_url="http://test"
    )


async def item(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["item_id"]})


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


# ------------------------------------------------------------------ the line


async def test_one_line_per_request_with_route_template_and_ids(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access
    app = Starlette(
        routes=[Route("/items/{item_id}", item)],
        middleware=[
            Middleware(CorrelationIdMiddleware),  # type: ignore[arg-type]
            Middleware(AccessLogMiddleware, logger=logger),  # type: ignore[arg-type]
        ],
    )
    async with client(app) as c:
        r = await c.get("/items/42?page=2", headers={"X-Request-ID": HEX_ID})
    assert r.status_code == 200
    (line,) = cap.json
    assert line["message"] == "GET /items/{item_id} 200 " + line["message"].split()[-1]
    assert line["method"] == "GET"
    assert line["route"] == "/items/{item_id}"
    assert line["path"] == "/items/42"
    assert line["query"] == "page=2"
    assert line["status"] == 200
    assert isinstance(line["status"], int)
    assert line["duration_ms"] > 0
    assert line["bytes_sent"] == len(r.content)
    assert line["client"] == "127.0.0.1"
    assert line["correlation_id"] == HEX_ID
    assert "trace_id" not in line  # no span: the JSON line leaves the key out
    assert cap.records[0].trace_id is None  # type: ignore[attr-defined]
    assert line["level"] == "INFO"


async def test_correlation_id_found_when_access_log_is_outside(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access
    inner = Starlette(routes=[Route("/", ok)])
    app = AccessLogMiddleware(CorrelationIdMiddleware(inner), logger=logger)
    async with client(app) as c:
        r = await c.get("/")
    assert cap.json[0]["correlation_id"] == r.headers["x-request-id"]


async def test_route_template_composes_mounts_and_root_path(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access
    api = Starlette(routes=[Route("/items/{item_id}", item)])
    app = AccessLogMiddleware(
        Starlette(
            routes=[
                Mount("/api", routes=[Route("/genes/{symbol}", ok)]),
                Mount("/v2", app=api),
                Mount("/static", app=ok_asgi),
            ]
        ),
        logger=logger,
    )
    async with client(app, root_path="/svc") as c:
        await c.get("/svc/api/genes/lacZ")
        await c.get("/svc/v2/items/7")
        await c.get("/svc/static/css/site.css")
        await c.get("/svc/nowhere")
    assert [line["route"] for line in cap.json] == [
        "/svc/api/genes/{symbol}",
        "/svc/v2/items/{item_id}",
        "/svc/static/{path}",
        None,
    ]
    assert cap.json[3]["message"].startswith("GET /svc/nowhere 404")


async def ok_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("static")(scope, receive, send)


async def test_fastapi_router_prefixes_are_in_the_template(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access
    router = APIRouter(prefix="/genes")
    nested = APIRouter(prefix="/edges")

    @router.get("/{symbol}/targets")
    async def targets(symbol: str) -> list[str]:
        return [symbol]

    @nested.get("/{edge_id}")
    async def edge(edge_id: int) -> int:
        return edge_id

    router.include_router(nested, prefix="/net")
    app = FastAPI()
    app.include_router(router, prefix="/v1")

    @app.get("/top/{x}")
    async def top(x: str) -> str:
        return x

    app.add_middleware(AccessLogMiddleware, logger=logger)  # type: ignore[arg-type]
    async with client(app) as c:
        await c.get("/v1/genes/lacZ/targets")
        await c.post("/v1/genes/lacZ/targets")
        await c.get("/v1/genes/net/edges/3")
        await c.get("/top/1")
        await c.get("/v1/nothing")
    assert [(x["route"], x["status"]) for x in cap.json] == [
        ("/v1/genes/{symbol}/targets", 200),
        ("/v1/genes/{symbol}/targets", 405),
        ("/v1/genes/net/edges/{edge_id}", 200),
        ("/top/{x}", 200),
        (None, 404),
    ]


def test_route_template_without_a_router_is_none() -> None:
    assert route_template({"type": "http", "path": "/x"}) is None
    assert route_template({"route": object(), "root_path": ""}) is None


# ------------------------------------------------------------------ redaction


SECRETS = {
    "authorization": "Bearer s3cr3t-bearer",
    "cookie": "session=s3cr3t-cookie",
    "x-api-key": "gnk_s3cr3t_key",
    "x-auth-token": "s3cr3t-auth",
    "x-session-id": "s3cr3t-session",
}


async def test_sensitive_headers_and_query_parameters_are_redacted(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access
    app = AccessLogMiddleware(Starlette(routes=[Route("/", ok)]), logger=logger, log_headers=["*"])
    query = (
        "gene=lacZ&token=s3cr3t-q1&API_KEY=s3cr3t-q2&password=s3cr3t-q3&client_secret=s3cr3t-q4"
        "&code=s3cr3t-q5&x-amz-signature=s3cr3t-q6&access%5Ftoken=s3cr3t-q7&flag"
    )
    async with client(app) as c:
        await c.get("/?" + query, headers={**SECRETS, "user-agent": "probe/1"})
    (line,) = cap.lines
    assert "s3cr3t" not in line
    data = json.loads(line)
    assert data["query"] == (
        f"gene=lacZ&token={REDACTED}&API_KEY={REDACTED}&password={REDACTED}"
        f"&client_secret={REDACTED}&code={REDACTED}&x-amz-signature={REDACTED}"
        f"&access%5Ftoken={REDACTED}&flag"
    )
    headers = data["headers"]
    assert headers["user-agent"] == "probe/1"
    for name in SECRETS:
        assert headers[name] == REDACTED


async def test_only_requested_headers_are_logged(access: tuple[logging.Logger, Capture]) -> None:
    logger, cap = access
    app = AccessLogMiddleware(
        Starlette(routes=[Route("/", ok)]),
        logger=logger,
        log_headers=["User-Agent", "Authorization"],
    )
    async with client(app) as c:
        await c.get("/", headers={"user-agent": "probe/1", "authorization": "Basic eDp5"})
    assert cap.json[0]["headers"] == {"user-agent": "probe/1", "authorization": REDACTED}
    assert "eDp5" not in cap.lines[0]


def test_redact_query_string_keeps_order_and_other_values() -> None:
    assert redact_query_string(b"") == ""
    assert redact_query_string("a=1&sig=x&b=%20&a=2") == f"a=1&sig={REDACTED}&b=%20&a=2"
    assert redact_query_string("q=1&tenant=x", names=["tenant"]) == f"q=1&tenant={REDACTED}"


async def test_control_characters_in_path_cannot_forge_text_lines(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access
    text_stream = io.StringIO()
    text_handler = logging.StreamHandler(text_stream)
    text_handler.setFormatter(logging.Formatter("%(message)s | %(path)s"))
    logger.addHandler(text_handler)
    try:
        app = AccessLogMiddleware(Starlette(routes=[Route("/", ok)]), logger=logger)
        async with client(app) as c:
            await c.get("/a%0D%0AGET%20/admin%20200")
    finally:
        logger.removeHandler(text_handler)
    assert len(text_stream.getvalue().splitlines()) == 1
    assert cap.json[0]["path"] == "/a\\x0d\\x0aGET /admin 200"


# ------------------------------------------------------------------ failures, streaming, exclusions


async def test_unhandled_exception_is_logged_as_500_and_propagates(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access

    async def boom(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    app = AccessLogMiddleware(boom, logger=logger)
    async with client(app) as c:
        with pytest.raises(RuntimeError):
            await c.get("/x")
    (line,) = cap.json
    assert (line["status"], line["error"], line["route"]) == (500, "RuntimeError", None)


async def test_with_correlation_outside_the_500_line_and_response_share_the_id(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    app = CorrelationIdMiddleware(
        AccessLogMiddleware(Starlette(routes=[Route("/", boom)]), logger=logger)
    )
    async with client(app, raise_app_exceptions=False) as c:
        r = await c.get("/")
    assert r.status_code == 500
    assert cap.json[0]["status"] == 500
    assert cap.json[0]["correlation_id"] == r.headers["x-request-id"]


async def test_streaming_duration_and_bytes_cover_the_whole_body(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access

    async def chunks() -> Any:
        for part in (b"ab", b"cde", b"f"):
            await anyio.lowlevel.checkpoint()
            yield part

    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks(), media_type="text/plain")

    app = AccessLogMiddleware(Starlette(routes=[Route("/s", stream)]), logger=logger)
    async with client(app) as c:
        r = await c.get("/s")
    assert r.content == b"abcdef"
    assert cap.json[0]["bytes_sent"] == 6
    assert cap.json[0]["route"] == "/s"


async def test_duration_stops_at_the_last_body_byte_not_after_background_tasks(
    access: tuple[logging.Logger, Capture], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, cap = access
    # perf_counter jumps an hour while the background task runs: a duration that waited
    # for the task would show it, whatever the machine's speed.
    jump = [0.0]
    real = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() + jump[0])

    def slow_job() -> None:
        jump[0] += 3600.0

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(slow_job))

    app = AccessLogMiddleware(Starlette(routes=[Route("/bg", endpoint)]), logger=logger)
    async with client(app) as c:
        r = await c.get("/bg")
    assert r.text == "ok"
    assert jump[0] == 3600.0  # the task ran before the line was logged
    (line,) = cap.json
    assert line["status"] == 200
    assert line["duration_ms"] < 3_600_000


async def test_excluded_paths_are_exact_or_explicit_prefixes(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access
    app = AccessLogMiddleware(
        Starlette(routes=[Route("/{p:path}", ok)]),
        logger=logger,
        exclude_paths=["/health", "/metrics*"],
    )
    async with client(app) as c:
        for path in ("/health", "/healthcare", "/metrics", "/metrics/x", "/genes"):
            await c.get(path)
    assert [x["path"] for x in cap.json] == ["/healthcare", "/genes"]


async def test_disabled_logger_costs_nothing_and_logs_nothing(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access
    logger.setLevel(logging.WARNING)
    app = AccessLogMiddleware(Starlette(routes=[Route("/", ok)]), logger=logger)
    async with client(app) as c:
        assert (await c.get("/")).status_code == 200
    assert cap.records == []


async def test_trace_id_from_a_tracing_layer_inside(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access
    provider = TracerProvider()
    tracer = provider.get_tracer("tests")
    spans: list[Any] = []

    def traced(app: Any) -> Any:
        async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
            with tracer.start_as_current_span("server") as span:
                spans.append(span)
                await app(scope, receive, send)

        return wrapper

    app = AccessLogMiddleware(traced(Starlette(routes=[Route("/", ok)])), logger=logger)
    try:
        async with client(app) as c:
            await c.get("/")
    finally:
        provider.shutdown()
    assert cap.json[0]["trace_id"] == format(spans[0].get_span_context().trace_id, "032x")


async def test_non_http_scopes_pass_through(access: tuple[logging.Logger, Capture]) -> None:
    logger, cap = access
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        return None

    mw = AccessLogMiddleware(app, logger=logger)
    await mw({"type": "lifespan"}, receive, send)
    await mw({"type": "websocket", "path": "/ws", "headers": []}, receive, send)
    assert seen == ["lifespan", "websocket"]
    assert cap.records == []


async def test_concurrent_requests_log_their_own_values(
    access: tuple[logging.Logger, Capture],
) -> None:
    logger, cap = access

    async def slow_item(request: Request) -> Response:
        await anyio.sleep(0.001 * (int(request.path_params["item_id"]) % 5))
        return PlainTextResponse(request.path_params["item_id"])

    app = CorrelationIdMiddleware(
        AccessLogMiddleware(Starlette(routes=[Route("/items/{item_id}", slow_item)]), logger=logger)
    )
    async with client(app) as c, anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(get_with_id, c, f"/items/{i}", f"req-{i}")
    assert len(cap.json) == 30
    for line in cap.json:
        assert line["correlation_id"] == "req-" + line["path"].rsplit("/", 1)[1]
        assert line["bytes_sent"] == len(line["path"].rsplit("/", 1)[1])


async def get_with_id(c: httpx.AsyncClient, path: str, cid: str) -> None:
    await c.get(path, headers={"X-Request-ID": cid})


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENNET_ACCESS_LOG_LEVEL", "debug")
    monkeypatch.setenv("GENNET_ACCESS_LOG_EXCLUDE_PATHS", "/health, /metrics*")
    monkeypatch.setenv("GENNET_ACCESS_LOG_HEADERS", "user-agent")
    mw = AccessLogMiddleware.from_env(ok_asgi)
    assert mw.level == logging.DEBUG
    assert mw._excluded("/health")
    assert mw._excluded("/metrics/x")
    assert not mw._excluded("/healthcare")
    monkeypatch.setenv("GENNET_ACCESS_LOG_LEVEL", "LOUD")
    with pytest.raises(ValueError, match="ACCESS_LOG_LEVEL"):
        AccessLogMiddleware.from_env(ok_asgi)


# ------------------------------------------------------------------ configure_logging


@pytest.fixture
def clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {
        name: (list(lg.handlers), lg.propagate, lg.level)
        for name in BRIDGED_LOGGERS
        for lg in [logging.getLogger(name)]
    }
    yield
    for h in list(root.handlers):
        if h not in saved_root[0]:
            root.removeHandler(h)
            h.close()
    root.setLevel(saved_root[1])
    for name, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.propagate = propagate
        lg.setLevel(level)


@pytest.mark.usefixtures("clean_logging")
def test_configure_logging_is_idempotent_and_keeps_foreign_handlers() -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        first = configure_logging("DEBUG", stream=io.StringIO())
        second = configure_logging("INFO", stream=io.StringIO())
        ours = [h for h in root.handlers if getattr(h, "_gennet_handler", False)]
        assert ours == [second]
        assert first not in root.handlers
        assert foreign in root.handlers
        assert root.level == logging.INFO
    finally:
        root.removeHandler(foreign)


@pytest.mark.usefixtures("clean_logging")
def test_configure_logging_bridges_uvicorn_loggers_as_json() -> None:
    uv = logging.getLogger("uvicorn.error")
    stray = logging.StreamHandler(io.StringIO())
    uv.addHandler(stray)
    uv.propagate = False
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, static_fields={"service": "grn"})
    assert uv.handlers == []
    assert uv.propagate is True
    uv.info("Started server process [%d]", 123)
    logging.getLogger("app").debug("hidden below INFO")
    (line,) = stream.getvalue().splitlines()
    data = json.loads(line)
    assert data["logger"] == "uvicorn.error"
    assert data["message"] == "Started server process [123]"
    assert data["service"] == "grn"


@pytest.mark.usefixtures("clean_logging")
def test_configure_logging_text_mode_and_silenced_uvicorn_access() -> None:
    stream = io.StringIO()
    configure_logging(logging.INFO, json=False, stream=stream, uvicorn_access=False)
    logging.getLogger("uvicorn.access").info("GET / 200")
    logging.getLogger("app").warning("two\nlines")
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("WARNING app [-] two\\x0alines")


@pytest.mark.usefixtures("clean_logging")
def test_configure_logging_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVC_LOG_LEVEL", "warning")
    monkeypatch.setenv("SVC_LOG_FORMAT", "text")
    monkeypatch.setenv("SVC_LOG_UVICORN_ACCESS", "0")
    stream = io.StringIO()
    handler = configure_logging_from_env("SVC_", stream=stream)
    assert isinstance(handler.formatter, TextFormatter)
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("uvicorn.access").level == logging.WARNING
    monkeypatch.setenv("SVC_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        configure_logging_from_env("SVC_")
    monkeypatch.setenv("SVC_LOG_FORMAT", "json")
    monkeypatch.setenv("SVC_LOG_LEVEL", "chatty")
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        configure_logging_from_env("SVC_")
    monkeypatch.delenv("SVC_LOG_LEVEL")
    assert isinstance(configure_logging_from_env("SVC_", stream=stream).formatter, JsonFormatter)
    assert logging.getLogger().level == logging.INFO


@pytest.mark.slow
@pytest.mark.usefixtures("clean_logging")
def test_real_uvicorn_access_and_app_logs_carry_the_correlation_id() -> None:
    uvicorn = pytest.importorskip("uvicorn")
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)

    async def hello(request: Request) -> Response:
        logging.getLogger("grn.app").info("handling %s", request.url.path)
        return PlainTextResponse("hi")

    app = CorrelationIdMiddleware(
        AccessLogMiddleware(Starlette(routes=[Route("/hello/{name}", hello)]))
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, lifespan="off", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.01)
        r = httpx.get(f"http://127.0.0.1:{port}/hello/lacZ", headers={"X-Request-ID": HEX_ID})
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert r.status_code == 200
    assert r.headers["x-request-id"] == HEX_ID
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    by_logger = {x["logger"]: x for x in lines}
    assert by_logger["grn.app"]["correlation_id"] == HEX_ID
    assert by_logger["gennet_toolkit.access"]["correlation_id"] == HEX_ID
    assert by_logger["gennet_toolkit.access"]["route"] == "/hello/{name}"
    assert by_logger["uvicorn.access"]["correlation_id"] == HEX_ID
    assert "uvicorn.error" in by_logger
