"""rbac: @require_permission on plain sync/async functions and Starlette/FastAPI endpoints."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gennet_toolkit.exceptions import ConfigurationError, Forbidden, Unauthorized
from gennet_toolkit.rbac import (
    DEFAULT_ROLES,
    RBAC,
    Grant,
    RBACMiddleware,
    Role,
    owns,
    require_permission,
)

RBAC_ = RBAC(
    roles=[
        *DEFAULT_ROLES,
        Role("author", [Grant("network:write", when=owns())], inherits=["viewer"]),
    ]
)


class _User(SimpleUser):
    def __init__(self, name: str, roles: list[str], uid: int = 0) -> None:
        super().__init__(name)
        self.roles = roles
        self.id = uid


class _HeaderAuth(AuthenticationBackend):
    """``X-Roles: editor,viewer`` signs in; no header stays anonymous."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        raw = conn.headers.get("x-roles")
        if raw is None:
            return None
        return AuthCredentials(["authenticated"]), _User("u", raw.split(",") if raw else [], 7)


# ---------------------------------------------------------------- plain functions


def test_sync_function_with_principal_argument() -> None:
    @require_permission("network:delete", rbac=RBAC_)
    def delete(network_id: int, *, principal: Any) -> str:
        return f"deleted {network_id}"

    assert delete(1, principal=["editor"]) == "deleted 1"
    with pytest.raises(Forbidden):
        delete(1, principal=["viewer"])
    with pytest.raises(Unauthorized):
        delete(1, principal=None)
    assert delete.required_permissions == ("network:delete",)  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_async_function_with_user_argument_and_async_resource() -> None:
    async def load(network_id: int, user: Any) -> dict[str, int]:
        return {"owner_id": network_id}

    @require_permission("network:write", rbac=RBAC_, resource=load)
    async def rename(network_id: int, user: Any) -> str:
        return "renamed"

    me = SimpleNamespace(id=3, roles=["author"])
    assert await rename(3, me) == "renamed"
    with pytest.raises(Forbidden):
        await rename(4, me)
    with pytest.raises(Unauthorized):
        await rename(3, SimpleNamespace(is_authenticated=False, roles=["admin"]))


def test_every_listed_permission_is_required_and_principal_callable_is_used() -> None:
    @require_permission("network:read", "audit:read", rbac=RBAC_, principal=lambda who: who)
    def report(who: Any) -> str:
        return "ok"

    assert report(["admin"]) == "ok"
    with pytest.raises(Forbidden):
        report(["editor"])


def test_signature_and_metadata_are_kept() -> None:
    def original(a: int, b: str = "x", *, principal: Any = None) -> str:
        """Doc."""
        return b * a

    wrapped = require_permission("network:read")(original)
    assert inspect.signature(wrapped) == inspect.signature(original)
    assert wrapped.__name__ == "original"
    assert wrapped.__doc__ == "Doc."
    assert wrapped(2, principal="viewer") == "xx"  # default RBAC(): predefined roles
    assert not inspect.iscoroutinefunction(wrapped)

    async def coro(principal: Any) -> int:
        return 1

    assert inspect.iscoroutinefunction(require_permission("network:read")(coro))


