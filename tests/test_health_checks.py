"""Tests for gennet_toolkit.health_checks: probes, format, concurrency, caching, lifespan."""

from __future__ import annotations

import asyncio
import contextvars
import errno
import json
import logging
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from gennet_toolkit import health_checks
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.health_checks import (
    HEALTH_MEDIA_TYPE,
    CheckResult,
    HealthLifespanMiddleware,
    HealthRegistry,
    failure_category,
    health_app,
    http_check,
    redis_check,
    sqlalchemy_check,
)
from tests.services import Database, RedisServer, closed_port_url, free_port

pytestmark = pytest.mark.anyio

SECRET = "hunter2-at-10.1.2.3:5432"

# No official schema exists for draft-inadarei-api-health-check; this one follows -06.
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": ["pass", "warn", "fail"]},
        "version": {"type": "string"},
        "releaseId": {"type": "string"},
        "serviceId": {"type": "string"},
        "description": {"type": "string"},
        "output": {"type": "string"},
        "checks": {
            "type": "object",
            "propertyNames": {"pattern": "^[^:]+:[^:]+$"},
            "additionalProperties": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["status", "componentType", "time"],
                    "properties": {
                        "status": {"enum": ["pass", "warn", "fail"]},
                        "componentType": {"type": "string"},
                        "componentId": {"type": "string"},
                        "observedUnit": {"type": "string"},
                        "time": {"type": "string"},
                        "output": {"type": "string"},
                    },
                },
            },
        },
    },
}


def assert_health_response(resp: httpx.Response) -> dict[str, Any]:
    """Media type, schema and the draft's status mapping (pass/warn 2xx, fail 5xx)."""
    assert resp.headers["content-type"] == HEALTH_MEDIA_TYPE
    assert resp.headers["cache-control"] == "no-store"
    body: dict[str, Any] = resp.json()
    jsonschema.validate(body, HEALTH_SCHEMA)
    if body["status"] == "fail":
        assert resp.status_code == 503
    else:
        assert resp.status_code == 200
        if body["status"] == "pass":
            assert "output" not in body
    for entries in body.get("checks", {}).values():
        for entry in entries:
            datetime.fromisoformat(entry["time"])
            if entry["status"] == "pass":
                assert "output" not in entry
    return body


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


class Counter:
    """An async check that counts its runs; ``result`` is what it returns."""

    def __init__(self, result: Any = None) -> None:
        self.calls = 0
        self.result = result

    async def __call__(self) -> Any:
        self.calls += 1
        return self.result


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- apps


def starlette_app(registry: HealthRegistry) -> Any:
    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    return Starlette(routes=[Route("/", home), Mount("/health", app=health_app(registry))])


def fastapi_app(registry: HealthRegistry) -> Any:
    app = FastAPI()

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"home": "ok"}

    app.mount("/health", health_app(registry))
    return app


def bare_app(registry: HealthRegistry) -> Any:
    probes = health_app(registry)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/health/"):
            await probes({**scope, "root_path": "/health"}, receive, send)
            return
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"home"})

    return app


APPS = {"starlette": starlette_app, "fastapi": fastapi_app, "bare": bare_app}


@pytest.fixture(params=sorted(APPS))
def make_app(request: pytest.FixtureRequest) -> Callable[[HealthRegistry], Any]:
    return APPS[request.param]


# --------------------------------------------------------------------------- format and status


async def test_live_passes_without_running_any_check(make_app: Any) -> None:
    registry = HealthRegistry()
    failing = Counter(False)
    registry.add("db", failing)
    async with client_for(make_app(registry)) as client:
        resp = await client.get("/health/live")
    body = assert_health_response(resp)
    assert body["status"] == "pass"
    assert failing.calls == 0
    uptime = body["checks"]["process:uptime"][0]
    assert uptime["observedUnit"] == "s"
    assert uptime["componentType"] == "system"


async def test_ready_passes_with_one_entry_per_check_keyed_component_measurement(
    make_app: Any,
) -> None:
    registry = HealthRegistry(version="1.2.3", service_id="grn-api", release_id="abc")
    registry.add("cache", Counter(None), component_type="datastore", component_id="c-1")
    registry.add("queue", lambda: True)
    async with client_for(make_app(registry)) as client:
        resp = await client.get("/health/ready")
    body = assert_health_response(resp)
    assert body["status"] == "pass"
    assert (body["version"], body["serviceId"], body["releaseId"]) == ("1.2.3", "grn-api", "abc")
    assert set(body["checks"]) == {"cache:responseTime", "queue:responseTime"}
    cache = body["checks"]["cache:responseTime"][0]
    assert cache["componentType"] == "datastore"
    assert cache["componentId"] == "c-1"
    assert cache["observedUnit"] == "ms"
    assert cache["observedValue"] >= 0


