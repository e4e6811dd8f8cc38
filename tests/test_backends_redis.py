"""How the backends are chosen and configured, and how the Redis one fails and recovers."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gennet_toolkit import backends
from gennet_toolkit.backends import MemoryBackend, Message, from_env, from_url
from gennet_toolkit.backends._redis_ops import SCRIPTS, script
from gennet_toolkit.backends.redis import RedisBackend
from gennet_toolkit.exceptions import ConfigurationError, ServiceUnavailable
from tests.services import RedisServer, closed_port_url

# --------------------------------------------------------------------------- choosing a backend


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert sorted(backends.__all__) == sorted(
        [
            "Backend", "Lock", "LockNotAcquired", "MemoryBackend", "Message",
            "RateLimitResult", "RedisBackend", "Subscription", "SyncBackend", "SyncLock",
            "SyncSubscription", "Value", "from_env", "from_url",
        ]
    )  # fmt: skip
    for name in backends.__all__:
        assert getattr(backends, name).__doc__


def test_memory_is_the_default() -> None:
    assert isinstance(from_url(), MemoryBackend)
    assert isinstance(from_url("memory://", prefix="p:"), MemoryBackend)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/0"])
def test_redis_schemes_build_a_redis_backend_without_connecting(url: str) -> None:
    backend = from_url(url, prefix="app:", max_connections=3)
    assert isinstance(backend, RedisBackend)
    assert backend.options.max_connections == 3


def test_unknown_scheme_is_a_configuration_error_that_hides_the_url() -> None:
    with pytest.raises(ConfigurationError, match="mongodb") as info:
        from_url("mongodb://admin:hunter2@127.0.0.1/db")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("memory://", {"max_connections": 5}),
        ("redis://127.0.0.1/0", {"queue_size": 5}),
        ("redis://127.0.0.1/0", {"max_connections": 0}),
        ("redis://127.0.0.1/0", {"pool_timeout": 0}),
        ("redis://127.0.0.1/0", {"clock": lambda: 0.0}),
    ],
)
def test_bad_options_are_configuration_errors(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        from_url(url, **options)


def test_from_env_reads_url_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_BACKEND_URL", "redis://127.0.0.1:6379/2")
    monkeypatch.setenv("APP_BACKEND_PREFIX", "svc:")
    backend = from_env("APP_")
    assert isinstance(backend, RedisBackend)
    assert backend.prefix == "svc:"
    assert isinstance(from_env("NOTSET_"), MemoryBackend)


def test_from_env_sizes_the_redis_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_BACKEND_URL", "redis://127.0.0.1:6379/2")
    monkeypatch.setenv("APP_BACKEND_MAX_CONNECTIONS", "7")
    monkeypatch.setenv("APP_BACKEND_POOL_TIMEOUT", "0.5")
    monkeypatch.setenv("APP_BACKEND_RETRIES", "1")
    backend = from_env("APP_")
    assert isinstance(backend, RedisBackend)
    assert (backend.options.max_connections, backend.options.pool_timeout) == (7, 0.5)
    assert backend.options.retries == 1
    assert backend.options.socket_timeout == 5.0  # unset: the default
    explicit = from_env("APP_", max_connections=3)
    assert isinstance(explicit, RedisBackend)
    assert explicit.options.max_connections == 3  # an explicit option wins
    monkeypatch.setenv("APP_BACKEND_MAX_CONNECTIONS", "lots")
    with pytest.raises(ConfigurationError, match="APP_BACKEND_MAX_CONNECTIONS"):
        from_env("APP_")
    monkeypatch.setenv("APP_BACKEND_URL", "memory://")
    assert isinstance(from_env("APP_"), MemoryBackend)  # pool variables are Redis-only


def test_repr_never_shows_the_password() -> None:
    assert "s3cret" not in repr(RedisBackend("redis://:s3cret@127.0.0.1:6379/0"))


def test_importing_backends_does_not_import_redis() -> None:
    code = (
        "import sys, gennet_toolkit.backends, gennet_toolkit.backends.redis;"
        "assert 'redis' not in sys.modules, 'redis imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_redis_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "redis" or n.startswith("redis.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r'pip install "gennet-toolkit\[redis\]"'):
        from_url("redis://127.0.0.1:6379/0")
    assert isinstance(from_url("memory://"), MemoryBackend)


def test_lua_scripts_ship_as_package_files_and_load_on_first_use() -> None:
    folder = importlib.resources.files("gennet_toolkit.backends") / "lua"
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".lua")) == sorted(
        f"{name}.lua" for name in SCRIPTS
    )
    script.cache_clear()
    RedisBackend("redis://127.0.0.1:6379/0")
    assert script.cache_info().currsize == 0  # nothing read at import or construction
    source, sha = script("gcra")
    assert "redis.call('TIME')" in source
    assert len(sha) == 40


# --------------------------------------------------------------------------- Redis down


@pytest.mark.anyio
async def test_unreachable_redis_raises_service_unavailable_chained() -> None:
    import redis

    url = closed_port_url()
    port = url.rsplit(":", 1)[1].split("/")[0]
    backend = RedisBackend(url, socket_connect_timeout=0.5)
    calls = [
        backend.ping(),
        backend.get("k"),
        backend.incr("k", ttl=5),
        backend.gcra("k", 5, 1),
        backend.subscribe("ch"),
        backend.delete_prefix("x"),
        backend.lock("job", ttl=5).acquire(),
    ]
    for call in calls:
        with pytest.raises(ServiceUnavailable) as info:
            await call
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        assert info.value.status_code == 503
        assert "127.0.0.1" not in info.value.detail
        assert port not in info.value.detail
    sync_calls = [
        backend.sync.ping,
        lambda: backend.sync.set("k", "v"),
        lambda: backend.sync.sliding_window("k", 5, 1),
        lambda: backend.sync.subscribe("ch"),
        lambda: backend.sync.delete_prefix("x"),
    ]
    for sync_call in sync_calls:
        with pytest.raises(ServiceUnavailable) as info:
            sync_call()
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    await backend.aclose()


@pytest.mark.anyio
@pytest.mark.redis
async def test_exhausted_pool_waits_a_bounded_time_then_is_unavailable(redis_url: str) -> None:
    backend = RedisBackend(redis_url, max_connections=1, pool_timeout=0.1)
    holder = await backend.subscribe("ch")  # takes the only connection
    try:
        with pytest.raises(ServiceUnavailable):
            await backend.get("k")
    finally:
        await holder.aclose()
    assert await backend.get("k") is None  # the connection came back to the pool
    await backend.aclose()


@pytest.mark.redis
def test_sync_exhausted_pool_waits_a_bounded_time_then_is_unavailable(redis_url: str) -> None:
    import redis

    backend = RedisBackend(redis_url, max_connections=1, pool_timeout=0.1)
    holder = backend.sync.subscribe("ch")  # takes the only connection
    try:
        with pytest.raises(ServiceUnavailable) as info:
            backend.sync.get("k")
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    finally:
        holder.close()
    assert backend.sync.get("k") is None  # the connection came back to the pool
    backend.close()


@pytest.mark.redis
def test_sync_pool_smaller_than_the_thread_burst_serves_everyone(
    redis_url: str, redis_prefix: str
) -> None:
    backend = RedisBackend(redis_url, prefix=redis_prefix, max_connections=2)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: backend.sync.incr("n"), range(200)))
    assert backend.sync.get("n") == b"200"
    backend.close()


# --------------------------------------------------------------------------- Redis restarted


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.parametrize("retries", [0, 1])
async def test_backend_recovers_after_redis_restart(
    redis_server: RedisServer, retries: int
) -> None:
    backend = RedisBackend(redis_server.url, retries=retries)
    await backend.set("k", "v")
    assert (await backend.gcra("g", 5, 10)).allowed
    assert backend.sync.fixed_window("f", 5, 10).allowed
    sub, sync_sub = await backend.subscribe("ch"), backend.sync.subscribe("ch")

    redis_server.stop()
    with pytest.raises(ServiceUnavailable):
        await backend.get("k")
    with pytest.raises(ServiceUnavailable):
        await backend.gcra("g", 5, 10)
    with pytest.raises(ServiceUnavailable):
        backend.sync.fixed_window("f", 5, 10)
    with pytest.raises(ServiceUnavailable):
        await sub.get(timeout=0.5)
    with pytest.raises(ServiceUnavailable):
        sync_sub.get(timeout=0.5)

    redis_server.start()  # same port, empty dataset, no scripts, no subscriptions
    assert await backend.get("k") is None
    assert (await backend.gcra("g", 5, 10)).remaining == 4  # script registered again
    assert backend.sync.fixed_window("f", 5, 10).remaining == 4
    # The old subscriptions reconnect and subscribe again on their next read.
    assert await sub.get(timeout=0.2) is None
    assert sync_sub.get(timeout=0.2) is None
    assert await backend.publish("ch", "back") == 2
    assert await sub.get(timeout=5) == Message("ch", b"back")
    assert sync_sub.get(timeout=5) == Message("ch", b"back")
    await sub.aclose()
    sync_sub.close()
    await backend.aclose()


# Each operation runs once before the restart (so the pool holds an idle connection and
# the scripts are registered), then is the very first call after it. Redis restarts
# empty, so a write applied once leaves 1 and a write applied twice would leave 2.
_FIRST_CALLS: dict[str, tuple[str, Any]] = {
    "get": ("get", lambda b: b.get("k")),
    "set": ("set", lambda b: b.set("k", "v")),
    "incr": ("incr", lambda b: b.incr("n")),
    "incr with ttl (Lua)": ("incr", lambda b: b.incr("n", ttl=60)),
    "gcra (Lua, NOSCRIPT)": ("gcra", lambda b: b.gcra("g", 5, 10)),
}


async def _result(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["async", "sync"])
@pytest.mark.parametrize("op", list(_FIRST_CALLS))
async def test_first_call_after_redis_restart_succeeds_and_writes_once(
    redis_server: RedisServer, form: str, op: str
) -> None:
    backend = RedisBackend(redis_server.url)
    target: Any = backend if form == "async" else backend.sync
    kind, call = _FIRST_CALLS[op]
    await _result(call(target))

    # No await between the kill and the call: the event loop never saw the FIN, so
    # only a kernel-level check of the pooled socket can notice it.
    redis_server.restart()
    result = await _result(call(target))

    if kind == "get":
        assert result is None  # the dataset is gone
    elif kind == "set":
        assert result is True
        assert await _result(target.get("k")) == b"v"
    elif kind == "incr":
        assert result == 1
        assert await _result(target.get("n")) == b"1"
    else:
        assert result.allowed  # script registered again
        assert result.remaining == 4
    await backend.aclose()


@pytest.mark.anyio
async def test_first_subscription_read_after_redis_restart_resubscribes(
    redis_server: RedisServer,
) -> None:
    backend = RedisBackend(redis_server.url)
    sub, sync_sub = await backend.subscribe("ch"), backend.sync.subscribe("ch")
    await backend.ping()

    redis_server.restart()
    # The first read meets the dead connection, connects again and resubscribes.
    assert await sub.get(timeout=0.2) is None
    assert sync_sub.get(timeout=0.2) is None
    assert await backend.publish("ch", "after") == 2  # both subscribed again
    assert await sub.get(timeout=5) == Message("ch", b"after")
    assert sync_sub.get(timeout=5) == Message("ch", b"after")
    await sub.aclose()
    sync_sub.close()
    await backend.aclose()


class _ReplyCutter:
    """A loopback TCP proxy to Redis that, once armed, lets the next command reach Redis
    and run, then closes the client's connection instead of relaying the reply."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self.armed = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self._port))
                self._sockets += [client, upstream]
                threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=self._reply, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)

    def _reply(self, upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if self.armed.is_set():  # Redis has run the command: lose its reply
                    self.armed.clear()
                    client.shutdown(socket.SHUT_RDWR)
                    return
                client.sendall(data)

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["async", "sync"])
@pytest.mark.parametrize("ttl", [None, 60.0], ids=["INCRBY", "Lua"])
async def test_a_write_whose_reply_is_lost_is_never_sent_again(
    redis_server: RedisServer, form: str, ttl: float | None
) -> None:
    proxy = _ReplyCutter(redis_server.port)
    backend = RedisBackend(proxy.url)
    target: Any = backend if form == "async" else backend.sync
    try:
        assert await _result(target.incr("n", ttl=ttl)) == 1
        proxy.armed.set()
        with pytest.raises(ServiceUnavailable):
            await _result(target.incr("n", ttl=ttl))
        # Redis ran it once; a re-send on a fresh connection would have made it 3.
        assert await _result(target.get("n")) == b"2"
    finally:
        await backend.aclose()
        proxy.close()