def test_decoration_errors_are_raised_at_decoration_time() -> None:
    with pytest.raises(ConfigurationError):
        require_permission()
    with pytest.raises(ConfigurationError):
        require_permission("network*:read")
    with pytest.raises(ConfigurationError):
        require_permission("network:read", principal="me")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        require_permission("network:read", resource=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no Request parameter"):

        @require_permission("network:read")
        def nobody(network_id: int) -> None: ...


# ---------------------------------------------------------------- Starlette


@require_permission("network:read", rbac=RBAC_)
async def list_networks(request: Request) -> JSONResponse:
    return JSONResponse({"networks": []})


@require_permission("apikey:manage", rbac=RBAC_)
def manage_keys(request: Request) -> JSONResponse:  # a sync endpoint
    return JSONResponse({"keys": []})


@require_permission("no-such-thing:ever", rbac=RBAC_)
async def nonexistent(request: Request) -> JSONResponse:
    return JSONResponse({})


async def _owned(request: Request) -> dict[str, int]:
    return {"owner_id": int(request.path_params["nid"])}


@require_permission("network:write", rbac=RBAC_, resource=_owned)
async def write_network(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@require_permission("network:read", rbac=RBAC_)
async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hi")
    await websocket.close()


def _starlette() -> Starlette:
    return Starlette(
        routes=[
            Route("/networks", list_networks),
            Route("/keys", manage_keys),
            Route("/nothing", nonexistent),
            Route("/networks/{nid:int}", write_network, methods=["PUT"]),
            WebSocketRoute("/ws", ws_endpoint),
        ],
        middleware=[Middleware(AuthenticationMiddleware, backend=_HeaderAuth())],
    )


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == ("forbidden" if status == 403 else "unauthorized")
    return body


@pytest.mark.anyio
async def test_starlette_endpoint_allows_and_refuses_with_problem_json() -> None:
    async with _client(_starlette()) as client:
        ok = await client.get("/networks", headers={"x-roles": "viewer"})
        assert ok.status_code == 200
        assert ok.json() == {"networks": []}
        anon = await client.get("/networks")
        body = _assert_problem(anon, 401)
        assert anon.headers["www-authenticate"] == "Bearer"
        assert body["instance"] == "/networks"
        _assert_problem(await client.get("/networks", headers={"x-roles": ""}), 403)
        _assert_problem(await client.get("/keys", headers={"x-roles": "editor"}), 403)
        assert (await client.get("/keys", headers={"x-roles": "admin"})).status_code == 200


@pytest.mark.anyio
async def test_denials_do_not_reveal_which_permission_exists() -> None:
    async with _client(_starlette()) as client:
        known = await client.get("/keys", headers={"x-roles": "viewer"})
        unknown = await client.get("/nothing", headers={"x-roles": "viewer"})
    _assert_problem(known, 403)
    _assert_problem(unknown, 403)
    a, b = known.json(), unknown.json()
    a.pop("instance"), b.pop("instance")
    assert a == b
    for text in (known.text, unknown.text):
        assert "apikey" not in text
        assert "no-such-thing" not in text
        assert "viewer" not in text


@pytest.mark.anyio
async def test_starlette_instance_level_check_through_resource() -> None:
    async with _client(_starlette()) as client:
        mine = await client.put("/networks/7", headers={"x-roles": "author"})  # user id 7
        theirs = await client.put("/networks/8", headers={"x-roles": "author"})
        editor = await client.put("/networks/8", headers={"x-roles": "editor"})
    assert mine.status_code == 200
    _assert_problem(theirs, 403)
    assert editor.status_code == 200


@pytest.mark.anyio
async def test_websocket_endpoint_refusal_raises_before_accept() -> None:
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    def ws(roles: list[str] | None) -> WebSocket:
        scope: dict[str, Any] = {"type": "websocket", "path": "/ws", "headers": [], "state": {}}
        if roles is not None:
            scope["state"]["principal"] = roles
        return WebSocket(scope, receive, send)

    await ws_endpoint(ws(["viewer"]))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    sent.clear()
    # error_handler turns these into a refused handshake with the problem body
    with pytest.raises(Forbidden):
        await ws_endpoint(ws([]))
    with pytest.raises(Unauthorized):
        await ws_endpoint(ws(None))
    assert sent == []


@pytest.mark.anyio
async def test_principal_from_request_state_and_custom_callable() -> None:
    @require_permission("audit:read", rbac=RBAC_)
    async def from_state(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @require_permission("audit:read", rbac=RBAC_, principal=lambda r: r.headers.get("x-role"))
    async def from_header(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["principal"] = ["admin"] if scope["path"] == "/a" else []
        endpoint = from_state if scope["path"] in ("/a", "/b") else from_header
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)

    async with _client(app) as client:
        assert (await client.get("/a")).status_code == 200
        _assert_problem(await client.get("/b"), 403)
        assert (await client.get("/c", headers={"x-role": "admin"})).status_code == 200
        _assert_problem(await client.get("/c"), 401)


# ---------------------------------------------------------------- FastAPI


def _fastapi() -> FastAPI:
    app = FastAPI()

    @app.get("/networks/{network_id}")
    @require_permission("network:read", rbac=RBAC_)
    async def get_network(network_id: int, request: Request, q: str = "") -> dict[str, Any]:
        return {"id": network_id, "q": q}

    def principal_dep(request: Request) -> str | None:
        return request.headers.get("x-role")

    @app.delete("/networks/{network_id}", status_code=204)
    @require_permission("network:delete", rbac=RBAC_, principal=lambda req: req.state.role)
    def delete_network(
        network_id: int, request: Request, role: str | None = Depends(principal_dep)
    ) -> None:
        return None

    @app.middleware("http")
    async def put_role_in_state(request: Request, call_next: Any) -> Any:
        request.state.role = request.headers.get("x-role")
        return await call_next(request)

    app.add_middleware(AuthenticationMiddleware, backend=_HeaderAuth())
    return app


@pytest.mark.anyio
async def test_fastapi_endpoints_keep_parameters_and_refuse_with_problem_json() -> None:
    async with _client(_fastapi()) as client:
        ok = await client.get("/networks/3?q=x", headers={"x-roles": "viewer"})
        assert ok.status_code == 200
        assert ok.json() == {"id": 3, "q": "x"}
        _assert_problem(await client.get("/networks/3"), 401)
        _assert_problem(await client.get("/networks/3", headers={"x-roles": "nobody"}), 403)
        # FastAPI still validates the path parameter first
        assert (await client.get("/networks/x", headers={"x-roles": "viewer"})).status_code == 422
        gone = await client.delete("/networks/3", headers={"x-role": "editor", "x-roles": ""})
        assert gone.status_code == 204
        _assert_problem(await client.delete("/networks/3", headers={"x-role": "viewer"}), 403)
        _assert_problem(await client.delete("/networks/3"), 401)


def test_fastapi_openapi_shows_the_original_parameters() -> None:
    schema = _fastapi().openapi()
    params = {p["name"] for p in schema["paths"]["/networks/{network_id}"]["get"]["parameters"]}
    assert params == {"network_id", "q"}


# ---------------------------------------------------------------- RBACMiddleware

RULES: dict[str, Any] = {
    "GET /v1/networks": "network:read",
    "POST /v1/networks": "network:write",
    "GET /v1/networks/{nid:int}": "network:read",
    "DELETE /v1/networks/{nid:int}": ["network:delete", "interaction:delete"],
    "/v1/audit/{rest:path}": "audit:read",
    "GET /v1/files/report.csv": "network:read",
    "GET /health": None,
    "PUT /v1/networks/{nid}": "network:write",
    "PUT /v1/networks/{nid}/lock": "apikey:manage",  # overlaps the rule above
}


async def _ok(request: Request) -> JSONResponse:
    return JSONResponse({"path": request.url.path})


def _guarded_starlette(**options: Any) -> Starlette:
    paths = [
        "/v1/networks",
        "/v1/networks/{nid:int}",
        "/v1/networks/{nid}/lock",
        "/v1/networks/{nid}",
        "/v1/audit/{rest:path}",
        "/v1/files/{name}",
        "/health",
        "/unlisted",
    ]
    methods = ["GET", "POST", "PUT", "DELETE"]
    return Starlette(
        routes=[Route(p, _ok, methods=methods) for p in paths],
        middleware=[
            Middleware(AuthenticationMiddleware, backend=_HeaderAuth()),
            Middleware(RBACMiddleware, rbac=RBAC_, rules=RULES, **options),
        ],
    )


@pytest.mark.parametrize(
    ("method", "path", "roles", "status"),
    [
        ("GET", "/health", None, 200),
        ("GET", "/v1/networks", "viewer", 200),
        ("HEAD", "/v1/networks", "viewer", 200),
        ("GET", "/v1/networks", None, 401),
        ("GET", "/v1/networks", "", 403),
        ("POST", "/v1/networks", "viewer", 403),
        ("POST", "/v1/networks", "editor", 200),
        ("GET", "/v1/networks/12", "viewer", 200),
        ("GET", "/v1/networks/abc", "viewer", 403),  # no GET rule for a non-int id
        ("DELETE", "/v1/networks/12", "editor", 200),  # both permissions
        ("DELETE", "/v1/networks/12", "viewer", 403),
        ("GET", "/v1/audit/2024/01", "editor", 403),
        ("GET", "/v1/audit/2024/01", "admin", 200),
        ("PATCH", "/v1/audit/x", "admin", 405),  # any-method rule, the app answers 405
        ("GET", "/v1/files/report.csv", "viewer", 200),
        ("GET", "/v1/files/reportXcsv", "viewer", 403),  # '.' is not a wildcard
        ("GET", "/v1/networksX", "admin", 403),  # no prefix matching
        ("GET", "/v1/networks/", "admin", 403),  # trailing slash: not the template
        ("PUT", "/v1/networks/3", "editor", 200),
        ("PUT", "/v1/networks/3/lock", "editor", 403),  # needs both overlapping rules
        ("PUT", "/v1/networks/3/lock", "admin", 200),
        ("GET", "/unlisted", "admin", 403),  # deny by default, admins included
        ("GET", "/unlisted", None, 401),
    ],
)
@pytest.mark.anyio
async def test_middleware_maps_routes_to_permissions(
    method: str, path: str, roles: str | None, status: int
) -> None:
    headers = {} if roles is None else {"x-roles": roles}
    async with _client(_guarded_starlette()) as client:
        response = await client.request(method, path, headers=headers)
    assert response.status_code == status
    if status in (401, 403):
        _assert_problem(response, status)
        assert "network" not in response.text.replace(path, "")


@pytest.mark.anyio
async def test_middleware_default_allow_lets_unlisted_routes_through() -> None:
    async with _client(_guarded_starlette(default="allow")) as client:
        assert (await client.get("/unlisted")).status_code == 200
        assert (await client.get("/v1/networks")).status_code == 401


@pytest.mark.anyio
async def test_middleware_under_fastapi_with_root_path_and_custom_principal() -> None:
    app = FastAPI()

    @app.get("/v1/networks/{nid}")
    async def get_network(nid: int) -> dict[str, int]:
        return {"nid": nid}

    app.add_middleware(
        RBACMiddleware,
        rbac=RBAC_,
        rules={"GET /v1/networks/{nid:int}": "network:read"},
        principal=lambda scope: dict(scope["headers"]).get(b"x-role", b"").decode() or None,
    )
    transport = httpx.ASGITransport(app=app, root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ok = await client.get("/api/v1/networks/5", headers={"x-role": "viewer"})
        assert ok.status_code == 200
        assert ok.json() == {"nid": 5}
        _assert_problem(await client.get("/api/v1/networks/5"), 401)
        _assert_problem(await client.get("/api/v1/networks/5", headers={"x-role": "x"}), 403)


@pytest.mark.anyio
async def test_middleware_passes_other_scope_types_through_untouched() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    guarded = RBACMiddleware(inner, rbac=RBAC_, rules={})

    async def nothing() -> Any:
        return {}

    async def drop(message: Any) -> None:
        return None

    await guarded({"type": "lifespan"}, nothing, drop)
    await guarded({"type": "websocket", "path": "/ws", "headers": []}, nothing, drop)
    assert seen == ["lifespan", "websocket"]


@pytest.mark.parametrize(
    "rules",
    [
        {"GET networks": "network:read"},
        {"GET /a /b": "network:read"},
        {"G3T /a": "network:read"},
        {"GET /a/{id:hex}": "network:read"},
        {"GET /a/{id": "network:read"},
        {"GET /a": "network*:read"},
        {"GET /a": ["network:read", "bad"]},
    ],
)
def test_middleware_rejects_bad_rules_at_construction(rules: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RBACMiddleware(_ok, rbac=RBAC_, rules=rules)  # type: ignore[arg-type]


def test_middleware_rejects_bad_options() -> None:
    with pytest.raises(ConfigurationError):
        RBACMiddleware(_ok, rbac="x", rules={})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RBACMiddleware(_ok, rbac=RBAC_, rules={}, default="open")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RBACMiddleware(_ok, rbac=RBAC_, rules={}, principal=1)  # type: ignore[arg-type]
