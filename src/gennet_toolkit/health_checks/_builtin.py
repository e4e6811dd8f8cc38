"""Built-in checks for Redis, SQLAlchemy engines and HTTP upstreams (lazy imports)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from gennet_toolkit._optional import require
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.health_checks._registry import Check, CheckResult
from gennet_toolkit.health_checks._util import seconds

__all__ = ["http_check", "redis_check", "sqlalchemy_check"]

_FEATURE = "gennet_toolkit.health_checks"


# --------------------------------------------------------------------------- Redis


class _RedisUrlCheck:
    """PING over a fresh connection per run (clients are bound to one event loop)."""

    component_type = "datastore"

    def __init__(self, url: str, socket_timeout: float) -> None:
        self._url = url
        self._timeout = socket_timeout

    def __repr__(self) -> str:
        return "redis_check(<url>)"  # the URL may carry a password

    async def __call__(self) -> None:
        aredis = require("redis.asyncio", extra="redis", feature=_FEATURE)
        retry_mod = require("redis.asyncio.retry", extra="redis", feature=_FEATURE)
        backoff = require("redis.backoff", extra="redis", feature=_FEATURE)
        client = aredis.Redis.from_url(
            self._url,
            socket_connect_timeout=self._timeout,
            socket_timeout=self._timeout,
            # redis-py retries three times with backoff by default: a probe must fail fast.
            retry=retry_mod.Retry(backoff.NoBackoff(), 0),
            single_connection_client=True,
        )
        try:
            await client.ping()
        finally:
            await client.aclose()


class _AsyncRedisClientCheck:
    component_type = "datastore"

    def __init__(self, client: Any) -> None:
        self._client = client

    async def __call__(self) -> None:
        await self._client.ping()


class _SyncRedisClientCheck:
    component_type = "datastore"

    def __init__(self, client: Any) -> None:
        self._client = client

    def __call__(self) -> None:  # runs in a thread: the registry sees a sync callable
        self._client.ping()


def redis_check(target: Any, *, socket_timeout: float = 2.0) -> Check:
    """A check that PINGs Redis: ``redis_check("redis://127.0.0.1:6379/0")``.

    ``target`` is a ``redis://``, ``rediss://`` or ``unix://`` URL (a short-lived
    connection per run, no retries) or an existing ``redis.asyncio.Redis`` /
    ``redis.Redis`` client (its pool is reused; sync clients run in a thread).
    Needs the ``redis`` extra.
    """
    aredis = require("redis.asyncio", extra="redis", feature=_FEATURE)
    timeout = seconds(socket_timeout, "socket_timeout")
    if isinstance(target, str):
        if urlsplit(target).scheme not in {"redis", "rediss", "unix"}:
            raise ConfigurationError("redis_check needs a redis://, rediss:// or unix:// URL")
        return _RedisUrlCheck(target, timeout)
    async_types = tuple(
        t for t in (getattr(aredis, "Redis", None), getattr(aredis, "RedisCluster", None)) if t
    )
    if isinstance(target, async_types):
        return _AsyncRedisClientCheck(target)
    if callable(getattr(target, "ping", None)):
        return _SyncRedisClientCheck(target)
    raise ConfigurationError("redis_check needs a Redis URL or a redis client")


# --------------------------------------------------------------------------- SQLAlchemy


class _AsyncEngineCheck:
    component_type = "datastore"

    def __init__(self, engine: Any, statement: Any) -> None:
        self._engine = engine
        self._statement = statement

    async def __call__(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(self._statement)


class _SyncEngineCheck:
    component_type = "datastore"

    def __init__(self, engine: Any, statement: Any) -> None:
        self._engine = engine
        self._statement = statement

    def __call__(self) -> None:  # runs in a thread
        with self._engine.connect() as conn:
            conn.execute(self._statement)


def sqlalchemy_check(engine: Any, *, query: str = "SELECT 1") -> Check:
    """A check that runs ``query`` on a connection from ``engine``.

    Works with a sync ``Engine`` (run in a thread) or an ``AsyncEngine``; the engine's
    pool is reused. Set a connect timeout on the engine (``connect_args``) so a
    blackholed database frees its connection attempt, too. Needs the ``sql`` extra.
    """
    sa = require("sqlalchemy", extra="sql", feature=_FEATURE)
    statement = sa.text(query)
    if isinstance(engine, sa.engine.Engine):
        return _SyncEngineCheck(engine, statement)
    # An AsyncEngine exists only once its module is imported; importing it here would
    # demand greenlet from users of sync engines.
    sa_async = sys.modules.get("sqlalchemy.ext.asyncio")
    if sa_async is not None and isinstance(engine, sa_async.AsyncEngine):
        return _AsyncEngineCheck(engine, statement)
    raise ConfigurationError("sqlalchemy_check needs a SQLAlchemy Engine or AsyncEngine")


# --------------------------------------------------------------------------- HTTP


class _HttpCheck:
    component_type = "component"

    def __init__(
        self,
        url: str,
        *,
        method: str,
        expected: frozenset[int],
        headers: Mapping[str, str],
        timeout: float,
        client: Any,
    ) -> None:
        self._url = url
        self._method = method
        self._expected = expected
        self._headers = dict(headers)
        self._timeout = timeout
        self._client = client

    def __repr__(self) -> str:
        return f"http_check(<url>, method={self._method!r})"

    async def __call__(self) -> CheckResult | None:
        httpx = require("httpx", extra="http", feature=_FEATURE)
        if self._client is not None:
            status = await self._status(self._client)
        else:
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
                status = await self._status(client)
        if status in self._expected:
            return None
        return CheckResult(status="fail", output=f"unexpected status {status}")

    async def _status(self, client: Any) -> int:
        # Stream and close: a health check never downloads the body.
        async with client.stream(self._method, self._url, headers=self._headers) as response:
            return int(response.status_code)


def http_check(
    url: str,
    *,
    expected_status: int | Iterable[int] = range(200, 400),
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = 2.0,
    client: Any = None,
) -> Check:
    """A check that calls an HTTP upstream and expects one of ``expected_status``.

    ``http_check("http://127.0.0.1:8081/health", expected_status=200)``; by default
    any 2xx or 3xx passes (redirects are not followed, the body is not read). Pass an
    ``httpx.AsyncClient`` as ``client`` to reuse its pool and settings. Needs the
    ``http`` extra.
    """
    require("httpx", extra="http", feature=_FEATURE)
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigurationError("http_check needs an absolute http:// or https:// URL")
    if isinstance(expected_status, int):
        expected = frozenset({expected_status})
    else:
        expected = frozenset(int(s) for s in expected_status)
    if not expected or not all(100 <= s <= 599 for s in expected):
        raise ConfigurationError("expected_status must be HTTP status codes (100-599)")
    if not method.isalpha():
        raise ConfigurationError("method must be an HTTP method name")
    return _HttpCheck(
        url,
        method=method.upper(),
        expected=expected,
        headers=headers or {},
        timeout=seconds(timeout, "timeout"),
        client=client,
    )