@pytest.mark.anyio
@pytest.mark.slow
async def test_scripts_are_registered_once_per_client(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url)
    for _ in range(20):
        await backend.gcra("g", 100, 10)
        backend.sync.gcra("g", 100, 10)
    stats = await backend.client().info("commandstats")
    # One SCRIPT LOAD per client (async and sync), then EVALSHA only.
    assert stats["cmdstat_script|load"]["calls"] == 2
    assert stats["cmdstat_evalsha"]["calls"] == 40
    assert "cmdstat_eval" not in stats
    await backend.aclose()


@pytest.mark.anyio
async def test_backend_started_while_redis_is_down_works_once_it_is_up(
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    backend = RedisBackend(redis_server.url, socket_connect_timeout=0.5)
    with pytest.raises(ServiceUnavailable):
        await backend.incr("n", ttl=60)
    with pytest.raises(ServiceUnavailable):
        backend.sync.sliding_window("w", 5, 60)
    redis_server.start()
    assert await backend.incr("n", ttl=60) == 1
    assert backend.sync.sliding_window("w", 5, 60).remaining == 4
    await backend.aclose()


@pytest.mark.anyio
async def test_delete_prefix_scans_and_never_sends_keys_or_flush(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, prefix="app:")
    await backend.set_many({f"c:{i}": "v" for i in range(50)})
    assert await backend.delete_prefix("c:") == 50
    backend.sync.set_many({f"c:{i}": "v" for i in range(50)})
    assert backend.sync.delete_prefix("c:") == 50
    stats = await backend.client().info("commandstats")
    assert stats["cmdstat_scan"]["calls"] >= 2
    assert not {"cmdstat_keys", "cmdstat_flushdb", "cmdstat_flushall"} & set(stats)
    await backend.aclose()


@pytest.mark.redis
def test_one_backend_serves_several_event_loops(redis_url: str, redis_prefix: str) -> None:
    backend = RedisBackend(redis_url, prefix=redis_prefix)

    async def use() -> int:
        try:
            return await backend.incr("n")
        finally:
            await backend.aclose()

    assert [asyncio.run(use()), asyncio.run(use())] == [1, 2]
    assert backend.sync.incr("n") == 3
    backend.close()


@pytest.mark.redis
# Starlette 1.x nudges TestClient users towards httpx2; the portal is what this test is about.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`:UserWarning")
def test_starlette_app_shares_one_backend_across_test_client_portals(
    redis_url: str, redis_prefix: str
) -> None:
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    backend = RedisBackend(redis_url, prefix=redis_prefix)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await backend.aclose()  # each portal's loop closes its own pool

    async def hits(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(await backend.incr("hits")))

    def sync_hits(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(backend.sync.incr("hits")))  # runs in a worker thread

    app = Starlette(
        routes=[Route("/hits", hits), Route("/sync-hits", sync_hits)], lifespan=lifespan
    )
    for expected in (["1", "2"], ["3", "4"]):  # two portals: two event loops
        with TestClient(app) as client:
            assert [client.get("/hits").text, client.get("/sync-hits").text] == expected
    backend.close()
