"""rate_limit: limit parsing, key functions, headers, the middleware and the decorator.

Everything here runs on the memory backend (with a fake clock where time matters).
Redis behaviour (one round trip per check, exactness across processes, outages) is in
test_rate_limit_redis.py; the strategies' boundary behaviour in test_rate_limit_windows.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import gennet_toolkit.rate_limit as rl
from gennet_toolkit.backends import MemoryBackend
from gennet_toolkit.exceptions import ConfigurationError, RateLimitExceeded
from gennet_toolkit.rate_limit import (
    ClientIP,
    Limit,
    RateLimiter,
    RateLimitMiddleware,
    Rule,
    by_api_key,
    by_ip,
    by_user,
    parse_limits,
    rate_limited,
)
from gennet_toolkit.types import Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio


class FakeClock:
    """A ``time.monotonic`` stand-in that moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def scope_with(
    client: tuple[str, int] | None = ("203.0.113.7", 5000),
    headers: list[tuple[str, str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "client": client,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers or []],
        **extra,
    }


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


def starlette_app(*extra: Route) -> Starlette:
    return Starlette(routes=[Route("/", ok), Route("/health", ok), Route("/api/x", ok), *extra])


def client_for(app: Any, *, client: tuple[str, int] = ("198.51.100.1", 123)) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=client), base_url="http://test"
    )


# --------------------------------------------------------------------------- public surface


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert sorted(rl.__all__) == sorted(
        [
            "STATE_KEY",
            "ClientIP",
            "Decision",
            "HeaderMode",
            "Key",
            "KeyFunc",
            "Limit",
            "RateLimitExceeded",
            "RateLimitMiddleware",
            "RateLimiter",
            "Rule",
            "Strategy",
            "by_api_key",
            "by_ip",
            "by_user",
            "header_pairs",
            "parse_limits",
            "rate_limited",
        ]
    )
    for name in rl.__all__:
        obj = getattr(rl, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name


# --------------------------------------------------------------------------- limit strings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/second", [(10, 1.0)]),
        ("100 per minute", [(100, 60.0)]),
        ("5/3 seconds", [(5, 3.0)]),
        ("1000/day", [(1000, 86400.0)]),
        ("2 / 1.5 hours", [(2, 5400.0)]),
        ("7/h", [(7, 3600.0)]),
        ("100/minute;10/second", [(10, 1.0), (100, 60.0)]),
        ("10/second, 100/min", [(10, 1.0), (100, 60.0)]),
        (" 3 PER  Second ", [(3, 1.0)]),
    ],
)
def test_limit_strings_parse_like_limits(text: str, expected: list[tuple[int, float]]) -> None:
    assert [(lim.amount, lim.period) for lim in parse_limits(text)] == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ten/second",
        "10/fortnight",
        "10/ms",
        "0/second",
        "-1/second",
        "10/0 seconds",
        "10",
        "10/second;",
        "10/second;;5/minute",
        "5/second;10/second",
        "10/second extra",
    ],
)
def test_bad_limit_strings_raise_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_limits(text)


def test_rule_options_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        Rule("10/second", name="has space")
    with pytest.raises(ConfigurationError):
        Rule("10/second", name='quo"te')
    with pytest.raises(ConfigurationError):
        Rule("10/second", cost=0)
    with pytest.raises(ConfigurationError):
        Rule("2/second", cost=3)
    with pytest.raises(ConfigurationError):
        Rule("2/second", key=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        RateLimiter(strategy="leaky")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ClientIP(trusted_proxies=["10.0.0.0/33"])
    with pytest.raises(ConfigurationError):
        RateLimitMiddleware(starlette_app(), rules=[Rule("1/s"), Rule("2/s")])  # same name
    with pytest.raises(ConfigurationError):
        RateLimitMiddleware(starlette_app(), rules=[Rule("1/s")], headers="ietf")  # type: ignore[arg-type]


def test_a_period_too_large_to_be_finite_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="finite"):
        Rule("5/" + "9" * 400 + " seconds")


