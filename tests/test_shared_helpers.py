"""Shared private helpers: route templates (``_routes``), environment parsing (``_env``),
problem rendering (``_problem``), cache serializers, single-flight and cache keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Host, Mount, Route

from gennet_toolkit import _serializers as shared_serializers
from gennet_toolkit._env import env_bool, env_float, env_int, env_list, env_str
from gennet_toolkit._problem import problem_bytes, problem_messages, send_problem
from gennet_toolkit._routes import RouteResolver, route_path, route_template
from gennet_toolkit._singleflight import AsyncFlights, SyncFlights
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio

# ------------------------------------------------------------------ route templates


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def plain(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("plain")(scope, receive, send)


def starlette_app() -> Starlette:
    inner = Starlette(routes=[Route("/items/{item_id:int}", ok)])
    return Starlette(
        routes=[
            Route("/genes/{symbol}", ok),
            Route("/echo", ok, methods=["POST"]),
            Mount(
                "/api",
                routes=[
                    Route("/items/{item_id:int}", ok),
                    Mount("/tenants/{tenant}", routes=[Route("/networks/{nid}", ok)]),
                ],
            ),
            Mount("/t/{tenant}", app=inner),
            Mount("/static", app=plain),
            Host(
                "api.example.org", app=Starlette(routes=[Mount("/h/{x}", routes=[Route("/z", ok)])])
            ),
        ]
    )


def fastapi_app() -> FastAPI:
    app = FastAPI()
    v1 = APIRouter(prefix="/v1")
    genes = APIRouter(prefix="/genes")
    edges = APIRouter(prefix="/edges")

    @genes.get("/{symbol}/targets")
    def targets(symbol: str) -> list[str]:
        return [symbol]

    @edges.get("/{edge_id}")
    def edge(edge_id: int) -> int:
        return edge_id

    @v1.get("/networks/{nid}")
    def network(nid: int) -> int:
        return nid

    genes.include_router(edges, prefix="/net")
    v1.include_router(genes)
    app.include_router(v1, prefix="/api")

    sub = FastAPI()

    @sub.get("/edges/{eid}")
    def sub_edge(eid: str) -> str:
        return eid

    app.mount("/tenants/{tenant}", sub)

    @app.get("/top/{x}")
    def top(x: str) -> str:
        return x

    return app


Resolve = Callable[[Scope, str, str], Any]


class Recorder:
    """Bare ASGI middleware noting what ``resolve`` makes of each finished scope."""

    def __init__(self, app: ASGIApp, resolve: Resolve, *, copy_scope: bool = False) -> None:
        self.app = app
        self.resolve = resolve
        self.copy_scope = copy_scope
        self.seen: list[Any] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, root_path = scope["path"], scope.get("root_path", "")
        inner = dict(scope) if self.copy_scope else scope  # a layer that copies the scope
        await self.app(inner, receive, send)
        self.seen.append(self.resolve(scope, path, root_path))


async def templates(
    app: ASGIApp,
    urls: list[str],
    *,
    method: str = "GET",
    root_path: str = "",
    copy_scope: bool = False,
    **options: bool,
) -> list[str | None]:
    resolver = RouteResolver(app, **options)
    recorder = Recorder(app, resolver.resolve, copy_scope=copy_scope)
    transport = httpx.ASGITransport(app=recorder, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        for url in urls:
            await c.request(method, url if url.startswith("http") else root_path + url)
    return recorder.seen


async def test_starlette_routes_mounts_and_parameterised_mounts_give_templates() -> None:
    got = await templates(
        starlette_app(),
        [
            "/genes/lacZ",
            "/api/items/3",
            "/api/tenants/acme/networks/4",
            "/t/acme/items/5",
            "/static/css/site.css",
            "http://api.example.org/h/1/z",
        ],
    )
    assert got == [
        "/genes/{symbol}",
        "/api/items/{item_id:int}",
        "/api/tenants/{tenant}/networks/{nid}",
        "/t/{tenant}/items/{item_id:int}",
        "/static/{path}",
        "/h/{x}/z",
    ]


async def test_unmatched_requests_and_mount_misses_are_none_by_default() -> None:
    urls = ["/nowhere", "/genes/x/", "/api/zz", "/api/tenants/acme/zz", "/t/acme/zz"]
    assert await templates(starlette_app(), urls) == [None] * 5


async def test_mount_misses_can_be_named_after_the_mount() -> None:
    got = await templates(
        starlette_app(), ["/nowhere", "/api/tenants/acme/zz", "/t/acme/zz"], mount_misses=True
    )
    assert got == [None, "/api/tenants/{tenant}/{path}", "/t/{tenant}/{path}"]


async def test_method_not_allowed_keeps_the_template() -> None:
    assert await templates(starlette_app(), ["/echo"]) == ["/echo"]


async def test_formatted_templates_drop_convertors() -> None:
    got = await templates(starlette_app(), ["/t/acme/items/5", "/api/items/3"], formatted=True)
    assert got == ["/t/{tenant}/items/{item_id}", "/api/items/{item_id}"]


async def test_templates_are_relative_to_the_root_path_seen_before_the_app() -> None:
    got = await templates(
        starlette_app(), ["/api/tenants/acme/networks/4", "/nowhere"], root_path="/proxy"
    )
    assert got == ["/api/tenants/{tenant}/networks/{nid}", None]


async def test_fastapi_include_router_prefixes_nested_routers_and_mounted_apps() -> None:
    got = await templates(
        fastapi_app(),
        [
            "/api/v1/genes/lacZ/targets",
            "/api/v1/genes/net/edges/3",
            "/api/v1/networks/not-an-int",  # 422 keeps the template
            "/tenants/t1/edges/e",
            "/top/1",
            "/api/v1/nothing",
        ],
    )
    assert got == [
        "/api/v1/genes/{symbol}/targets",
        "/api/v1/genes/net/edges/{edge_id}",
        "/api/v1/networks/{nid}",
        "/tenants/{tenant}/edges/{eid}",
        "/top/{x}",
        None,
    ]


async def test_fastapi_method_not_allowed_keeps_the_prefixed_template() -> None:
    got = await templates(fastapi_app(), ["/api/v1/genes/lacZ/targets"], method="POST")
    assert got == ["/api/v1/genes/{symbol}/targets"]


async def test_fastapi_mounted_in_starlette_composes_both_prefixes() -> None:
    outer = Starlette(routes=[Mount("/svc", app=fastapi_app())])
    got = await templates(
        outer, ["/svc/api/v1/genes/x/targets", "/svc/tenants/t/edges/e", "/svc/zz"]
    )
    assert got == ["/svc/api/v1/genes/{symbol}/targets", "/svc/tenants/{tenant}/edges/{eid}", None]


async def test_routes_are_matched_again_when_a_layer_copied_the_scope() -> None:
    got = await templates(
        starlette_app(),
        ["/api/tenants/acme/networks/9", "/static/x", "/nowhere", "/t/a/zz"],
        copy_scope=True,
    )
    assert got == ["/api/tenants/{tenant}/networks/{nid}", "/static/{path}", None, None]


async def test_middleware_inside_a_mounted_app_walks_its_own_mounts() -> None:
    seen: list[str | None] = []

    def capture(app: ASGIApp) -> ASGIApp:
        resolver = RouteResolver(app)
        recorder = Recorder(app, resolver.resolve)
        recorder.seen = seen  # type: ignore[assignment]
        return recorder

    inner = Starlette(
        routes=[Mount("/t/{tenant}", routes=[Route("/x/{y}", ok)])],
        middleware=[Middleware(capture)],
    )
    outer = Starlette(routes=[Mount("/svc/{region}", app=inner)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=outer), base_url="http://test"
    ) as c:
        assert (await c.get("/svc/eu/t/acme/x/1")).status_code == 200
    assert seen == ["/t/{tenant}/x/{y}"]


async def test_function_reads_the_app_root_path_and_the_scope_router() -> None:
    seen: list[str | None] = []

    async def after(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, send)
        seen.append(route_template(scope))
        seen.append(route_template(scope, mount_misses=True, formatted=True))

    app = starlette_app()
    transport = httpx.ASGITransport(app=after, root_path="/proxy")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        await c.get("/proxy/t/acme/items/5")
        await c.get("/proxy/t/acme/zz")
    assert seen == [
        "/t/{tenant}/items/{item_id:int}",
        "/t/{tenant}/items/{item_id}",
        None,
        "/t/{tenant}/{path}",
    ]


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/api/genes", "", "/api/genes"),
        ("/api/genes", "/api", "/genes"),
        ("/api", "/api", ""),
        ("/apix/genes", "/api", "/apix/genes"),  # only whole segments are a root
        ("/other", "/api", "/other"),
    ],
)
def test_route_path_strips_the_root_path_by_whole_segments(
    path: str, root_path: str, expected: str
) -> None:
    assert route_path(path, root_path) == expected


def test_scopes_without_a_usable_route_give_none() -> None:
    assert route_template({"type": "http", "path": "/x"}) is None
    assert route_template({"type": "http", "path": "/x", "route": object()}) is None
    assert RouteResolver().resolve({"type": "http", "path": "/x"}) is None
    assert RouteResolver(plain).resolve({"type": "http", "path": "/x"}) is None


@pytest.mark.parametrize("root_path", ["", "/p"])
async def test_module_wrappers_share_the_mechanism(root_path: str) -> None:
    from gennet_toolkit.logging_middleware import route_template as log_template
    from gennet_toolkit.tracing import route_template as trace_template

    seen: list[tuple[str | None, str | None]] = []
    app = fastapi_app()

    async def after(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, send)
        seen.append((trace_template(scope, root_path=root_path), log_template(scope)))

    transport = httpx.ASGITransport(app=after, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        await c.get(root_path + "/api/v1/genes/net/edges/3")
        await c.get(root_path + "/tenants/t1/edges/e")
    # tracing names spans below the root path; the access log shows the full path
    assert seen == [
        ("/api/v1/genes/net/edges/{edge_id}", root_path + "/api/v1/genes/net/edges/{edge_id}"),
        ("/tenants/{tenant}/edges/{eid}", root_path + "/tenants/{tenant}/edges/{eid}"),
    ]


# ------------------------------------------------------------------ environment parsing

SECRET = "s3cr3t-value"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        (" YES ", True),
        ("On", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_env_bool_reads_the_usual_spellings(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool
) -> None:
    monkeypatch.setenv("T_FLAG", raw)
    assert env_bool("T_FLAG", not expected) is expected


@pytest.mark.parametrize("reader", [env_bool, env_int, env_float, env_str])
@pytest.mark.parametrize("raw", [None, "", "   "])
def test_unset_or_blank_variables_give_the_default(
    monkeypatch: pytest.MonkeyPatch, reader: Callable[..., Any], raw: str | None
) -> None:
    if raw is None:
        monkeypatch.delenv("T_VAR", raising=False)
    else:
        monkeypatch.setenv("T_VAR", raw)
    sentinel = object()
    assert reader("T_VAR") is None
    assert reader("T_VAR", sentinel) is sentinel


@pytest.mark.parametrize(
    ("reader", "raw", "message"),
    [
        (env_bool, "maybe", "T_BAD must be a boolean"),
        (env_bool, "ture", "T_BAD must be a boolean"),
        (env_int, "12.5", "T_BAD must be an integer"),
        (env_int, "0x10", "T_BAD must be an integer"),
        (env_int, "ten", "T_BAD must be an integer"),
        (env_float, "fast", "T_BAD must be a number"),
        (env_float, "nan", "T_BAD must be a finite number"),
        (env_float, "-inf", "T_BAD must be a finite number"),
    ],
)
def test_bad_values_raise_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, reader: Callable[[str], Any], raw: str, message: str
) -> None:
    monkeypatch.setenv("T_BAD", raw)
    with pytest.raises(ConfigurationError, match=message) as info:
        reader("T_BAD")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("reader", [env_bool, env_int, env_float])
def test_errors_never_echo_the_value(
    monkeypatch: pytest.MonkeyPatch, reader: Callable[[str], Any]
) -> None:
    monkeypatch.setenv("T_SECRET", SECRET)
    with pytest.raises(ConfigurationError) as info:
        reader("T_SECRET")
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value.to_problem())
    # int()/float() errors quote the value: they must not show up in a traceback either
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_numbers_and_strings_are_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_INT", " 42 ")
    monkeypatch.setenv("T_NEG", "-3")
    monkeypatch.setenv("T_FLOAT", " 2.5")
    monkeypatch.setenv("T_STR", "  X-Request-ID ")
    assert env_int("T_INT") == 42
    assert env_int("T_NEG", 0) == -3
    assert env_float("T_FLOAT") == 2.5
    assert env_str("T_STR") == "X-Request-ID"


def test_env_list_splits_strips_and_keeps_an_explicitly_empty_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("T_LIST", raising=False)
    assert env_list("T_LIST") is None
    assert env_list("T_LIST", []) == []
    monkeypatch.setenv("T_LIST", " /health, ,/static/ ,")
    assert env_list("T_LIST") == ["/health", "/static/"]
    monkeypatch.setenv("T_LIST", "")
    assert env_list("T_LIST", ["default"]) == []


def test_modules_now_refuse_misspelt_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    # These flags used to read any unknown value as false (or true) silently.
    from gennet_toolkit.health_checks import HealthRegistry
    from gennet_toolkit.logging_middleware import (
        CorrelationIdMiddleware,
        configure_logging_from_env,
    )

    monkeypatch.setenv("T_REQUEST_ID_REJECT_INVALID", "ture")
    with pytest.raises(ConfigurationError, match="T_REQUEST_ID_REJECT_INVALID"):
        CorrelationIdMiddleware.from_env(plain, prefix="T_")
    monkeypatch.setenv("T_HEALTH_DEBUG", "yse")
    with pytest.raises(ConfigurationError, match="T_HEALTH_DEBUG"):
        HealthRegistry.from_env("T_")
    monkeypatch.setenv("T_LOG_UVICORN_ACCESS", "of")
    with pytest.raises(ConfigurationError, match="T_LOG_UVICORN_ACCESS"):
        configure_logging_from_env("T_")


# ------------------------------------------------------------------ problem+json answers


async def test_send_problem_renders_the_error_with_context_correlation_id_not_the_path() -> None:
    from gennet_toolkit._context import correlation_id_var
    from gennet_toolkit.exceptions import RateLimitExceeded

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = correlation_id_var.set("cid-1")
        try:
            await send_problem(
                RateLimitExceeded("Slow down, Zoë.", retry_after=7),
                scope,
                send,
                headers=[(b"x-extra", b"1")],
            )
        finally:
            correlation_id_var.reset(token)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, root_path="/svc"), base_url="http://test"
    ) as c:
        r = await c.get("/svc/genes/lacZ")
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "7"
    assert r.headers["x-extra"] == "1"
    assert int(r.headers["content-length"]) == len(r.content)
    assert b'": ' not in r.content  # compact
    assert "Zoë".encode() in r.content  # UTF-8, not \u escapes
    body = r.json()
    assert body["status"] == 429
    assert body["detail"] == "Slow down, Zoë."
    assert "instance" not in body  # no route matched: the raw path is never echoed
    assert b"lacZ" not in r.content
    assert body["correlation_id"] == "cid-1"


def test_problem_messages_can_leave_out_instance_and_correlation_id() -> None:
    from gennet_toolkit.exceptions import NotFound

    start, body = problem_messages(
        NotFound("nothing"),
        {"type": "http", "path": "/x?secret"},
        instance=None,
        correlation_id=None,
    )
    assert start["status"] == 404
    assert (b"content-length", str(len(body["body"])).encode()) in start["headers"]
    assert body["more_body"] is False
    problem = json.loads(body["body"])
    assert "instance" not in problem
    assert "correlation_id" not in problem
    assert b"secret" not in body["body"]
    assert (
        problem_bytes(NotFound("n"), "/p", correlation_id="c")
        == json.dumps(
            NotFound("n").to_problem(instance="/p", correlation_id="c"), separators=(",", ":")
        ).encode()
    )


# ------------------------------------------------------------------ modules on the shared resolver


async def test_audit_trail_records_mount_templates_not_raw_prefixes() -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    from gennet_toolkit.event_sourcing import AuditTrailMiddleware, EventStore

    store = EventStore(
        create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}),
        key="k" * 32,
        table_prefix="shared_",
    )
    store.create_tables()
    tenants = Mount("/tenants/{tenant}", routes=[Route("/genes/{symbol}", ok, methods=["POST"])])
    app = AuditTrailMiddleware(Starlette(routes=[Mount("/api", routes=[tenants])]), store=store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, root_path="/svc"), base_url="http://test"
    ) as c:
        assert (await c.post("/svc/api/tenants/acme/genes/lacZ")).status_code == 200
        assert (await c.post("/svc/api/tenants/acme/nothing")).status_code == 404
    routes = [e.data["route"] for e in store.read_stream("audit")]
    assert routes == ["/api/tenants/{tenant}/genes/{symbol}", None]


# ------------------------------------------------------------------ cache serializers


@pytest.mark.parametrize(
    "value",
    [(1, 2), {"a": (1,)}, {1: "a"}, {"a": {2: "b"}}, float("nan"), b"x", {1, 2}, object()],
    ids=["tuple", "nested-tuple", "int-key", "nested-int-key", "nan", "bytes", "set", "object"],
)
def test_shared_json_refuses_every_value_it_would_alter(value: Any) -> None:
    with pytest.raises(shared_serializers.UnsafeValueError) as info:
        shared_serializers.JsonSerializer().dumps(value)
    assert isinstance(info.value, shared_serializers.SerializationError)
    assert isinstance(info.value, TypeError)
    assert info.value.status_code == 500


def test_shared_json_round_trips_plain_data_exactly() -> None:
    ser = shared_serializers.JsonSerializer()
    value = {"a": [1, 2.5, "x", None, True, {"b": []}], "é": "ü", "n": -0.0}
    assert ser.loads(ser.dumps(value)) == value
    with pytest.raises(ValueError):
        ser.loads(b"\xff{not json")


def test_both_cache_modules_use_the_one_serializer_family() -> None:
    from gennet_toolkit import advanced_cache, cache

    assert cache.JsonSerializer is advanced_cache.JsonSerializer
    assert cache.PickleSerializer is advanced_cache.SignedPickleSerializer
    assert issubclass(cache.UnsafeValueError, advanced_cache.SerializationError)


def test_signed_pickle_needs_a_long_secret_and_rejects_forgeries() -> None:
    import pickle

    with pytest.raises(ConfigurationError, match="16 bytes"):
        shared_serializers.SignedPickleSerializer("fifteen-bytes!!")
    ser = shared_serializers.SignedPickleSerializer(b"sixteen-bytes!!!")
    data = ser.dumps((1, {2, 3}))
    assert ser.loads(data) == (1, {2, 3})
    other = shared_serializers.SignedPickleSerializer(b"another-secret-16")
    forged = [
        pickle.dumps("evil"),  # unsigned
        b"gnp1" + b"\0" * 32 + pickle.dumps("evil"),  # wrong signature
        data[:-1] + bytes([data[-1] ^ 1]),  # tampered body
        data[4:],  # no format tag
    ]
    for raw in forged:
        with pytest.raises(ValueError, match="signature"):
            ser.loads(raw)
    with pytest.raises(ValueError, match="signature"):
        other.loads(data)
    with pytest.raises(shared_serializers.UnsafeValueError):
        ser.dumps(lambda: None)


# ------------------------------------------------------------------ single-flight


async def test_async_single_flight_runs_one_load_and_shares_value_and_errors() -> None:
    import asyncio

    flights = AsyncFlights()
    gate = asyncio.Event()
    calls = 0

    async def load(x: int) -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return x * 2

    tasks = [asyncio.create_task(flights.run("k", load, 21)) for _ in range(20)]
    await asyncio.sleep(0)
    assert flights.running("k")
    gate.set()
    assert await asyncio.gather(*tasks) == [42] * 20
    assert calls == 1
    assert flights.coalesced == 19
    assert not flights.running("k")

    async def fail() -> int:
        await asyncio.sleep(0)
        raise LookupError("boom")

    failing = [asyncio.create_task(flights.run("e", fail)) for _ in range(3)]
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)


async def test_a_cancelled_leader_hands_the_load_to_a_waiter() -> None:
    import asyncio

    flights = AsyncFlights()
    started = 0
    second_started = asyncio.Event()
    release = asyncio.Event()

    async def load() -> str:
        nonlocal started
        started += 1
        if started == 2:
            second_started.set()
        await release.wait()
        return f"load {started}"

    leader = asyncio.create_task(flights.run("k", load))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(flights.run("k", load)) for _ in range(3)]
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await second_started.wait()  # a waiter became the new leader
    release.set()
    assert await asyncio.gather(*waiters) == ["load 2"] * 3
    assert started == 2


async def test_a_cancelled_waiter_does_not_disturb_the_load() -> None:
    import asyncio

    flights = AsyncFlights()
    release = asyncio.Event()

    async def load() -> str:
        await release.wait()
        return "v"

    leader = asyncio.create_task(flights.run("k", load))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(flights.run("k", load))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    assert await leader == "v"


async def test_release_hands_waiters_a_value_while_the_load_carries_on() -> None:
    import asyncio

    flights = AsyncFlights()
    finish = asyncio.Event()

    async def refresh() -> str:
        flights.release("k", "stale")
        await finish.wait()
        return "fresh"

    leader = asyncio.create_task(flights.run("k", refresh))
    await asyncio.sleep(0)
    assert not flights.running("k")  # released: newcomers start their own flight
    finish.set()
    assert await leader == "fresh"

    gate = asyncio.Event()

    async def slow_refresh() -> str:
        await gate.wait()
        flights.release("k", "stale")
        return "fresh"

    leader = asyncio.create_task(flights.run("k", slow_refresh))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(flights.run("k", slow_refresh))
    await asyncio.sleep(0)
    gate.set()
    assert await waiter == "stale"
    assert await leader == "fresh"


def test_async_flights_in_different_event_loops_never_share() -> None:
    import asyncio
    import threading

    flights = AsyncFlights()
    inside = threading.Event()
    done = threading.Event()
    seen: list[bool] = []
    first: list[str] = []

    async def hold() -> str:
        inside.set()
        await asyncio.to_thread(done.wait)
        return "first loop"

    async def other() -> str:
        seen.append(flights.running("k"))
        return await flights.run("k", _const("second loop"))

    runner = threading.Thread(target=lambda: first.append(asyncio.run(flights.run("k", hold))))
    runner.start()
    inside.wait()
    try:
        assert asyncio.run(other()) == "second loop"
    finally:
        done.set()
        runner.join()
    assert seen == [False]
    assert first == ["first loop"]
    assert flights.coalesced == 0


def _const(value: str) -> Callable[[], Any]:
    async def load() -> str:
        return value

    return load


def test_sync_single_flight_runs_one_load_across_threads() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    flights = SyncFlights()
    entered = threading.Event()
    release = threading.Event()
    calls = 0

    def load(x: int) -> int:
        nonlocal calls
        calls += 1
        entered.set()
        release.wait()
        return x + 1

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(flights.run, "k", load, 41)
        entered.wait()
        assert flights.running("k")
        rest = [pool.submit(flights.run, "k", load, 41) for _ in range(7)]
        while flights.coalesced < 7:  # every other thread is waiting on the flight
            threading.Event().wait(0.001)
        release.set()
        assert [f.result() for f in [first, *rest]] == [42] * 8
    assert calls == 1
    assert not flights.running("k")


def test_sync_single_flight_hands_the_error_to_every_waiter_and_does_not_cache_it() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    flights = SyncFlights()
    entered = threading.Event()
    release = threading.Event()

    def fail() -> int:
        entered.set()
        release.wait()
        raise LookupError("boom")

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(flights.run, "k", fail)
        entered.wait()
        rest = [pool.submit(flights.run, "k", fail) for _ in range(3)]
        while flights.coalesced < 3:
            threading.Event().wait(0.001)
        release.set()
        for fut in [first, *rest]:
            with pytest.raises(LookupError):
                fut.result()
    assert flights.run("k", lambda: 7) == 7


# ------------------------------------------------------------------ cache keys


def test_key_builder_binds_arguments_and_tags_their_types() -> None:
    from gennet_toolkit._cache_keys import KeyBuilder

    def lookup(gene: Any, organism: str = "ecoli") -> None: ...

    kb = KeyBuilder(lookup, None, (), (), 200)
    key = kb.key(("lacZ",), {})
    assert key.startswith(f"{__name__}.test_key_builder_binds_arguments_and_tags_their_types")
    assert "lacZ" not in key
    assert kb.key((), {"gene": "lacZ", "organism": "ecoli"}) == key
    distinct = {kb.key((v,), {}) for v in [1, 1.0, True, "1", None, {1: "a"}, {"1": "a"}]}
    assert len(distinct) == 7


def test_key_builder_refuses_arguments_without_a_stable_form() -> None:
    from gennet_toolkit._cache_keys import KeyBuilder

    class Opaque:
        pass

    class Keyed:
        def __cache_key__(self) -> str:
            return "k1"

    def f(x: Any) -> None: ...

    kb = KeyBuilder(f, None, (), (), 200)
    with pytest.raises(shared_serializers.SerializationError, match="'x'") as info:
        kb.key((Opaque(),), {})
    assert isinstance(info.value, TypeError)
    assert kb.key((Keyed(),), {}) == kb.key((Keyed(),), {})


def test_key_builder_leaves_self_out_only_when_asked() -> None:
    from gennet_toolkit._cache_keys import KeyBuilder

    class Repo:
        def get(self, gene: str) -> None: ...

    shared = KeyBuilder(Repo.get, None, (), (), 200)
    assert shared.key((Repo(), "lacZ"), {}) == shared.key((Repo(), "lacZ"), {})
    strict = KeyBuilder(Repo.get, None, (), (), 200, ignore_self=False)
    with pytest.raises(shared_serializers.SerializationError, match="'self'"):
        strict.key((Repo(), "lacZ"), {})