async def test_critical_failure_makes_ready_fail_with_503(make_app: Any) -> None:
    registry = HealthRegistry()
    registry.add("ok", Counter(None))
    registry.add("db", Counter(False))
    async with client_for(make_app(registry)) as client:
        resp = await client.get("/health/ready")
    body = assert_health_response(resp)
    assert resp.status_code == 503
    assert body["status"] == "fail"
    assert body["output"] == "failing: db"
    assert body["checks"]["db:responseTime"][0]["status"] == "fail"
    assert body["checks"]["db:responseTime"][0]["output"] == "check failed"


async def test_non_critical_failure_makes_ready_warn_with_200(make_app: Any) -> None:
    registry = HealthRegistry()
    registry.add("ok", Counter(None))
    registry.add("search", Counter(False), critical=False)
    async with client_for(make_app(registry)) as client:
        resp = await client.get("/health/ready")
    body = assert_health_response(resp)
    assert resp.status_code == 200
    assert body["status"] == "warn"
    assert body["output"] == "degraded: search"


async def test_check_result_carries_status_value_unit_and_output() -> None:
    registry = HealthRegistry()
    registry.add(
        "disk",
        Counter(CheckResult("warn", observed_value=91.5, observed_unit="%", output="filling")),
        measurement="utilization",
    )
    async with client_for(health_app(registry)) as client:
        resp = await client.get("/ready")
    body = assert_health_response(resp)
    assert body["status"] == "warn"
    entry = body["checks"]["disk:utilization"][0]
    assert entry == {
        "componentType": "component",
        "observedValue": 91.5,
        "observedUnit": "%",
        "status": "warn",
        "time": entry["time"],
        "output": "filling",
    }