def test_limit_keeps_windows_apart_in_storage_keys() -> None:
    backend = MemoryBackend()
    limiter = RateLimiter(backend)
    a, b = parse_limits("10/second;100/minute")
    assert limiter.hit_sync(a, "k") is not None
    assert limiter.hit_sync(b, "k") is not None
    assert sorted(backend.sync._values) == ["rl:sw:{k}:1", "rl:sw:{k}:60"]
    assert str(Limit(5, 3.0)) == "5/3s"


# --------------------------------------------------------------------------- keys


def test_by_ip_uses_the_peer_and_ignores_forwarded_headers_by_default() -> None:
    scope = scope_with(headers=[("X-Forwarded-For", "1.2.3.4"), ("Forwarded", "for=1.2.3.4")])
    assert by_ip(scope) == "203.0.113.7"


def test_by_ip_takes_the_right_most_untrusted_hop_from_a_trusted_proxy() -> None:
    key = ClientIP(trusted_proxies=["10.0.0.0/8", "192.168.1.1"])
    scope = scope_with(
        client=("10.0.0.5", 1),
        # The client forged the left-most entry; our proxies appended the rest.
        headers=[
            ("X-Forwarded-For", "6.6.6.6, 198.51.100.9, 192.168.1.1"),
            ("X-Forwarded-For", "10.1.2.3"),
        ],
    )
    assert key(scope) == "198.51.100.9"


def test_by_ip_called_with_keywords_gives_a_configured_copy() -> None:
    key = by_ip(trusted_proxies=["10.0.0.0/8"])
    assert isinstance(key, ClientIP)
    scope = scope_with(client=("10.0.0.5", 1), headers=[("X-Forwarded-For", "192.0.2.4")])
    assert key(scope) == "192.0.2.4"
    assert by_ip(scope) == "10.0.0.5"  # the shared default is unchanged
    with pytest.raises(ConfigurationError):
        by_ip(trusted_proxies=["10.0.0.0/33"])
    with pytest.raises(TypeError):
        by_ip()


def test_by_ip_ignores_proxy_headers_from_an_untrusted_peer() -> None:
    key = by_ip.trusting("10.0.0.0/8")
    scope = scope_with(client=("198.51.100.50", 1), headers=[("X-Forwarded-For", "1.2.3.4")])
    assert key(scope) == "198.51.100.50"


