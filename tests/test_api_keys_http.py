"""api_keys over HTTP: ApiKeyMiddleware and require_scopes under Starlette and FastAPI."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gennet_toolkit.api_keys import (
    ApiKeyManager,
    ApiKeyMiddleware,
    CreatedKey,
    InsufficientScope,
    current_principal,
    require_scopes,
)
from gennet_toolkit.api_keys._format import checksum
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable
from tests._api_keys_helpers import PEPPER, CountingStore, FakeClock

pytestmark = pytest.mark.anyio


@require_scopes("grn:read")
def read_networks_service() -> str:
    """A plain sync service function guarded by scope."""
    p = current_principal()
    return f"networks of {p.owner if p else '?'}"


def starlette_app(manager: ApiKeyManager, **options: Any) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        user = request.user
        return JSONResponse(
            {"owner": user.identity, "scopes": sorted(request.auth.scopes), "key": user.key_id}
        )

    @require_scopes("grn:write")
    async def write(request: Request) -> PlainTextResponse:
        return PlainTextResponse("written")

    @require_scopes("grn:read")
    def read_sync(request: Request) -> PlainTextResponse:
        return PlainTextResponse("read")

    def service(request: Request) -> PlainTextResponse:
        return PlainTextResponse(read_networks_service())

    @requires("grn:read")
    async def starlette_requires(request: Request) -> PlainTextResponse:
        return PlainTextResponse("starlette ok")

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("up")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.user.identity)
        await websocket.close()

    return Starlette(
        routes=[
            Route("/whoami", whoami),
            Route("/write", write, methods=["POST"]),
            Route("/read", read_sync),
            Route("/service", service),
            Route("/starlette", starlette_requires),
            Route("/health", health),
            Route("/health/live", health),
            Route("/health-admin", health),
            WebSocketRoute("/ws", ws),
        ],
        middleware=[Middleware(ApiKeyMiddleware, manager=manager, **options)],
    )


def fastapi_app(manager: ApiKeyManager, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/whoami")
    @require_scopes("grn:read")
    async def whoami(request: Request) -> dict[str, Any]:
        return {"owner": request.user.identity, "scopes": sorted(request.auth.scopes)}

    @app.post("/write")
    @require_scopes("grn:write")
    def write(item: int = 1) -> dict[str, int]:
        return {"item": item}

    app.add_middleware(ApiKeyMiddleware, manager=manager, **options)
    return app


APPS: dict[str, Callable[..., Any]] = {"starlette": starlette_app, "fastapi": fastapi_app}


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def manager(store: CountingStore) -> ApiKeyManager:
    return ApiKeyManager(store, pepper=PEPPER, clock=FakeClock())


@pytest.fixture
async def reader(manager: ApiKeyManager) -> CreatedKey:
    return await manager.create("lab-1", ["grn:read"])


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _forged(key_id: str) -> str:
    body = f"gnk_{key_id}_{'Q' * 32}"
    return body + checksum(body)


def _assert_401(resp: httpx.Response, *secrets: str) -> dict[str, Any]:
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"].startswith('Bearer realm="api"')
    for secret in secrets:
        assert secret not in resp.text
    body: dict[str, Any] = resp.json()
    assert body["code"] == "invalid_api_key"
    return body


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
async def test_valid_key_in_header_or_bearer_reaches_app_with_principal(
    kind: str, manager: ApiKeyManager, reader: CreatedKey
) -> None:
    async with client(APPS[kind](manager)) as c:
        for headers in ({"X-API-Key": reader.key}, {"Authorization": f"Bearer {reader.key}"}):
            resp = await c.get("/whoami", headers=headers)
            assert resp.status_code == 200, resp.text
            assert resp.json()["owner"] == "lab-1"
            assert resp.json()["scopes"] == ["grn:read"]


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
async def test_missing_invalid_unknown_expired_revoked_all_get_identical_401(
    kind: str, manager: ApiKeyManager, reader: CreatedKey
) -> None:
    app = APPS[kind](manager)
    wrong_secret = _forged(reader.id)
    unknown_id = _forged("Z" * 12)
    expiring = await manager.create("lab-1", ["grn:read"], expires_in=1)
    manager.clock.advance(2)  # type: ignore[attr-defined]
    revoked = await manager.create("lab-1", ["grn:read"])
    await manager.revoke(revoked.id)
    async with client(app) as c:
        missing = _assert_401(await c.get("/whoami"))
        assert "error=" not in (await c.get("/whoami")).headers["www-authenticate"]
        bodies = []
        for token in (
            wrong_secret,
            unknown_id,
            expiring.key,
            revoked.key,
            "garbage",
            reader.key[:-1],
        ):
            resp = await c.get("/whoami", headers={"X-API-Key": token})
            body = _assert_401(resp, token, token[4:16])
            assert 'error="invalid_token"' in resp.headers["www-authenticate"]
            bodies.append(body)
    # No oracle: unknown id and wrong secret (and every other failure) answer alike.
    assert all(b == bodies[0] for b in bodies)
    assert missing["detail"] == bodies[0]["detail"]


async def test_key_in_query_string_is_never_accepted(
    manager: ApiKeyManager, reader: CreatedKey
) -> None:
    async with client(starlette_app(manager)) as c:
        resp = await c.get("/whoami", params={"api_key": reader.key, "X-API-Key": reader.key})
        _assert_401(resp, reader.key)


async def test_two_different_keys_in_one_request_are_refused(
    manager: ApiKeyManager, reader: CreatedKey
) -> None:
    other = await manager.create("lab-2", ["grn:read"])
    async with client(starlette_app(manager)) as c:
        resp = await c.get(
            "/whoami", headers={"X-API-Key": reader.key, "Authorization": f"Bearer {other.key}"}
        )
        _assert_401(resp, reader.key, other.key)
        same = await c.get(
            "/whoami", headers={"X-API-Key": reader.key, "Authorization": f"Bearer {reader.key}"}
        )
        assert same.status_code == 200


async def test_typo_in_header_costs_no_store_lookup(
    manager: ApiKeyManager, store: CountingStore, reader: CreatedKey
) -> None:
    async with client(starlette_app(manager)) as c:
        typo = reader.key[:10] + ("a" if reader.key[10] != "a" else "b") + reader.key[11:]
        _assert_401(await c.get("/whoami", headers={"X-API-Key": typo}), typo)
    assert store.calls["get"] == 0


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
async def test_missing_scope_gets_403_problem_naming_the_scope(
    kind: str, manager: ApiKeyManager, reader: CreatedKey
) -> None:
    async with client(APPS[kind](manager)) as c:
        resp = await c.post("/write", headers={"X-API-Key": reader.key})
    assert resp.status_code == 403
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["code"] == "insufficient_scope"
    assert body["required_scopes"] == ["grn:write"]
    assert reader.key not in resp.text


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
async def test_wildcard_scope_grants_access(kind: str, manager: ApiKeyManager) -> None:
    admin = await manager.create("lab-1", ["grn:*"])
    async with client(APPS[kind](manager)) as c:
        resp = await c.post("/write", headers={"X-API-Key": admin.key})
    assert resp.status_code == 200


async def test_require_scopes_on_sync_endpoint_plain_function_and_starlette_requires(
    manager: ApiKeyManager, reader: CreatedKey
) -> None:
    writer = await manager.create("lab-2", ["grn:write"])
    async with client(starlette_app(manager)) as c:
        h = {"X-API-Key": reader.key}
        assert (await c.get("/read", headers=h)).text == "read"
        assert (await c.get("/service", headers=h)).text == "networks of lab-1"
        assert (await c.get("/starlette", headers=h)).text == "starlette ok"
        denied = await c.get("/service", headers={"X-API-Key": writer.key})
        assert denied.status_code == 403


def test_require_scopes_outside_a_request_is_401_and_keeps_metadata() -> None:
    with pytest.raises(Exception) as info:
        read_networks_service()
    assert getattr(info.value, "status_code", None) == 401
    assert read_networks_service.__name__ == "read_networks_service"
    assert read_networks_service.required_scopes == ("grn:read",)  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError):
        require_scopes()


async def test_require_scopes_keeps_async_functions_async() -> None:
    import inspect

    @require_scopes("a")
    async def f(x: int) -> int:
        return x

    assert inspect.iscoroutinefunction(f)
    with pytest.raises(Exception) as info:
        await f(1)
    assert getattr(info.value, "status_code", None) == 401
    assert not isinstance(info.value, InsufficientScope)


async def test_exempt_paths_are_exact_or_whole_subtrees(manager: ApiKeyManager) -> None:
    app = starlette_app(manager, exempt_paths=["/health/*"])
    async with client(app) as c:
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/health/live")).status_code == 200
        assert (await c.get("/health-admin")).status_code == 401
        assert (await c.get("/health/../whoami")).status_code in (401, 404)
        assert (await c.get("/whoami")).status_code == 401
    with pytest.raises(ConfigurationError):
        ApiKeyMiddleware(app, manager, exempt_paths=["/health*"])
    with pytest.raises(ConfigurationError):
        ApiKeyMiddleware(app, manager, exempt_paths=["health"])


async def test_allow_anonymous_passes_keyless_requests_but_not_bad_keys(
    manager: ApiKeyManager, reader: CreatedKey
) -> None:
    app = starlette_app(manager, allow_anonymous=True)
    async with client(app) as c:
        assert (await c.get("/health")).status_code == 200
        assert (await c.post("/write")).status_code == 401  # require_scopes needs a key
        _assert_401(await c.get("/whoami", headers={"X-API-Key": "nope"}))
        assert (await c.get("/whoami", headers={"X-API-Key": reader.key})).status_code == 200


async def test_store_down_gives_503_problem_never_200(
    manager: ApiKeyManager, reader: CreatedKey, store: CountingStore
) -> None:
    async def down(key_id: str) -> None:
        raise ServiceUnavailable("The API key store is unavailable.", retry_after=1)

    store.get = down  # type: ignore[method-assign,assignment]
    async with client(fastapi_app(manager)) as c:
        resp = await c.get("/whoami", headers={"X-API-Key": reader.key})
    assert resp.status_code == 503
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["retry-after"] == "1"
    assert reader.key not in resp.text


async def test_bare_asgi_app_and_lifespan_pass_through(
    manager: ApiKeyManager, reader: CreatedKey
) -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "lifespan":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["user"].identity.encode()})

    mw = ApiKeyMiddleware(app, manager)
    await mw({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    async with client(mw) as c:
        assert (await c.get("/", headers={"X-API-Key": reader.key})).text == "lab-1"
        assert (await c.get("/")).status_code == 401
    assert seen == ["lifespan", "http"]


async def _ws(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": headers,
        "subprotocols": [],
        "asgi": {"version": "3.0"},
    }
    await app(scope, receive, send)
    return sent


async def test_websocket_without_key_is_closed_before_accept_and_with_key_accepted(
    manager: ApiKeyManager, reader: CreatedKey
) -> None:
    app = starlette_app(manager)
    refused = await _ws(app, [])
    assert [m["type"] for m in refused] == ["websocket.close"]
    assert refused[0]["code"] == 1008
    ok = await _ws(app, [(b"x-api-key", reader.key.encode())])
    assert ok[0]["type"] == "websocket.accept"
    assert ok[1] == {"type": "websocket.send", "text": "lab-1"}


def test_middleware_from_env(monkeypatch: pytest.MonkeyPatch, manager: ApiKeyManager) -> None:
    monkeypatch.setenv("GENNET_API_KEYS_HEADER", "X-Token")
    monkeypatch.setenv("GENNET_API_KEYS_EXEMPT_PATHS", "/health, /docs/*")
    monkeypatch.setenv("GENNET_API_KEYS_ALLOW_ANONYMOUS", "false")
    mw = ApiKeyMiddleware.from_env(starlette_app(manager), manager)
    assert mw._header == b"x-token"
    assert mw._exempt("/docs/x")
    assert mw._exempt("/health")
    assert not mw._exempt("/docsx")


def test_problem_body_is_json_with_correlation_free_generic_detail() -> None:
    from gennet_toolkit.api_keys import InvalidApiKey

    body = InvalidApiKey("unknown").to_problem()
    assert json.loads(json.dumps(body))["detail"] == "A valid API key is required."
    assert "unknown" not in json.dumps(body)


def test_docs_example_runs_as_printed(capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "api_keys.md").read_text()
    code = text.split("```python\n", 1)[1].split("\n```", 1)[0]
    ns: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(code, "api_keys.md", "exec"), ns)
    assert capsys.readouterr().out.strip() == f"gnk_{ns['created'].id}_…"

    async def drive() -> list[int]:
        key = {"X-API-Key": ns["created"].key}
        async with client(ns["app"]) as c:
            return [
                (await c.get("/networks", headers=key)).status_code,
                (await c.post("/networks", headers=key)).status_code,
                (await c.get("/networks")).status_code,
                (await c.get("/health")).status_code,
            ]

    assert asyncio.run(drive()) == [200, 403, 401, 200]