async def test_raising_check_is_fail_503_and_output_hides_the_exception_text(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError(f"cannot reach {SECRET}")

    registry = HealthRegistry()
    registry.add("db", broken)
    async with client_for(make_app(registry)) as client:
        resp = await client.get("/health/ready")
    body = assert_health_response(resp)
    assert resp.status_code == 503
    assert body["checks"]["db:responseTime"][0]["output"] == "RuntimeError"
    assert "hunter2" not in resp.text
    assert "10.1.2.3" not in resp.text
    # The detail is not lost: it goes to the server log, with the exception.
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any(SECRET in str(exc) for exc in logged)


async def test_debug_mode_shows_the_exception_text() -> None:
    def broken() -> None:
        raise RuntimeError("boom at db-1")

    registry = HealthRegistry(debug=True)
    registry.add("db", broken)
    async with client_for(health_app(registry)) as client:
        resp = await client.get("/ready")
    assert resp.json()["checks"]["db:responseTime"][0]["output"] == "RuntimeError: boom at db-1"


async def test_invalid_check_result_is_a_fail_not_a_crash() -> None:
    registry = HealthRegistry()
    registry.add("weird", Counter("down"))
    async with client_for(health_app(registry)) as client:
        resp = await client.get("/ready")
    body = assert_health_response(resp)
    assert body["checks"]["weird:responseTime"][0]["output"] == "invalid check result"


async def test_unserialisable_observed_value_gives_503_not_500() -> None:
    registry = HealthRegistry()
    registry.add("odd", Counter(CheckResult(observed_value=[float("nan")])))
    registry.add("obj", Counter(CheckResult(observed_value=object())))
    async with client_for(health_app(registry)) as client:
        resp = await client.get("/ready")
    body = assert_health_response(resp)
    assert resp.status_code == 503
    assert body["output"] == "internal error"


async def test_non_finite_observed_value_is_dropped_not_sent_as_nan() -> None:
    registry = HealthRegistry()
    registry.add("gauge", Counter(CheckResult(observed_value=float("inf"))), measurement="x")
    async with client_for(health_app(registry)) as client:
        resp = await client.get("/ready")
    body = assert_health_response(resp)
    assert "observedValue" not in body["checks"]["gauge:x"][0]


# ------------------------------------------------------------------ timeouts and concurrency


async def test_hanging_async_check_fails_with_timeout() -> None:
    release = asyncio.Event()

    async def hangs() -> None:
        await release.wait()

    registry = HealthRegistry()
    registry.add("slow", hangs, timeout=0.05)
    registry.add("fine", Counter(None))
    async with client_for(health_app(registry)) as client:
        resp = await client.get("/ready")
    body = assert_health_response(resp)
    assert resp.status_code == 503
    assert body["checks"]["slow:responseTime"][0]["output"] == "timeout"
    assert body["checks"]["fine:responseTime"][0]["status"] == "pass"


async def test_check_that_swallows_cancellation_cannot_hold_the_probe() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await release.wait()
        except asyncio.CancelledError:
            await release.wait()  # ignores the cancel and keeps hanging

    registry = HealthRegistry()
    registry.add("stubborn", stubborn, timeout=0.05)
    report = await registry.ready()
    assert report.status == "fail"
    assert report.checks[0].output == "timeout"
    release.set()
    await asyncio.sleep(0)


async def test_hung_sync_check_is_not_started_again_while_its_thread_hangs() -> None:
    release = threading.Event()
    calls = 0

    def blocks() -> None:
        nonlocal calls
        calls += 1
        release.wait(10)

    registry = HealthRegistry(cache_ttl=0)
    registry.add("blocking", blocks, timeout=0.5)  # roomy: the third run must pass
    first = await registry.ready()
    second = await registry.ready()
    assert [first.checks[0].output, second.checks[0].output] == ["timeout", "timeout"]
    assert calls == 1
    release.set()
    await until(lambda: not registry._checks["blocking"].state.thread_busy)
    third = await registry.ready()
    assert third.status == "pass"
    assert calls == 2


async def test_async_checks_run_concurrently() -> None:
    a_running, b_running = asyncio.Event(), asyncio.Event()

    async def a() -> None:
        a_running.set()
        await b_running.wait()

    async def b() -> None:
        b_running.set()
        await a_running.wait()

    registry = HealthRegistry()
    registry.add("a", a, timeout=5)
    registry.add("b", b, timeout=5)
    report = await registry.ready()  # sequential runs would deadlock into timeouts
    assert report.status == "pass"


async def test_sync_checks_run_in_threads_concurrently_with_the_context() -> None:
    barrier = threading.Barrier(2, timeout=5)
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("request-ctx")
    seen: list[tuple[str, bool]] = []

    def check() -> None:
        seen.append((var.get(), threading.current_thread() is threading.main_thread()))
        barrier.wait()  # both must be running at once

    registry = HealthRegistry()
    registry.add("one", check, timeout=5)
    registry.add("two", check, timeout=5)
    report = await registry.ready()
    assert report.status == "pass"
    assert seen == [("request-ctx", False), ("request-ctx", False)]


async def test_sync_callable_returning_a_coroutine_is_awaited() -> None:
    inner = Counter(False)
    registry = HealthRegistry()

    def returns_a_coroutine() -> Any:
        return inner()

    registry.add("wrapper", returns_a_coroutine)
    report = await registry.ready()
    assert (report.status, inner.calls) == ("fail", 1)


async def test_concurrent_ready_requests_share_one_run() -> None:
    gate = asyncio.Event()
    calls = 0

    async def gated() -> None:
        nonlocal calls
        calls += 1
        await gate.wait()

    registry = HealthRegistry()
    registry.add("db", gated, timeout=5)
    probes = health_app(registry)
    entered = 0

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        nonlocal entered
        entered += 1
        await probes(scope, receive, send)

    async with client_for(counting) as client:
        requests = [asyncio.ensure_future(client.get("/ready")) for _ in range(20)]
        await until(lambda: entered == 20)  # every request is inside, waiting
        gate.set()
        responses = await asyncio.gather(*requests)
    assert {r.status_code for r in responses} == {200}
    assert calls == 1


async def test_a_cancelled_waiter_does_not_cancel_the_shared_run() -> None:
    gate = asyncio.Event()
    check = Counter(None)

    async def gated() -> None:
        await gate.wait()
        await check()

    registry = HealthRegistry()
    registry.add("db", gated, timeout=5)
    first = asyncio.ensure_future(registry.ready())
    second = asyncio.ensure_future(registry.ready())
    await until(lambda: bool(registry._inflight))
    first.cancel()
    gate.set()
    assert (await second).status == "pass"
    assert check.calls == 1


async def test_reports_are_cached_for_the_ttl_then_rerun() -> None:
    clock = FakeClock()
    check = Counter(None)
    registry = HealthRegistry(cache_ttl=5, clock=clock)
    registry.add("db", check)
    await registry.ready()
    clock.now += 4.9
    await registry.ready()
    assert check.calls == 1
    clock.now += 0.2
    await registry.ready()
    assert check.calls == 2


async def test_failures_are_cached_too_so_a_down_dependency_is_not_hammered() -> None:
    clock = FakeClock()
    check = Counter(False)
    registry = HealthRegistry(cache_ttl=5, clock=clock)
    registry.add("db", check)
    for _ in range(5):
        assert (await registry.ready()).status == "fail"
    assert check.calls == 1


async def test_cache_ttl_zero_runs_checks_on_every_request() -> None:
    check = Counter(None)
    registry = HealthRegistry(cache_ttl=0)
    registry.add("db", check)
    for _ in range(3):
        await registry.ready()
    assert check.calls == 3


async def test_failure_is_logged_once_per_incident_and_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    check = Counter(False)
    registry = HealthRegistry(cache_ttl=0)
    registry.add("db", check)
    caplog.set_level(logging.INFO, logger="gennet_toolkit.health_checks")
    for _ in range(3):
        await registry.ready()
    check.result = None
    for _ in range(2):
        await registry.ready()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failing" in m for m in messages) == 1
    assert sum("recovered" in m for m in messages) == 1


# --------------------------------------------------------------------------- startup and lifespan


async def test_startup_fails_until_startup_checks_first_pass_then_passes_forever() -> None:
    check = Counter(False)
    registry = HealthRegistry(cache_ttl=0)
    registry.add("migrations", check, startup=True, ready=False)
    async with client_for(health_app(registry)) as client:
        assert (await client.get("/startup")).status_code == 503
        check.result = None
        resp = await client.get("/startup")
        assert_health_response(resp)
        assert resp.status_code == 200
        check.result = False
        calls = check.calls
        assert (await client.get("/startup")).status_code == 200
        assert check.calls == calls  # latched: no further runs
        # ready=False: readiness does not run it.
        assert (await client.get("/ready")).status_code == 200
    assert registry.started


async def test_startup_with_no_startup_checks_passes() -> None:
    registry = HealthRegistry()
    registry.add("db", Counter(False))
    assert (await registry.startup()).status == "pass"


class LifespanDriver:
    """Plays the server's side of the ASGI lifespan protocol."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def send_startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.ensure_future(self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})

    async def send_shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})

    async def expect(self, kind: str) -> None:
        message = await asyncio.wait_for(self.outbox.get(), 5)
        assert message["type"] == kind

    async def finish(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


def gated_lifespan(
    started: asyncio.Event, startup_gate: asyncio.Event, cleanup: asyncio.Event
) -> Any:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        started.set()
        await startup_gate.wait()
        yield
        await cleanup.wait()

    return lifespan


async def _wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), 5)


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (bounded, not a timing assertion)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_lifespan_middleware_gates_startup_and_drains_on_shutdown(framework: str) -> None:
    registry = HealthRegistry()
    registry.add("db", Counter(None))
    started, startup_gate, cleanup = asyncio.Event(), asyncio.Event(), asyncio.Event()
    lifespan = gated_lifespan(started, startup_gate, cleanup)
    app: Any
    if framework == "starlette":
        app = Starlette(routes=[Mount("/health", app=health_app(registry))], lifespan=lifespan)
    else:
        app = FastAPI(lifespan=lifespan)
        app.mount("/health", health_app(registry))
    app.add_middleware(HealthLifespanMiddleware, registry=registry)
    driver = LifespanDriver(app)
    async with client_for(app) as client:
        await driver.send_startup()
        await _wait(started)
        for probe in ("ready", "startup"):
            resp = await client.get(f"/health/{probe}")
            assert resp.status_code == 503
            assert assert_health_response(resp)["output"] == "starting"
        assert (await client.get("/health/live")).status_code == 200
        startup_gate.set()
        await driver.expect("lifespan.startup.complete")
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.get("/health/startup")).status_code == 200

        await driver.send_shutdown()
        await until(lambda: registry.shutting_down)  # the app's cleanup waits on `cleanup`
        resp = await client.get("/health/ready")
        assert resp.status_code == 503
        assert resp.json()["output"] == "shutting down"
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/health/startup")).status_code == 200
        cleanup.set()
        await driver.expect("lifespan.shutdown.complete")
        await driver.finish()
    assert registry.shutting_down


async def test_lifespan_middleware_wraps_a_bare_asgi_app() -> None:
    registry = HealthRegistry()
    app = HealthLifespanMiddleware(bare_app(registry), registry=registry)
    driver = LifespanDriver(app)
    async with client_for(app) as client:
        await driver.send_startup()
        await driver.expect("lifespan.startup.complete")
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.get("/")).text == "home"  # http passes straight through
        await driver.send_shutdown()
        await driver.expect("lifespan.shutdown.complete")
        await driver.finish()
        assert (await client.get("/health/ready")).status_code == 503


async def test_app_without_lifespan_support_does_not_leave_probes_starting() -> None:
    registry = HealthRegistry()

    async def no_lifespan(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("lifespan not supported")

    app = HealthLifespanMiddleware(no_lifespan, registry=registry)
    driver = LifespanDriver(app)
    await driver.send_startup()
    with pytest.raises(RuntimeError):
        await driver.finish()
    assert (await registry.ready()).status == "pass"
    assert (await registry.startup()).status == "pass"


async def test_registry_lifespan_helper_wraps_the_apps_own_lifespan() -> None:
    registry = HealthRegistry()
    started, startup_gate, cleanup = asyncio.Event(), asyncio.Event(), asyncio.Event()
    inner = gated_lifespan(started, startup_gate, cleanup)
    app = Starlette(
        routes=[Mount("/health", app=health_app(registry))], lifespan=registry.lifespan(inner)
    )
    driver = LifespanDriver(app)
    async with client_for(app) as client:
        await driver.send_startup()
        await _wait(started)
        assert (await client.get("/health/ready")).json()["output"] == "starting"
        startup_gate.set()
        await driver.expect("lifespan.startup.complete")
        assert (await client.get("/health/ready")).status_code == 200
        await driver.send_shutdown()
        await until(lambda: registry.shutting_down)
        assert (await client.get("/health/ready")).status_code == 503
        cleanup.set()
        await driver.expect("lifespan.shutdown.complete")
        await driver.finish()


async def test_a_new_lifespan_cycle_makes_the_registry_ready_again() -> None:
    registry = HealthRegistry()
    app = Starlette(routes=[], lifespan=registry.lifespan())
    for _ in range(2):
        driver = LifespanDriver(app)
        await driver.send_startup()
        await driver.expect("lifespan.startup.complete")
        assert (await registry.ready()).status == "pass"
        await driver.send_shutdown()
        await driver.expect("lifespan.shutdown.complete")
        await driver.finish()
        assert (await registry.ready()).output == "shutting down"


async def test_health_app_served_alone_handles_lifespan() -> None:
    registry = HealthRegistry()
    app = health_app(registry)
    driver = LifespanDriver(app)
    await driver.send_startup()
    await driver.expect("lifespan.startup.complete")
    assert (await registry.ready()).status == "pass"
    await driver.send_shutdown()
    await driver.expect("lifespan.shutdown.complete")
    await driver.finish()
    assert (await registry.ready()).status == "fail"


async def test_begin_shutdown_fails_readiness_without_touching_dependencies() -> None:
    check = Counter(None)
    registry = HealthRegistry()
    registry.add("db", check)
    registry.begin_shutdown()
    report = await registry.ready()
    assert (report.status, report.http_status, report.output) == ("fail", 503, "shutting down")
    assert check.calls == 0
    assert registry.live().status == "pass"


# --------------------------------------------------------------------------- bad requests


async def test_unknown_path_is_a_404_problem_that_does_not_echo_the_path() -> None:
    async with client_for(health_app(HealthRegistry())) as client:
        resp = await client.get("/<script>alert(1)</script>")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert "script" not in resp.text


async def test_other_methods_get_405_with_allow() -> None:
    async with client_for(health_app(HealthRegistry())) as client:
        resp = await client.post("/ready", content=b"x" * 1000)
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, HEAD"
    assert resp.json()["status"] == 405


async def test_head_answers_headers_without_a_body_and_trailing_slash_is_accepted() -> None:
    registry = HealthRegistry()
    async with client_for(health_app(registry)) as client:
        head = await client.head("/ready")
        slash = await client.get("/ready/?verbose=1&exclude=%0d%0a")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 0
    assert slash.status_code == 200


async def test_websocket_scope_is_closed() -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await health_app(HealthRegistry())({"type": "websocket", "path": "/ready"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_custom_probe_paths() -> None:
    app = health_app(HealthRegistry(), live_path="/livez", ready_path="/readyz", startup_path="/s")
    async with client_for(app) as client:
        assert (await client.get("/livez")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/ready")).status_code == 404


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("db:primary", {}),
        ("", {}),
        ("db", {"timeout": 0}),
        ("db", {"timeout": float("nan")}),
        ("db", {"ready": False, "startup": False}),
        ("db", {"measurement": "a:b"}),
    ],
)
def test_bad_registrations_raise_configuration_error(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        HealthRegistry().add(name, Counter(), **kwargs)


def test_duplicate_and_non_callable_checks_are_rejected() -> None:
    registry = HealthRegistry()
    registry.add("db", Counter())
    with pytest.raises(ConfigurationError):
        registry.add("db", Counter())
    with pytest.raises(ConfigurationError):
        registry.add("other", "not callable")  # type: ignore[arg-type]
    registry.remove("db")
    assert registry.names == ()


@pytest.mark.parametrize("ttl", [-1, float("inf"), "1"])
def test_bad_cache_ttl_is_rejected(ttl: Any) -> None:
    with pytest.raises(ConfigurationError):
        HealthRegistry(cache_ttl=ttl)


def test_from_env_reads_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_HEALTH_CACHE_TTL", "2.5")
    monkeypatch.setenv("APP_HEALTH_DEBUG", "true")
    monkeypatch.setenv("APP_HEALTH_VERSION", "9.9")
    registry = HealthRegistry.from_env("APP_", service_id="svc")
    assert (registry.cache_ttl, registry.debug) == (2.5, True)
    assert registry.live().to_dict()["version"] == "9.9"
    assert registry.live().to_dict()["serviceId"] == "svc"
    monkeypatch.setenv("APP_HEALTH_CACHE_TTL", "soon")
    with pytest.raises(ConfigurationError):
        HealthRegistry.from_env("APP_")


def test_health_app_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        health_app("registry")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        health_app(HealthRegistry(), live_path="/x", ready_path="/x")
    with pytest.raises(ConfigurationError):
        health_app(HealthRegistry(), ready_path="ready")


@pytest.mark.parametrize(
    ("factory", "arg"),
    [
        (redis_check, "http://user:hunter2@127.0.0.1/0"),
        (http_check, "ftp://user:hunter2@127.0.0.1/"),
        (http_check, "/relative/hunter2"),
    ],
)
def test_builtin_checks_reject_bad_urls_without_echoing_them(factory: Any, arg: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        factory(arg)
    assert "hunter2" not in str(info.value)


def test_http_check_rejects_bad_expected_status_and_method() -> None:
    with pytest.raises(ConfigurationError):
        http_check("http://127.0.0.1/", expected_status=[])
    with pytest.raises(ConfigurationError):
        http_check("http://127.0.0.1/", expected_status=99)
    with pytest.raises(ConfigurationError):
        http_check("http://127.0.0.1/", method="GET /x")
    with pytest.raises(ConfigurationError):
        sqlalchemy_check("sqlite://")


@pytest.mark.parametrize(
    ("module", "factory", "extra"),
    [
        ("httpx", lambda: http_check("http://127.0.0.1/"), "http"),
        ("redis.asyncio", lambda: redis_check("redis://127.0.0.1/0"), "redis"),
        ("sqlalchemy", lambda: sqlalchemy_check(None), "sql"),
    ],
)
def test_missing_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, module: str, factory: Any, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"gennet-toolkit\[{extra}\]"):
        factory()


def test_importing_the_module_imports_no_optional_dependency() -> None:
    code = (
        "import sys, gennet_toolkit.health_checks;"
        "print([m for m in ('redis', 'sqlalchemy', 'httpx') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_public_names() -> None:
    assert set(health_checks.__all__) >= {
        "HealthRegistry",
        "health_app",
        "redis_check",
        "sqlalchemy_check",
        "http_check",
        "HealthLifespanMiddleware",
        "CheckResult",
    }
    for name in health_checks.__all__:
        assert getattr(health_checks, name).__doc__ or name in {"Check", "Probe", "Status"}


@pytest.mark.parametrize(
    ("exc", "category"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused 10.0.0.1"), "connection refused"),
        (OSError(errno.ECONNREFUSED, "x"), "connection refused"),
        (socket.gaierror(-2, "Name or service not known: db.internal"), "name resolution failed"),
        (TimeoutError(), "timeout"),
        (RuntimeError('connection to "10.0.0.1" failed: Connection refused'), "connection refused"),
        (ConnectionResetError("peer 10.0.0.1"), "connection error"),
        (KeyError("secret"), "KeyError"),
    ],
)
def test_failure_category_is_short_and_address_free(exc: BaseException, category: str) -> None:
    assert failure_category(exc) == category


def test_failure_category_follows_the_exception_chain() -> None:
    outer = ValueError("wrapped 10.0.0.1")
    outer.__cause__ = RuntimeError("middle")
    outer.__cause__.__context__ = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    assert failure_category(outer) == "connection refused"


# --------------------------------------------------------------------------- built-in: Redis


@pytest.mark.redis
async def test_redis_check_passes_against_the_real_server(redis_url: str) -> None:
    import redis
    import redis.asyncio as aredis

    registry = HealthRegistry()
    registry.add("redis_url", redis_check(redis_url))
    async_client = aredis.Redis.from_url(redis_url)
    sync_client = redis.Redis.from_url(redis_url)
    registry.add("redis_async", redis_check(async_client))
    registry.add("redis_sync", redis_check(sync_client))
    try:
        async with client_for(starlette_app(registry)) as client:
            resp = await client.get("/health/ready")
    finally:
        await async_client.aclose()
        sync_client.close()
    body = assert_health_response(resp)
    assert body["status"] == "pass", body
    assert body["checks"]["redis_url:responseTime"][0]["componentType"] == "datastore"


async def test_redis_check_fails_fast_on_a_closed_port() -> None:
    registry = HealthRegistry()
    registry.add("redis", redis_check(closed_port_url("redis")), timeout=10)
    report = await registry.ready()
    assert report.status == "fail"
    # "connection refused", not "timeout": no retry loop, no hang up to the timeout.
    assert report.checks[0].output == "connection refused"


@pytest.mark.redis
async def test_redis_check_follows_the_server_down_and_back(redis_server: RedisServer) -> None:
    registry = HealthRegistry(cache_ttl=0)
    registry.add("redis", redis_check(redis_server.url))
    assert (await registry.ready()).status == "pass"
    redis_server.stop()
    down = await registry.ready()
    assert (down.status, down.checks[0].output) == ("fail", "connection refused")
    redis_server.start()
    assert (await registry.ready()).status == "pass"


# --------------------------------------------------------------------------- built-in: SQLAlchemy


async def test_sqlalchemy_check_with_sync_and_async_engines(database: Database) -> None:
    engine = database.engine()
    async_engine = database.async_engine()
    registry = HealthRegistry()
    registry.add("db_sync", sqlalchemy_check(engine))
    registry.add("db_async", sqlalchemy_check(async_engine))
    try:
        async with client_for(fastapi_app(registry)) as client:
            resp = await client.get("/health/ready")
    finally:
        engine.dispose()
        await async_engine.dispose()
    body = assert_health_response(resp)
    assert body["status"] == "pass", body
    assert body["checks"]["db_async:responseTime"][0]["componentType"] == "datastore"


async def test_sqlalchemy_check_fails_fast_on_a_closed_postgres_port() -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.ext.asyncio import create_async_engine

    port = free_port()
    engine = create_engine(f"postgresql+psycopg://u:{SECRET}@127.0.0.1:{port}/x")
    async_engine = create_async_engine(f"postgresql+asyncpg://u:{SECRET}@127.0.0.1:{port}/x")
    registry = HealthRegistry()
    registry.add("pg_sync", sqlalchemy_check(engine), timeout=10)
    registry.add("pg_async", sqlalchemy_check(async_engine), timeout=10)
    try:
        async with client_for(health_app(registry)) as client:
            resp = await client.get("/ready")
    finally:
        engine.dispose()
        await async_engine.dispose()
    body = assert_health_response(resp)
    assert resp.status_code == 503
    for key in ("pg_sync:responseTime", "pg_async:responseTime"):
        assert body["checks"][key][0]["output"] == "connection refused"
    assert "hunter2" not in resp.text


async def test_sqlalchemy_check_fails_on_an_unopenable_sqlite_file(tmp_path: Any) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path}/missing-dir/db.sqlite")
    registry = HealthRegistry()
    registry.add("db", sqlalchemy_check(engine))
    report = await registry.ready()
    engine.dispose()
    assert report.status == "fail"
    assert report.checks[0].output == "OperationalError"


# --------------------------------------------------------------------------- built-in: HTTP


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/ok": 200, "/broken": 500, "/moved": 302, "/teapot": 418}.get(self.path, 404)
        body = b"x" * 100
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 302:
            self.send_header("Location", "/broken")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    """A real HTTP server on a free loopback port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_http_check_against_a_real_upstream(upstream: str) -> None:
    registry = HealthRegistry()
    registry.add("ok", http_check(f"{upstream}/ok"))
    registry.add("moved", http_check(f"{upstream}/moved"))  # 3xx passes, not followed
    registry.add("teapot", http_check(f"{upstream}/teapot", expected_status=418))
    registry.add("broken", http_check(f"{upstream}/broken"), critical=False)
    async with httpx.AsyncClient() as shared:
        registry.add("shared", http_check(f"{upstream}/ok", client=shared, expected_status=200))
        async with client_for(health_app(registry)) as client:
            resp = await client.get("/ready")
    body = assert_health_response(resp)
    statuses = {key.split(":")[0]: v[0]["status"] for key, v in body["checks"].items()}
    assert statuses == {
        "ok": "pass",
        "moved": "pass",
        "teapot": "pass",
        "broken": "fail",
        "shared": "pass",
    }
    assert body["status"] == "warn"
    assert body["checks"]["broken:responseTime"][0]["output"] == "unexpected status 500"
    assert upstream not in resp.text


async def test_http_check_fails_fast_on_a_closed_port() -> None:
    registry = HealthRegistry()
    registry.add("api", http_check(closed_port_url("http")), timeout=10)
    report = await registry.ready()
    assert (report.status, report.checks[0].output) == ("fail", "connection refused")
    assert json.loads(report.to_json())["checks"]["api:responseTime"][0]["status"] == "fail"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never answers a byte."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


async def test_upstreams_that_accept_but_never_answer_fail_with_timeout(silent_port: int) -> None:
    registry = HealthRegistry()
    registry.add("api", http_check(f"http://127.0.0.1:{silent_port}/"), timeout=0.2)
    registry.add("redis", redis_check(f"redis://127.0.0.1:{silent_port}/0"), timeout=0.2)
    async with client_for(health_app(registry)) as client:
        resp = await client.get("/ready")
    body = assert_health_response(resp)
    assert resp.status_code == 503
    for key in ("api:responseTime", "redis:responseTime"):
        assert body["checks"][key][0]["output"] == "timeout"


async def test_a_check_that_cancels_itself_is_a_fail_not_an_error() -> None:
    async def cancels() -> None:
        raise asyncio.CancelledError

    registry = HealthRegistry()
    registry.add("odd", cancels)
    registry.add("fine", Counter(None))
    report = await registry.ready()
    assert report.status == "fail"
    assert [c.status for c in report.checks] == ["fail", "pass"]


def test_under_a_real_uvicorn_server_probes_follow_the_lifespan() -> None:
    import time

    import uvicorn

    registry = HealthRegistry()
    registry.add("sync_dep", lambda: True)
    registry.add("async_dep", Counter(None))
    registry.add("optional", Counter(False), critical=False)
    app = starlette_app(registry)
    app.add_middleware(HealthLifespanMiddleware, registry=registry)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.01)
        assert server.started
        # Probe like the kubelet: 1 s timeout, success is any 200-399.
        headers = {"User-Agent": "kube-probe/1.31"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as probe:
            live = probe.get("/health/live", headers=headers)
            ready = probe.get("/health/ready", headers=headers)
            startup = probe.get("/health/startup", headers=headers)
        assert [live.status_code, ready.status_code, startup.status_code] == [200, 200, 200]
        assert assert_health_response(ready)["status"] == "warn"
        assert not registry.shutting_down
    finally:
        server.should_exit = True
        thread.join(10)
    assert registry.shutting_down


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
        import json
        from starlette.testclient import TestClient
        with TestClient(app) as c:
            for probe in ("live", "ready", "startup"):
                r = c.get(f"/health/{probe}")
                print(json.dumps([probe, r.status_code, r.headers["content-type"], r.json()]))
    """
    out = run_docs_example("health_checks.md", driver, tmp_path)
    assert out.returncode == 0, out.stderr
    answers = {probe: rest for probe, *rest in map(json.loads, out.stdout.splitlines())}
    for code, media_type, body in answers.values():
        jsonschema.validate(body, HEALTH_SCHEMA)
        assert media_type == "application/health+json"
        assert code == (503 if body["status"] == "fail" else 200)
    assert answers["live"][2]["status"] == "pass"
    # The example's SQLite file is created in the working directory: startup passes.
    assert answers["startup"][2]["status"] == "pass"
    assert set(answers["ready"][2]["checks"]) == {
        "redis:responseTime",
        "db:responseTime",
        "search:responseTime",
        "disk:utilization",
    }