def test_by_ip_reads_rfc7239_forwarded_when_configured() -> None:
    key = ClientIP(trusted_proxies=["10.0.0.0/8"], header="forwarded")
    scope = scope_with(
        client=("10.0.0.5", 1),
        headers=[
            ("Forwarded", 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.9')
        ],
    )
    assert key(scope) == "2001:db8:cafe::/64"
    # The other header is not read: a client could have written it.
    only_xff = scope_with(client=("10.0.0.5", 1), headers=[("X-Forwarded-For", "1.2.3.4")])
    assert key(only_xff) == "10.0.0.5"


@pytest.mark.parametrize(
    "header",
    [
        "not-an-ip",
        "1.2.3.4, , 10.0.0.2",
        "1.2.3.4, 999.1.1.1",
        "[::1",
        "\x00\xff",
        ", ".join(["10.0.0.1"] * 40),
        "1.2.3.4" + ", 10.0.0.1" * 2000,
    ],
)
def test_malformed_forwarded_for_falls_back_to_the_peer(header: str) -> None:
    key = ClientIP(trusted_proxies=["10.0.0.0/8"])
    assert (
        key(scope_with(client=("10.9.9.9", 1), headers=[("X-Forwarded-For", header)])) == "10.9.9.9"
    )


@pytest.mark.parametrize(
    "header",
    ["for=unknown", "for=_hidden", "proto=https", 'for="[2001:db8::1', "for=1.2.3.4;for"],
)
def test_malformed_forwarded_falls_back_to_the_peer(header: str) -> None:
    key = ClientIP(trusted_proxies=["10.0.0.0/8"], header="forwarded")
    assert key(scope_with(client=("10.9.9.9", 1), headers=[("Forwarded", header)])) == "10.9.9.9"


def test_by_ip_when_every_hop_is_trusted_uses_the_left_most() -> None:
    key = ClientIP(trusted_proxies=["10.0.0.0/8"])
    scope = scope_with(
        client=("10.0.0.1", 1), headers=[("X-Forwarded-For", "10.0.0.7:8080, 10.0.0.2")]
    )
    assert key(scope) == "10.0.0.7"


def test_by_ip_normalises_addresses() -> None:
    assert by_ip(scope_with(client=("::ffff:192.0.2.1", 1))) == "192.0.2.1"
    assert by_ip(scope_with(client=("2001:db8:1:2:3:4:5:6", 1))) == "2001:db8:1:2::/64"
    assert ClientIP(ipv6_prefix=128)(scope_with(client=("2001:db8::6", 1))) == "2001:db8::6"
    assert by_ip(scope_with(client=("testclient", 50000))) == "testclient"
    assert by_ip(scope_with(client=None)) is None


def test_by_user_reads_state_then_scope_user() -> None:
    class StarletteUser:
        is_authenticated = True
        username = "ada"

        @property
        def identity(self) -> str:
            raise NotImplementedError

    class Anonymous:
        is_authenticated = False

    assert by_user(scope_with(state={"user_id": 42})) == "42"
    assert by_user(scope_with(user=StarletteUser())) == "ada"
    assert by_user(scope_with(state={"user": "bob"})) == "bob"
    assert by_user(scope_with(user=Anonymous())) is None
    assert by_user(scope_with()) is None


def test_by_api_key_hashes_the_key_and_prefers_x_api_key() -> None:
    secret = "gnk_abc_supersecretvalue"
    bearer = by_api_key(scope_with(headers=[("Authorization", f"Bearer {secret}")]))
    header = by_api_key(scope_with(headers=[("X-API-Key", secret)]))
    assert bearer == header
    assert bearer is not None
    assert secret not in bearer
    assert len(bearer) == 32
    both = scope_with(headers=[("Authorization", "Bearer other"), ("X-API-Key", secret)])
    assert by_api_key(both) == header
    assert by_api_key(scope_with(headers=[("Authorization", "Basic dXNlcjpwYXNz")])) is None
    assert by_api_key(scope_with(headers=[("X-API-Key", "")])) is None


def test_keys_compose_as_fallback_and_as_pair() -> None:
    anon = scope_with()
    user = scope_with(state={"user_id": "7"})
    either = by_user | by_ip
    assert either(anon) == "ip:203.0.113.7"
    assert either(user) == "user:7"
    pair = by_user & by_ip
    assert pair(anon) is None
    assert pair(user) == "user:7&ip:203.0.113.7"

    def tenant(scope: Mapping[str, Any]) -> str | None:
        return "acme"

    assert (by_api_key | tenant)(anon) == "tenant:acme"


# --------------------------------------------------------------------------- middleware


async def test_draft_headers_describe_the_policy_and_what_is_left() -> None:
    app = RateLimitMiddleware(starlette_app(), RateLimiter(), rules=[Rule("100/minute")])
    async with client_for(app) as client:
        first = await client.get("/")
        second = await client.get("/")
    assert first.status_code == 200
    assert first.headers["RateLimit-Policy"] == '"default";q=100;w=60'
    assert first.headers["RateLimit"].startswith('"default";r=99;t=')
    assert second.headers["RateLimit"].startswith('"default";r=98;t=')
    t = int(second.headers["RateLimit"].rsplit("t=", 1)[1])
    assert 0 < t <= 60
    assert "X-RateLimit-Limit" not in first.headers


async def test_refusal_is_429_problem_json_with_retry_after_equal_to_the_wait() -> None:
    clock = FakeClock(1000.0)
    limiter = RateLimiter(MemoryBackend(clock=clock), strategy="fixed_window")
    app = RateLimitMiddleware(starlette_app(), limiter, rules=[Rule("2/minute")], headers="both")
    async with client_for(app) as client:
        assert (await client.get("/")).status_code == 200
        clock.now += 15
        assert (await client.get("/")).status_code == 200
        clock.now += 10  # 25 s into a 60 s window: 35 s remain
        refused = await client.get("/")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["Retry-After"] == "35"
    assert refused.headers["RateLimit"] == '"default";r=0;t=35'
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["X-RateLimit-Limit"] == "2"
    body = refused.json()
    assert body["status"] == 429
    assert body["code"] == "rate_limited"
    assert body["violated-policies"] == ["default"]
    assert "instance" not in body  # answered before routing: no route template yet
    assert "198.51.100.1" not in refused.text  # the key is never echoed


async def test_legacy_headers_only_when_asked() -> None:
    app = RateLimitMiddleware(starlette_app(), rules=[Rule("5/minute")], headers="legacy")
    async with client_for(app) as client:
        response = await client.get("/")
    assert response.headers["X-RateLimit-Limit"] == "5"
    assert response.headers["X-RateLimit-Remaining"] == "4"
    assert int(response.headers["X-RateLimit-Reset"]) > 1_700_000_000  # epoch seconds
    assert "RateLimit" not in response.headers


async def test_no_headers_mode_still_limits() -> None:
    app = RateLimitMiddleware(starlette_app(), rules=[Rule("1/minute")], headers=None)
    async with client_for(app) as client:
        first = await client.get("/")
        second = await client.get("/")
    assert "RateLimit" not in first.headers
    assert "X-RateLimit-Limit" not in first.headers
    assert second.status_code == 429
    assert "Retry-After" in second.headers


async def test_each_client_has_its_own_quota() -> None:
    app = RateLimitMiddleware(starlette_app(), rules=[Rule("1/minute")])
    async with (
        client_for(app, client=("192.0.2.1", 1)) as a,
        client_for(app, client=("192.0.2.2", 1)) as b,
    ):
        assert (await a.get("/")).status_code == 200
        assert (await a.get("/")).status_code == 429
        assert (await b.get("/")).status_code == 200


async def test_a_refused_request_spends_no_limit_of_its_rule_nor_later_rules() -> None:
    limiter = RateLimiter(strategy="fixed_window")
    rules = [
        Rule("2/second;3/minute", key=by_ip, name="ip"),
        Rule("100/hour", key="everyone", name="global"),
    ]
    app = RateLimitMiddleware(starlette_app(), limiter, rules=rules)
    async with client_for(app) as client:
        first = await client.get("/")
        assert first.headers["RateLimit-Policy"] == (
            '"ip-1s";q=2;w=1, "ip-60s";q=3;w=60, "global";q=100;w=3600'
        )
        assert first.headers["RateLimit"].count(";r=") == 3
        await client.get("/")
        refused = await client.get("/")  # the per-second limit refuses
    assert refused.status_code == 429
    assert refused.json()["violated-policies"] == ["ip-1s"]
    # Both limits of the rule were checked in one call: the 429 reports both.
    assert refused.headers["RateLimit"].startswith('"ip-1s";r=0;t=1, "ip-60s";r=1;t=')
    # Neither the per-minute nor the global quota paid for the refused request.
    minute = await limiter.hit("3/minute", "mw:ip:198.51.100.1", cost=0)
    glob = await limiter.hit("100/hour", "mw:global:everyone", cost=0)
    assert minute is not None
    assert minute.remaining == 1
    assert glob is not None
    assert glob.remaining == 98


async def test_rules_filter_by_method_and_path_and_exempt_paths_skip_everything() -> None:
    rules = [Rule("1/minute", paths=["/api"], methods=["POST"], name="writes")]
    app = RateLimitMiddleware(starlette_app(), rules=rules, exempt_paths=["/health"])
    async with client_for(app) as client:
        for _ in range(3):
            assert (await client.get("/api/x")).status_code == 200
        assert (await client.post("/api/x")).status_code == 405  # counted, then routed
        assert (await client.post("/api/x")).status_code == 429
        assert (await client.post("/apix")).status_code == 404  # not under /api
    app2 = RateLimitMiddleware(starlette_app(), rules=[Rule("1/minute")], exempt_paths=["/health"])
    async with client_for(app2) as client:
        for _ in range(3):
            response = await client.get("/health")
            assert response.status_code == 200
            assert "RateLimit" not in response.headers


async def test_key_returning_none_skips_the_rule_and_a_failing_key_never_500s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(scope: Mapping[str, Any]) -> str | None:
        raise RuntimeError("bug in user code")

    rules = [Rule("1/minute", key=by_user, name="user"), Rule("1/minute", key=broken, name="b")]
    app = RateLimitMiddleware(starlette_app(), rules=rules)
    async with client_for(app) as client:
        for _ in range(3):
            assert (await client.get("/")).status_code == 200
    assert "bug in user code" in caplog.text


async def test_works_under_fastapi_with_a_user_key() -> None:
    api = FastAPI()

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    async def set_user(scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["user_id"] = (
            dict(scope["headers"]).get(b"x-user", b"").decode()
        )
        await limited(scope, receive, send)

    limited = RateLimitMiddleware(api, rules=[Rule("2/minute", key=by_user | by_ip)])
    async with client_for(set_user) as client:
        assert (await client.get("/items/1", headers={"x-user": "ada"})).json() == {"id": 1}
        await client.get("/items/2", headers={"x-user": "ada"})
        assert (await client.get("/items/3", headers={"x-user": "ada"})).status_code == 429
        assert (await client.get("/items/3", headers={"x-user": "bob"})).status_code == 200
        assert (await client.get("/items/3", headers={"x-user": "bob"})).status_code == 200
        assert (await client.get("/items/3", headers={"x-user": "bob"})).status_code == 429


async def test_api_key_rule_on_a_bare_asgi_app_keeps_streaming() -> None:
    sent: list[Message] = []

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
        for chunk in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    app = RateLimitMiddleware(bare, rules=[Rule("5/minute", key=by_api_key)])

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope_with(headers=[("x-api-key", "k1")]), receive, send)
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * 4
    headers = dict(sent[0]["headers"])
    assert headers[b"x-app"] == b"1"
    assert headers[b"ratelimit"].startswith(b'"default";r=4')
    sent.clear()
    await app(scope_with(), receive, send)  # no key: not limited, no headers
    assert b"ratelimit" not in dict(sent[0]["headers"])


async def test_streaming_response_stays_streaming_under_starlette() -> None:
    async def stream(request: Request) -> Response:
        async def gen() -> Any:
            for i in range(3):
                yield f"{i}\n"

        return StreamingResponse(gen())

    app = RateLimitMiddleware(starlette_app(Route("/s", stream)), rules=[Rule("5/minute")])
    async with client_for(app) as client:
        response = await client.get("/s")
    assert response.text == "0\n1\n2\n"
    assert "RateLimit" in response.headers


async def test_lifespan_and_websocket_scopes_pass_straight_through() -> None:
    seen: list[str] = []

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    app = RateLimitMiddleware(bare, rules=[Rule("1/minute", key="all")])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        return None

    for _ in range(3):
        await app({"type": "lifespan"}, receive, send)
        await app({"type": "websocket", "path": "/", "headers": []}, receive, send)
    assert seen == ["lifespan", "websocket"] * 3


async def test_fail_closed_answers_503_problem_json_when_the_backend_is_down() -> None:
    class DownBackend(MemoryBackend):
        async def rate_limits(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("redis at 10.0.0.1:6379 refused")

    app = RateLimitMiddleware(
        starlette_app(), RateLimiter(DownBackend(), fail_open=False), rules=[Rule("5/minute")]
    )
    async with client_for(app) as client:
        response = await client.get("/")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["Retry-After"] == "1"
    assert "10.0.0.1" not in response.text
    assert "refused" not in response.text


def test_from_env_builds_limiter_and_middleware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_RATE_LIMIT_STRATEGY", "token_bucket")
    monkeypatch.setenv("APP_RATE_LIMIT_FAIL_OPEN", "false")
    monkeypatch.setenv("APP_RATE_LIMIT_DEFAULT", "10/second;500/hour")
    monkeypatch.setenv("APP_RATE_LIMIT_TRUSTED_PROXIES", "10.0.0.0/8, 172.16.0.0/12")
    monkeypatch.setenv("APP_RATE_LIMIT_EXEMPT_PATHS", "/health,/metrics")
    monkeypatch.setenv("APP_RATE_LIMIT_HEADERS", "both")
    mw = RateLimitMiddleware.from_env(starlette_app(), prefix="APP_")
    assert mw.limiter.strategy == "token_bucket"
    assert mw.limiter.fail_open is False
    assert [str(lim) for lim in mw.rules[0].limits] == ["10/1s", "500/3600s"]
    assert isinstance(mw.rules[0].key, ClientIP)
    assert mw.rules[0].key.trusted_proxies == ("10.0.0.0/8", "172.16.0.0/12")
    assert mw.exempt_paths == ("/health", "/metrics")
    assert mw.headers == "both"
    monkeypatch.setenv("APP_RATE_LIMIT_FAIL_OPEN", "maybe")
    with pytest.raises(ConfigurationError):
        RateLimiter.from_env("APP_")


# --------------------------------------------------------------------------- decorator


async def test_decorated_starlette_endpoint_gets_its_own_limit_and_headers() -> None:
    @rate_limited("2/minute", name="login")
    async def login(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = starlette_app(Route("/login", login, methods=["POST"]))
    async with client_for(app) as client:
        first = await client.post("/login")
        await client.post("/login")
        refused = await client.post("/login")
        assert (await client.get("/")).status_code == 200  # other routes unaffected
    assert first.headers["RateLimit-Policy"] == '"login";q=2;w=60'
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json()["violated-policies"] == ["login"]


async def test_decorator_and_middleware_headers_merge_without_duplicates() -> None:
    @rate_limited("3/minute", name="login")
    async def login(request: Request) -> Response:
        return PlainTextResponse("in")

    app = RateLimitMiddleware(
        starlette_app(Route("/login", login)), rules=[Rule("100/minute", name="global")]
    )
    async with client_for(app) as client:
        response = await client.get("/login")
        for _ in range(2):
            await client.get("/login")
        refused = await client.get("/login")
    assert response.headers.get_list("RateLimit-Policy") == [
        '"global";q=100;w=60, "login";q=3;w=60'
    ]
    assert len(response.headers.get_list("RateLimit")) == 1
    # The decorator's own 429 is merged too: one field of each, one Retry-After.
    assert refused.status_code == 429
    assert refused.headers.get_list("RateLimit-Policy") == ['"global";q=100;w=60, "login";q=3;w=60']
    assert refused.headers.get_list("RateLimit")[0].startswith('"global";r=96;')
    assert len(refused.headers.get_list("RateLimit")) == 1
    assert len(refused.headers.get_list("Retry-After")) == 1


async def test_decorated_fastapi_endpoint_and_sync_endpoint() -> None:
    api = FastAPI()
    limiter = RateLimiter()

    @api.get("/a")
    @rate_limited("1/minute", limiter=limiter, name="a")
    async def a(request: Request) -> dict[str, str]:
        return {"a": "ok"}

    @api.get("/b")
    @rate_limited("1/minute", limiter=limiter, name="b")
    def b(request: Request, q: int = 0) -> dict[str, int]:
        return {"q": q}

    async with client_for(api) as client:
        assert (await client.get("/a")).json() == {"a": "ok"}
        assert (await client.get("/a")).status_code == 429
        assert (await client.get("/b?q=3")).json() == {"q": 3}
        refused = await client.get("/b?q=3")
    assert refused.status_code == 429
    assert refused.json()["status"] == 429
    # FastAPI still sees the real parameters (the decorator keeps the signature).
    assert "q" in api.openapi()["paths"]["/b"]["get"]["parameters"][0]["name"]


async def test_decorated_plain_async_function_keys_by_its_arguments() -> None:
    calls: list[str] = []

    @rate_limited("2/minute", key=lambda user, **_: user)
    async def fetch(user: str, *, page: int = 1) -> str:
        calls.append(user)
        return f"{user}:{page}"

    assert await fetch("ada") == "ada:1"
    assert await fetch("ada", page=2) == "ada:2"
    with pytest.raises(RateLimitExceeded) as info:
        await fetch("ada")
    assert info.value.retry_after > 0
    assert info.value.status_code == 429
    assert await fetch("bob") == "bob:1"
    assert calls == ["ada", "ada", "bob"]


def test_decorated_plain_sync_function_shares_one_constant_quota() -> None:
    @rate_limited("3/minute")
    def work(x: int) -> int:
        return x * 2

    assert [work(i) for i in range(3)] == [0, 2, 4]
    with pytest.raises(RateLimitExceeded):
        work(4)


def test_decorator_keeps_name_docs_and_signature() -> None:
    def original(a: int, b: str = "x", *, c: float = 1.0) -> str:
        """Docs."""
        return f"{a}{b}{c}"

    wrapped = rate_limited("5/second")(original)
    assert wrapped.__name__ == "original"
    assert wrapped.__doc__ == "Docs."
    assert inspect.signature(wrapped) == inspect.signature(original)
    assert wrapped(1, "y", c=2.0) == "1y2.0"


async def test_decorated_coroutine_function_stays_a_coroutine_function() -> None:
    @rate_limited("5/second")
    async def job() -> int:
        await asyncio.sleep(0)
        return 1

    assert inspect.iscoroutinefunction(job)
    assert await job() == 1


def test_decorated_sync_function_fails_open_or_closed() -> None:
    class DownBackend(MemoryBackend):
        @property
        def sync(self) -> Any:
            raise ConnectionError("down")

    @rate_limited("1/minute", limiter=RateLimiter(DownBackend()))
    def open_fn() -> str:
        return "ran"

    @rate_limited("1/minute", limiter=RateLimiter(DownBackend(), fail_open=False))
    def closed_fn() -> str:
        return "ran"

    assert [open_fn(), open_fn()] == ["ran", "ran"]
    from gennet_toolkit.exceptions import ServiceUnavailable

    with pytest.raises(ServiceUnavailable):
        closed_fn()


def test_problem_body_is_valid_json_with_no_traceback() -> None:
    from gennet_toolkit.rate_limit._headers import exceeded, problem_parts

    limiter = RateLimiter()
    rule = Rule("1/minute")
    assert limiter.check_sync(rule, "k").allowed
    decision = limiter.check_sync(rule, "k")
    payload, headers = problem_parts(exceeded(decision), scope_with(path="/x-secret"))
    body = json.loads(payload)
    assert "instance" not in body  # no route matched: the raw path is never echoed
    assert b"x-secret" not in payload
    assert "Traceback" not in payload.decode()
    assert (b"retry-after", str(body["detail"].split()[-2]).encode()) in headers


class CountingDownBackend(MemoryBackend):
    """A backend whose every rate-limit call fails, counting the attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def rate_limits(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise ConnectionError("down")


async def test_outage_backoff_stops_calling_a_failed_backend(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = CountingDownBackend()
    app = RateLimitMiddleware(
        starlette_app(), RateLimiter(down, outage_backoff=60), rules=[Rule("1/minute")]
    )
    closed_backend = CountingDownBackend()
    closed = RateLimitMiddleware(
        starlette_app(),
        RateLimiter(closed_backend, fail_open=False, outage_backoff=60),
        rules=[Rule("1/minute")],
    )
    async with client_for(app) as client, client_for(closed) as closed_client:
        assert [(await client.get("/")).status_code for _ in range(4)] == [200] * 4
        assert [(await closed_client.get("/")).status_code for _ in range(3)] == [503] * 3
    assert down.calls == 1
    assert closed_backend.calls == 1
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 2


async def test_without_backoff_every_request_tries_the_backend_again() -> None:
    down = CountingDownBackend()
    app = RateLimitMiddleware(starlette_app(), RateLimiter(down), rules=[Rule("1/minute")])
    async with client_for(app) as client:
        for _ in range(3):
            await client.get("/")
    assert down.calls == 3


def test_limiter_options_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        RateLimiter(MemoryBackend(), prefix="app:")  # the prefix belongs on the backend
    with pytest.raises(ConfigurationError):
        RateLimiter(outage_backoff=-1)
    with pytest.raises(ConfigurationError):
        RateLimiter().hit_sync("1/second;5/minute", "k")  # hit() takes one limit
    limiter = RateLimiter("memory://", prefix="app:")
    assert limiter.backend.prefix == "app:"
    limiter.close()


async def test_exempting_the_root_exempts_only_the_root() -> None:
    app = RateLimitMiddleware(starlette_app(), rules=[Rule("1/minute")], exempt_paths=["/"])
    async with client_for(app) as client:
        assert [(await client.get("/")).status_code for _ in range(2)] == [200, 200]
        assert [(await client.get("/api/x")).status_code for _ in range(2)] == [200, 429]
